"""The trained classifier as the sample metrics' feature extractor: building it from its config, loading the
train_classifier stage's checkpoint, and batched prediction. Apart from its training (genlab.classifier_training),
so that the stages that only read the classifier do not depend on how it is trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genlab.checkpoints import CheckpointError, load_checkpoint
from genlab.models.classifier import Classifier


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def build_classifier(cfg: dict[str, Any], num_classes: int = 10) -> Classifier:
    return Classifier(channels=tuple(cfg["channels"]), feature_dim=cfg["feature_dim"], num_classes=num_classes)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The feature extractor from the train_classifier stage, in eval mode, and its record (test accuracy and
    weights hash: metrics in its feature space only compare between runs with the same hash)."""
    state = load_checkpoint(path, device)
    if state.get("kind") != "classifier":
        raise CheckpointError(f"{path} holds a {state.get('kind')!r} checkpoint, not the classifier")
    model = build_classifier(state["config"]["classifier"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, {"test_accuracy": state["test_accuracy"], "weights_sha256": state["weights_sha256"]}
