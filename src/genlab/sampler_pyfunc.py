"""The MLflow model of every genlab sampler, as MLflow's "models from code": Tracker.log_sampler passes this file's
path, MLflow copies it into the model and runs it to load the model. genlab itself never imports it. It needs
torch, numpy, pandas and mlflow, not genlab: the network is a torch.export program stored beside it.

Input: a table, one image per row: `seed` (optional, default 0: the row's noise) and, for a conditional model,
`label` (the digit, 0-9). Output: images [N, 1, 28, 28], float32 in [0, 1]. Artifacts: sampler (the program)
and config (latent_dim, conditional).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import torch


class SeededSampler(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    def load_context(self, context: Any) -> None:
        config = json.loads(Path(context.artifacts["config"]).read_text())
        self.latent_dim, self.conditional = int(config["latent_dim"]), bool(config["conditional"])
        self.sampler = torch.export.load(context.artifacts["sampler"]).module()

    def predict(self, context: Any, model_input: Any, params: Any = None) -> np.ndarray:
        n = len(model_input)
        seeds = model_input["seed"].to_numpy() if "seed" in model_input.columns else np.zeros(n, int)
        # One noise vector per row, from the row's seed: an image does not depend on the other rows.
        latent = torch.empty(n, self.latent_dim)
        for i, seed in enumerate(seeds):
            latent[i] = torch.randn(self.latent_dim, generator=torch.Generator().manual_seed(int(seed)))
        inputs: tuple[Any, ...] = (latent,)
        if self.conditional:
            if "label" not in model_input.columns:
                raise ValueError("this model draws the digit you ask for: give a 'label' column (0-9)")
            labels = torch.tensor(model_input["label"].to_numpy(), dtype=torch.long)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
                raise ValueError("label must lie in 0..9")
            inputs = (latent, labels)
        with torch.no_grad():
            return self.sampler(*inputs).numpy()


mlflow.models.set_model(SeededSampler())
