"""Compare runs side by side: a Markdown and an HTML report from the MLflow runs (mlflow.search_runs).

    python scripts/compare.py                       # every evaluated run in the repo's mlflow.db, newest first
    python scripts/compare.py --runs ID ID ...      # these runs, in this order
    python scripts/compare.py --max 4 --out reports/compare

Writes <out>/report.md (images beside it in <out>/images/) and <out>/report.html (one self-contained file).
The tracking store is the repo's own (or GENLAB_TRACKING_URI / GENLAB_EXPERIMENT, like the stages).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import genlab  # noqa: E402, F401  first: sets OpenMP's wait policy before torch loads

# isort: split

from genlab.config import Runtime  # noqa: E402
from genlab.io import atomic_write_text  # noqa: E402
from genlab.report import build_report  # noqa: E402
from genlab.tracking import TAG_CHECKPOINT, Tracker  # noqa: E402


def select_runs(frame, run_ids: list[str] | None, limit: int):
    if run_ids:
        missing = [r for r in run_ids if r not in set(frame["run_id"])]
        if missing:
            raise SystemExit(f"compare: no run {missing} in this experiment; `mlflow ui` lists the run ids")
        return frame.set_index("run_id").loc[run_ids].reset_index()
    if "metrics.eval/fid" not in frame.columns:
        raise SystemExit("compare: no evaluated runs yet; run the pipeline first (dvc repro)")
    evaluated = frame[(frame["status"] == "FINISHED") & frame["metrics.eval/fid"].notna()]
    # One row per trained checkpoint (the newest), so re-evaluating a model does not list it twice.
    evaluated = evaluated.drop_duplicates(subset=[f"tags.{TAG_CHECKPOINT}"], keep="first")
    return evaluated.head(limit).reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", help="run ids to compare (default: every evaluated run)")
    parser.add_argument("--max", type=int, default=6, help="at most this many runs by default (newest first)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "compare")
    args = parser.parse_args(argv)

    runtime = Runtime()
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    runs = select_runs(tracker.runs_frame(), args.runs, args.max)
    images = args.out / "images"
    grids = {}
    for run_id in runs["run_id"]:
        epochs = [p for p in tracker.artifact_paths(run_id, "figures") if "epoch_" in p.rsplit("/", 1)[-1]]
        if epochs:  # the last rendered epoch's grid
            path = tracker.download_artifact(run_id, epochs[-1], images / run_id[:8])
            grids[run_id] = path.rename(images / f"{run_id[:8]}_{path.name}")
            path.parent.rmdir()
    report = build_report(runs, grids, image_dir="images")
    atomic_write_text(args.out / "report.md", report.markdown + "\n")
    atomic_write_text(args.out / "report.html", report.html)
    print(report.markdown)
    print(f"\ncompare: wrote {args.out / 'report.md'} and {args.out / 'report.html'} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
