"""What training prints. It never shapes an output, so no stage depends on it (tests/test_dvc_deps.py): an edit
here reruns nothing."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def epoch_line(kind: str, epoch: int, epochs: int, metrics: dict[str, float], seconds: float, eta: float) -> str:
    """One line per epoch: the metrics (without the epoch itself), the epoch's time and the estimated time left."""
    shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "epoch")
    return f"[{kind}] epoch {epoch}/{epochs}  {shown}  | {seconds:.1f}s  eta {format_duration(eta)}"
