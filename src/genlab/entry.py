"""What every pipeline script does around its main(): one line instead of a traceback for a failure the user can
act on (genlab.errors.GenlabError), a SIGTERM handled like Ctrl-C so the MLflow run is marked KILLED rather than
left RUNNING, and, under DVC, how to get back the outputs `dvc repro` removed before the stage ran."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from genlab.errors import GenlabError

# Exit status of a process stopped by a signal, as a shell reports it: 128 + the signal's number.
EXIT_INTERRUPTED = 128 + signal.SIGINT


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def restore_hint() -> str:
    """Under `dvc repro`/`dvc exp run` (DVC_STAGE is set), how to get the stage's previous outputs back."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return ""
    return (
        f"\n  DVC removed {stage}'s previous outputs, if it had any, before it ran; `dvc checkout {stage}` restores"
        " them from the cache (see README, When a stage fails)."
    )


def run_stage(stage: str, main: Callable[..., None], *args: str) -> None:
    """Run a stage's main(*args); exit 1 with `genlab <stage>: <message>` on a GenlabError, 130 on SIGINT/SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main(*args)
    except GenlabError as e:
        sys.exit(f"genlab {stage}: {e}{restore_hint()}")
    except KeyboardInterrupt:
        print(f"genlab {stage}: interrupted{restore_hint()}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
