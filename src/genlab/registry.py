"""Model kinds, found by name: every package under genlab/models with a config.py is a kind.

A kind's package holds config.py (`CONFIG`, its params section's class), model.py (`MODEL`, a
genlab.models.base.GenerativeModel) and trainer.py (`TRAINER`, a genlab.trainer.Trainer). Each is imported only
when asked for, so a stage imports its own model's code and no other's (its DVC deps say the same).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genlab.config import ModelSection
    from genlab.models.base import GenerativeModel
    from genlab.trainer import Trainer

MODELS_DIR = Path(__file__).parent / "models"


def kinds() -> list[str]:
    """The registered kinds: packages under genlab/models that have a config.py."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(MODELS_DIR)])
        if m.ispkg and (MODELS_DIR / m.name / "config.py").exists()
    )


def _module(kind: str, part: str) -> ModuleType:
    if kind not in kinds():
        raise ValueError(f"unknown model kind {kind!r}; registered kinds: {kinds()} (packages under {MODELS_DIR})")
    return importlib.import_module(f"genlab.models.{kind}.{part}")


def config_class(kind: str) -> type[ModelSection]:
    return _module(kind, "config").CONFIG


def model_class(kind: str) -> type[GenerativeModel]:
    return _module(kind, "model").MODEL


def trainer_class(kind: str) -> type[Trainer]:
    return _module(kind, "trainer").TRAINER


def load_model(path: str | Path, device: Any = "cpu") -> tuple[GenerativeModel, dict[str, Any]]:
    """A trained model from its checkpoint (which names its kind and holds its config), in eval mode; and the
    checkpoint itself."""
    from genlab.checkpoints import CheckpointError, load_checkpoint

    state = load_checkpoint(path, device)
    kind, name = state.get("kind"), state.get("name", state.get("kind"))
    if kind not in kinds():
        raise CheckpointError(f"{path} holds a {kind!r} checkpoint, not one of the model kinds {kinds()}")
    # The section was validated when the checkpoint was written; its record is what training used.
    cfg = config_class(kind).model_construct(**state["config"][name])
    model = model_class(kind).from_config(cfg).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state
