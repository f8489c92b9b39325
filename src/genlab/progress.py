"""What training and evaluation print. It never shapes an output, so no stage depends on it (tests/test_dvc_deps.py):
an edit here reruns nothing.

A tqdm bar inside each epoch and each evaluation step, on a terminal only (stderr a TTY): CI logs and `dvc exp run
--queue` logs get the one-line summaries, not bar redraws. Everything else goes to MLflow.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

LINE_WIDTH = 120
T = TypeVar("T")


def bars_enabled() -> bool:
    return sys.stderr.isatty()


def progress(items: Iterable[T], *, total: int | None, desc: str, unit: str = "batch") -> Iterator[T]:
    """`items` with a transient bar (erased when done) on a terminal; `items` as they are elsewhere."""
    if not bars_enabled():
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def summary_line(head: str, metrics: dict[str, Any], tail: str = "") -> str:
    """`head`, as many numeric metrics as fit in LINE_WIDTH characters (in the order given), then `tail`."""
    shown: list[str] = []
    width = len(head) + (len(tail) + 2 if tail else 0)
    for k, v in metrics.items():
        if not isinstance(v, int | float):
            continue
        item = f"{k} {v:.4g}"
        if width + sum(len(s) + 2 for s in shown) + len(item) + 2 > LINE_WIDTH:
            break
        shown.append(item)
    return "  ".join([head, *shown, *([tail] if tail else [])])


def epoch_line(name: str, epoch: int, epochs: int, metrics: dict[str, float], seconds: float, eta: float) -> str:
    """One line per epoch: the epoch, as many metrics as fit (in the trainer's order, which puts the losses
    first), the epoch's time and the estimated time left. The rest is in MLflow and the history CSV."""
    shown = {k: v for k, v in metrics.items() if k != "epoch"}
    return summary_line(f"[{name}] {epoch}/{epochs}", shown, f"| {seconds:.1f}s eta {format_duration(eta)}")
