"""Screenshot of the MLflow UI's compare view of two runs, taken in headless Chromium (Debian's `chromium`).

    python scripts/mlflow_screenshot.py                        # the two newest evaluated GAN runs
    python scripts/mlflow_screenshot.py --runs ID ID --out docs/mlflow_compare.png

It starts the real `mlflow server` on a free loopback port against the repo's mlflow.db (read only in effect:
it serves the UI), opens /#/compare-runs?runs=[...] in headless Chromium, saves the PNG and stops the server.
Install the browser with `apt-get install chromium`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from genlab.config import load_runtime  # noqa: E402
from genlab.tracking import TAG_MODEL, Tracker, mlflow_server  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # running as root in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",  # no update checks or other calls out of the machine
    "--disable-extensions",
    "--hide-scrollbars",
    "--no-first-run",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs=2, metavar="RUN_ID", help="default: the two newest evaluated GAN runs")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "mlflow_compare.png")
    parser.add_argument("--size", default="1600,1400", help="browser window, width,height in pixels")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time for the page to load its data")
    args = parser.parse_args(argv)

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("mlflow_screenshot: no chromium on PATH; install it with `apt-get install chromium`")
    runtime = load_runtime()
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    if args.runs:
        run_ids = args.runs
    else:
        frame = tracker.runs_frame(f"tags.`{TAG_MODEL}` = 'gan' and attributes.status = 'FINISHED'")
        frame = frame[frame.get("metrics.eval/fid").notna()] if "metrics.eval/fid" in frame else frame.iloc[:0]
        if len(frame) < 2:
            raise SystemExit("mlflow_screenshot: fewer than two evaluated GAN runs; pass --runs ID ID")
        run_ids = list(frame["run_id"][:2])

    try:
        with mlflow_server(tracker.tracking_uri, cwd=tracker.root) as url:
            query = urllib.parse.urlencode(
                {"runs": json.dumps(run_ids), "experiments": json.dumps([tracker.experiment.experiment_id])}
            )
            page = f"{url}/#/compare-runs?{query}"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                [browser, *CHROMIUM_FLAGS, f"--window-size={args.size}", f"--virtual-time-budget={args.wait_ms}",
                 f"--screenshot={args.out.resolve()}", page],
                capture_output=True, text=True, timeout=180,
            )  # fmt: skip
    except RuntimeError as e:
        raise SystemExit(f"mlflow_screenshot: {e}") from None
    if result.returncode != 0 or not args.out.exists():
        raise SystemExit(f"mlflow_screenshot: chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")
    print(f"mlflow_screenshot: {page}\nmlflow_screenshot: wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
