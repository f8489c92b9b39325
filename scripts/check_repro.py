"""Reproducibility check: re-run the pipeline from a clean state and compare with what was recorded.

    python scripts/check_repro.py                    # the CI profile (profiles/ci), against its committed record
    python scripts/check_repro.py --workspace        # the workspace's params, against its own dvc.lock + metrics
    python scripts/check_repro.py --update           # re-record profiles/ci (after an intended change)
    python scripts/check_repro.py --tolerance 1e-4   # another GPU model: metrics within 1e-4 relative

It copies the repository (tracked and untracked, not ignored files) into a temporary directory, applies the
profile's params, runs `dvc repro --force` there with its own MLflow database, and compares every output hash
in dvc.lock and every value in the metrics files. Exit status 1, with each difference named, if any differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from genlab.config import load_params  # noqa: E402
from genlab.repro import (  # noqa: E402
    changed_deps,
    compare_metrics,
    compare_outputs,
    lock_hashes,
    parse_metrics_file,
    report,
)

METRIC_PATHS = ("classifier_summary", "gan_summary", "vae_summary", "evaluation", "gan_history", "vae_history")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def device_name() -> str:
    if os.environ.get("GENLAB_DEVICE", "cpu") != "cuda":
        return "cpu"
    import torch

    return torch.cuda.get_device_name(0)


def copy_repo(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not name.startswith("profiles/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def metrics_of(root: Path, paths: dict[str, str]) -> dict[str, dict[str, float]]:
    return {
        Path(paths[k]).name: parse_metrics_file(paths[k], (root / paths[k]).read_text())
        for k in METRIC_PATHS
        if (root / paths[k]).exists()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--profile", default="ci", help="profiles/<name>: params overrides and the record")
    mode.add_argument("--workspace", action="store_true", help="check the workspace's own dvc.lock and metrics")
    parser.add_argument("--update", action="store_true", help="record this run as the profile's reference")
    parser.add_argument("--tolerance", type=float, default=0.0, help="relative; > 0 allows differing output bytes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy for inspection")
    args = parser.parse_args(argv)

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    profile = REPO / "profiles" / args.profile
    if not args.workspace:
        if not (profile / "params.yaml").exists():
            parser.error(f"{profile}/params.yaml not found: a profile holds the params overrides it runs with")
        params = deep_merge(params, yaml.safe_load((profile / "params.yaml").read_text()) or {})
    reference = REPO if args.workspace else profile

    work = Path(tempfile.mkdtemp(prefix="genlab-repro-"))
    try:
        copy_repo(work)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        paths = load_params(work / "params.yaml").paths.model_dump()  # validates the profile before running
        git = ["git", "-c", "user.name=genlab", "-c", "user.email=genlab@localhost"]
        subprocess.run(["git", "init", "-q"], cwd=work, check=True)
        subprocess.run(["git", "add", "-A"], cwd=work, check=True)
        subprocess.run([*git, "commit", "-qm", "reproducibility check"], cwd=work, check=True)

        env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["GENLAB_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"  # leave the user's runs alone
        if env.get("GENLAB_DATA_MIRROR"):
            env["GENLAB_DATA_MIRROR"] = str((REPO / env["GENLAB_DATA_MIRROR"]).resolve())
        print(f"check_repro: dvc repro --force in {work} ({'workspace' if args.workspace else profile.name})")
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "--force"], cwd=work, env=env, check=True)
        seconds = time.perf_counter() - started
        actual_lock = yaml.safe_load((work / "dvc.lock").read_text())
        actual_metrics = metrics_of(work, paths)

        if args.update:
            if args.workspace:
                parser.error("--update records a profile; the workspace's record is its own dvc.lock")
            shutil.copy2(work / "dvc.lock", profile / "dvc.lock")
            (profile / "metrics").mkdir(exist_ok=True)
            for k in METRIC_PATHS:
                shutil.copy2(work / paths[k], profile / "metrics" / Path(paths[k]).name)
            (profile / "reference.json").write_text(json.dumps({"device": device_name()}, indent=2) + "\n")
            print(f"check_repro: recorded {profile.relative_to(REPO)} in {seconds:.0f} s")
            return 0

        expected_lock = yaml.safe_load((reference / "dvc.lock").read_text())
        expected_metrics = (
            metrics_of(REPO, paths)
            if args.workspace
            else {p.name: parse_metrics_file(p.name, p.read_text()) for p in sorted((profile / "metrics").iterdir())}
        )
        recorded_on = json.loads((profile / "reference.json").read_text())["device"] if not args.workspace else None
        here = device_name()
        if recorded_on and recorded_on != here and args.tolerance == 0:
            print(f"check_repro: the record was made on {recorded_on}, this run is on {here};"
                  " bitwise equality is not expected across devices: pass --tolerance")  # fmt: skip
        output_diffs = compare_outputs(expected_lock, actual_lock)
        metric_diffs = compare_metrics(expected_metrics, actual_metrics, args.tolerance)
        fatal = metric_diffs + (output_diffs if args.tolerance == 0 else [])
        if output_diffs and args.tolerance > 0:
            print("check_repro: outputs differ in bytes (allowed with --tolerance):\n" + report(output_diffs))
        if fatal:
            print(f"check_repro: NOT reproduced ({len(fatal)} differences, run took {seconds:.0f} s):")
            print(report(fatal, changed_deps(expected_lock, actual_lock)))
            return 1
        n_out, n_met = len(lock_hashes(expected_lock)), sum(len(v) for v in expected_metrics.values())
        how = "exactly" if args.tolerance == 0 else f"within {args.tolerance:g}"
        print(f"check_repro: reproduced: {n_out} output hashes and {n_met} metric values match {how} ({seconds:.0f} s)")
        return 0
    finally:
        if args.keep:
            print(f"check_repro: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
