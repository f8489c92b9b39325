"""Checkpoints that describe themselves: every genlab checkpoint starts with the same header (format, kind,
versions) and loads with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import genlab

CHECKPOINT_FORMAT = 1


def checkpoint_header(kind: str, name: str | None = None) -> dict[str, Any]:
    """The fields every genlab checkpoint starts with: its format, what it holds (the model's kind, and its name in
    params.yaml where that differs: a gan-kind model named cgan) and what wrote it."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        **({"name": name} if name is not None and name != kind else {}),
        "genlab_version": genlab.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run its training stage first (dvc repro)")
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')}, this genlab reads {CHECKPOINT_FORMAT}")
    return state
