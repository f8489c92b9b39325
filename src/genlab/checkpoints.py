"""Checkpoints that describe themselves: every genlab checkpoint starts with the same header (format, kind,
versions) and loads with weights_only=True."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

import genlab
from genlab.errors import GenlabError

CHECKPOINT_FORMAT = 1


class CheckpointError(GenlabError):
    """A checkpoint that is missing, unreadable, of another format or kind, or holds non-finite weights."""


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


def non_finite_count(tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(non-finite values, all values) over the floating-point tensors of a state dict."""
    floats = [t for t in tensors.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    bad = sum(int((~t.isfinite()).sum()) for t in floats)
    return bad, sum(t.numel() for t in floats)


def read_weights_only(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """torch.load(path, weights_only=True), with a CheckpointError that names the file when it is missing or not a
    readable torch file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing: run the stage that writes it first (dvc repro)")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol: the error below says what matters
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        # Not torch's text: it suggests weights_only=False, which would run whatever code the file holds.
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: corrupt, truncated or not genlab's)"
        ) from None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A genlab checkpoint, checked: it exists, unpickles with weights_only=True, has this genlab's format and finite
    weights. CheckpointError names the file otherwise."""
    state = read_weights_only(path, device)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: checkpoint format {found!r}, this genlab reads {CHECKPOINT_FORMAT}")
    if isinstance(state.get("model"), dict):
        bad, total = non_finite_count(state["model"])
        if bad:
            raise CheckpointError(
                f"{path} holds {bad:,} non-finite weights of {total:,} (training diverged); retrain it with a lower"
                " learning rate"
            )
    return state
