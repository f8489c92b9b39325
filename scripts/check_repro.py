"""Reproducibility check: re-run the pipeline from a clean state and compare with what was recorded.

    python scripts/check_repro.py                       # the CI profile (profiles/ci), against its records
    python scripts/check_repro.py --update              # add or replace the record of this machine class
    python scripts/check_repro.py --workspace           # the workspace's params, against its own dvc.lock + metrics
    python scripts/check_repro.py --fingerprint         # this machine's class and which record it would use
    python scripts/check_repro.py --save-record DIR     # two-run mode: also write this class's record to DIR
    python scripts/check_repro.py --measure-tolerances  # re-measure profiles/ci/tolerances.json (about 15 min)

A profile keeps one record per machine class (profiles/<name>/records/<class>/: fingerprint.json, dvc.lock,
metrics/). The class is what decides the bits: CPU vendor, the ISA that ATen, MKL and oneDNN actually use, the
thread count, the library versions, the GPU model (genlab.fingerprint). The check picks its mode from it:

- exact: a record of this machine class exists. One `dvc repro --force`; every output hash and metric value
  must equal the record's.
- two-run: no record matches. The profile runs twice here and the two runs must agree bit for bit (determinism on
  this machine); then every metric must lie within the tolerance measured across machine classes
  (profiles/<name>/tolerances.json) of the nearest record's value. `--update` then adds this class's record.

Each run copies the repository (tracked and untracked, not ignored files) into a temporary directory, applies the
profile's params and runs `dvc repro --force` there with its own MLflow database. Exit status 1, with each
difference named, if anything differs.
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from genlab import cpu_pins  # noqa: E402
from genlab.config import FLOOR, load_params  # noqa: E402
from genlab.fingerprint import class_differences, class_id  # noqa: E402
from genlab.repro import (  # noqa: E402
    Difference,
    Record,
    changed_deps,
    compare_metrics,
    compare_outputs,
    compare_within,
    load_records,
    lock_hashes,
    matching_record,
    measure_tolerances,
    nearest_record,
    parse_metrics_file,
    report,
    unrecorded_outputs,
)

# Machine classes this one machine can stand in for, by pinning its kernels otherwise: the runs that
# --measure-tolerances makes beside the records of other classes (pins off, portable), which are such runs too.
# Each runs other kernels than the default class (scripts/cpu_bits.py); MKL at AVX-512 is not among them because
# it gave the default class's bits on the CI profile.
TOLERANCE_VARIANTS: dict[str, dict[str, str]] = {
    "1 thread": {"GENLAB_THREADS": "1"},
    "ATen at AVX-512, MKL and oneDNN at AVX2": {"ATEN_CPU_CAPABILITY": "avx512"},
    "ATen scalar, as on a CPU without AVX2": {"ATEN_CPU_CAPABILITY": "default"},
    "oneDNN at AVX-512, ATen and MKL at AVX2": {"ONEDNN_MAX_CPU_ISA": "ALL"},
}
TOLERANCE_FACTOR = 3.0


@dataclass
class Run:
    lock: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    seconds: float
    work: Path


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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


def metric_files(params_path: Path) -> list[Path]:
    """The metrics and plots files a run writes: the classifier's, each model's training history, summary,
    evaluation and identity over training, and the floor's evaluation."""
    params = load_params(params_path)
    paths = params.paths
    files = [Path(paths.classifier_summary), paths.evaluation(FLOOR)]
    for name in params.models:
        files += [paths.summary(name), paths.history(name), paths.evaluation(name)]
        files += [paths.identity_summary(name), paths.identity_history(name)]
    return files


def metrics_of(root: Path, files: list[Path]) -> dict[str, dict[str, float]]:
    return {f.name: parse_metrics_file(str(f), (root / f).read_text()) for f in files if (root / f).exists()}


def stage_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the stages (and the fingerprint) get: the user's, minus DVC's and minus the CPU pins that
    genlab set in this process (each stage sets its own, by its GENLAB_CPU_PINS), plus the overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_") and k not in cpu_pins.APPLIED}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO / "src")
    if env.get("GENLAB_DATA_MIRROR"):
        env["GENLAB_DATA_MIRROR"] = str((REPO / env["GENLAB_DATA_MIRROR"]).resolve())
    env.update(overrides or {})
    return env


def machine_fingerprint(env: dict[str, str]) -> dict[str, Any]:
    """In a fresh process with the stages' environment: the pins are read when torch loads."""
    done = subprocess.run(
        [sys.executable, "-m", "genlab.fingerprint"], env=env, cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"check_repro: could not fingerprint this machine:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def describe(fp: dict[str, Any]) -> str:
    where = (
        fp["device"]
        if fp["device"] != "cpu"
        else f"{fp['cpu_vendor']} {fp['cpu_model']} (family/model {fp['cpu_family_model']}, has {fp['cpu_isa']})"
    )
    return (
        f"{class_id(fp)}: {where}; kernels: ATen {fp['aten_capability']}, MKL {fp['mkl_isa']}, oneDNN"
        f" '{fp['onednn_isa']}'; threads: {fp['threads']}; torch {fp['torch']}, MKL {fp['mkl']}, oneDNN {fp['onednn']}"
    )


def run_profile(params: dict[str, Any], env: dict[str, str], label: str) -> Run:
    work = Path(tempfile.mkdtemp(prefix="genlab-repro-"))
    copy_repo(work)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    files = metric_files(work / "params.yaml")  # validates the profile before running
    git = ["git", "-c", "user.name=genlab", "-c", "user.email=genlab@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "reproducibility check"], cwd=work, check=True)
    env = {**env, "GENLAB_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}  # leave the user's runs alone
    print(f"check_repro: {label}: dvc repro --force in {work}", flush=True)
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "--force"], cwd=work, env=env, check=True)
    return Run(
        yaml.safe_load((work / "dvc.lock").read_text()), metrics_of(work, files), time.perf_counter() - started, work
    )


def write_record(records_dir: Path, fp: dict[str, Any], run: Run) -> Path:
    """Add or replace the record of this machine class under records_dir; other classes' records stay."""
    dest = records_dir / class_id(fp)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "metrics").mkdir(parents=True)
    shutil.copy2(run.work / "dvc.lock", dest / "dvc.lock")
    for f in metric_files(run.work / "params.yaml"):
        shutil.copy2(run.work / f, dest / "metrics" / f.name)
    (dest / "fingerprint.json").write_text(json.dumps(fp, indent=2) + "\n")
    return dest


def bit_differences(expected: Record | Run, actual: Run) -> list[Difference]:
    """Every output hash and every metric value that is not exactly the same."""
    return compare_outputs(expected.lock, actual.lock) + compare_metrics(expected.metrics, actual.metrics, 0.0)


def code_changes(record: Record, run: Run) -> str:
    deps = changed_deps(record.lock, run.lock)
    return "code or data changed since the record was made: " + ", ".join(deps) if deps else ""


def check_exact(record: Record, run: Run) -> int:
    # Against a record, every output and metric it holds must match; outputs of stages added after it was made are
    # named, not failed: a record made on another machine class can only be re-made there.
    fatal = compare_outputs(record.lock, run.lock, recorded_only=True)
    fatal += compare_metrics(record.metrics, run.metrics, 0.0)
    unrecorded = unrecorded_outputs(record.lock, run.lock)
    if unrecorded:
        print(f"check_repro: {len(unrecorded)} outputs are newer than record {record.name} and not checked:"
              f" {', '.join(unrecorded)}; re-record on this machine class with --update")  # fmt: skip
    if not fatal:
        n_met = sum(len(v) for v in record.metrics.values())
        print(f"check_repro: reproduced: {len(lock_hashes(record.lock))} output hashes and {n_met} metric values"
              f" match record {record.name} exactly ({run.seconds:.0f} s)")  # fmt: skip
        return 0
    print(
        f"check_repro: NOT reproduced ({len(fatal)} differences from record {record.name},"
        f" run took {run.seconds:.0f} s):"
    )
    print(report(fatal))
    changes = code_changes(record, run)
    if changes:
        print(f"check_repro: {changes}. If the change is intended, re-record with --update.")
    else:
        print("check_repro: no code or data input changed and the machine class matches the record's: the difference"
              " comes from something the fingerprint does not capture (a library outside torch, an environment"
              " variable) or from nondeterminism; run the check again to tell which.")  # fmt: skip
    return 1


def check_two_runs(
    profile: Path, nearest: Record | None, params: dict[str, Any], env: dict[str, str]
) -> tuple[int, Run]:
    first = run_profile(params, env, "run 1 of 2")
    second = run_profile(params, env, "run 2 of 2")
    nondeterministic = bit_differences(first, second)
    shutil.rmtree(second.work, ignore_errors=True)
    if nondeterministic:
        print(f"check_repro: NOT deterministic on this machine: two runs differ in {len(nondeterministic)} places:")
        print(report(nondeterministic))
        return 1, first
    n_out, n_met = len(lock_hashes(first.lock)), sum(len(v) for v in first.metrics.values())
    print(f"check_repro: deterministic here: two runs agree in all {n_out} output hashes and {n_met} metric values")
    if nearest is None:
        print("check_repro: no record to compare the metrics with; add this machine's with --update")
        return 0, first
    tolerance_file = profile / "tolerances.json"
    if not tolerance_file.exists():
        raise SystemExit(f"check_repro: {tolerance_file} is missing: measure it with --measure-tolerances")
    tolerances = json.loads(tolerance_file.read_text())["tolerances"]
    diffs = compare_within(nearest.metrics, first.metrics, tolerances)
    if diffs:
        print(
            f"check_repro: NOT reproduced: {len(diffs)} metrics outside the measured tolerance"
            f" of record {nearest.name}:"
        )
        print(report(diffs))
        print(
            "check_repro: this machine class runs other kernels than any measured one, so a metric can move further"
            " than the tolerances allow; if the two runs here look right, add this class's record with --update"
        )
        changes = code_changes(nearest, first)
        if changes:
            print(f"check_repro: also, {changes} (inputs whose hash differs; not necessarily the cause)")
        return 1, first
    print(f"check_repro: reproduced within tolerance: all {n_met} metric values within the tolerances measured across"
          f" machine classes ({tolerance_file.relative_to(REPO)}) of record {nearest.name}")  # fmt: skip
    return 0, first


def measure(
    profile: Path, params: dict[str, Any], fp: dict[str, Any], records: list[Record], base: dict[str, str]
) -> int:
    reference = matching_record(records, fp)
    if reference is None:
        raise SystemExit("check_repro: --measure-tolerances needs a record of this machine class: run --update first")
    others = [r for r in records if r is not reference and r.fingerprint.get("device") == fp["device"]]
    runs: dict[str, Any] = {
        f"record {r.name}": {"class": r.name, "differs_in": class_differences(reference.fingerprint, r.fingerprint)}
        for r in others
    }
    samples = [r.metrics for r in others]
    for label, overrides in TOLERANCE_VARIANTS.items():
        if overrides.get("ATEN_CPU_CAPABILITY") == "avx512" and not fp["cpu_isa"].startswith("avx512"):
            print(f"check_repro: {label}: skipped, this CPU has no AVX-512 (ATen would run it regardless)")
            continue
        env = stage_env(base | overrides)
        variant_fp = machine_fingerprint(env)
        run = run_profile(params, env, label)
        shutil.rmtree(run.work, ignore_errors=True)
        same_bits = not compare_outputs(reference.lock, run.lock)
        runs[label] = {"env": overrides, "class": class_id(variant_fp), "same_bits_as_reference": same_bits,
                       "differs_in": class_differences(reference.fingerprint, variant_fp)}  # fmt: skip
        samples.append(run.metrics)
        print(f"check_repro: {label}: {'same bits as' if same_bits else 'different bits from'} {reference.name}")
    tolerances = measure_tolerances(reference.metrics, samples, TOLERANCE_FACTOR)
    out = {
        "method": f"{TOLERANCE_FACTOR:g} x the largest |difference| from the reference record seen in runs of this"
        " profile on other machine classes (the records and runs below, made on one machine by pinning its kernels"
        " differently), shared within a family of metrics (class_share.*, epoch*.x); 0 where no run differed",
        "reference": reference.name,
        "measured_on": describe(fp),
        "runs": runs,
        "tolerances": tolerances,
    }
    (profile / "tolerances.json").write_text(json.dumps(out, indent=2) + "\n")
    moved = sum(t > 0 for t in tolerances.values())
    print(
        f"check_repro: wrote {profile.relative_to(REPO)}/tolerances.json ({moved} of {len(tolerances)} metrics moved)"
    )
    return 0


def check_workspace(params: dict[str, Any], env: dict[str, str]) -> int:
    print("check_repro: mode exact, against the workspace's own dvc.lock and metrics (made on this machine, or one of"
          " the same class)")  # fmt: skip
    run = run_profile(params, env, "workspace params")
    try:
        files = metric_files(REPO / "params.yaml")
        workspace = Record("workspace", {}, yaml.safe_load((REPO / "dvc.lock").read_text()), metrics_of(REPO, files))
        return check_exact(workspace, run)
    finally:
        shutil.rmtree(run.work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--profile", default="ci", help="profiles/<name>: params overrides and the records")
    mode.add_argument("--workspace", action="store_true", help="check the workspace's own dvc.lock and metrics")
    parser.add_argument("--update", action="store_true", help="add or replace this machine class's record")
    parser.add_argument("--fingerprint", action="store_true", help="print this machine's class and exit")
    parser.add_argument("--measure-tolerances", action="store_true", help="re-measure the profile's tolerances")
    parser.add_argument(
        "--save-record", type=Path, metavar="DIR", help="two-run mode: also write this class's record under DIR (CI)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy for inspection")
    args = parser.parse_args(argv)

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.workspace:
        if args.update or args.measure_tolerances or args.fingerprint or args.save_record:
            parser.error("--update, --measure-tolerances, --fingerprint and --save-record work on a profile")
        return check_workspace(params, stage_env())
    profile = REPO / "profiles" / args.profile
    if not (profile / "params.yaml").exists():
        parser.error(f"{profile}/params.yaml not found: a profile holds the params overrides it runs with")
    params = deep_merge(params, yaml.safe_load((profile / "params.yaml").read_text()) or {})
    records = load_records(profile)

    overrides = {}
    if "GENLAB_THREADS" not in os.environ and records:
        # Bits depend on the thread count: run with the records' own unless the user chose one.
        threads = Counter(r.fingerprint["threads"] for r in records).most_common(1)[0][0]
        overrides["GENLAB_THREADS"] = str(threads)
        print(f"check_repro: GENLAB_THREADS={threads}, the records' thread count (set GENLAB_THREADS to choose)")
    env = stage_env(overrides)
    fp = machine_fingerprint(env)
    print(f"check_repro: this machine: {describe(fp)}")
    if args.fingerprint:
        print(json.dumps(fp, indent=2))
    if args.measure_tolerances:
        return measure(profile, params, fp, records, overrides)

    exact = matching_record(records, fp)
    nearest = exact or nearest_record(records, fp)
    if args.update:
        print("check_repro: mode record: one run, written as this machine class's record (other records stay)")
    elif exact is not None:
        print(f"check_repro: mode exact: record {exact.name} was made on this machine class, so every bit must match")
    else:
        print("check_repro: mode two-run: no record was made on this machine class, so bits are not compared with"
              " one (another class runs other kernels: that, not a code edit, is why bits would differ)")  # fmt: skip
        if nearest is not None:
            print(f"check_repro: nearest record {nearest.name} differs in: "
                  + "; ".join(class_differences(nearest.fingerprint, fp)))  # fmt: skip
    if args.fingerprint:
        return 0

    run: Run | None = None
    try:
        if args.update:
            run = run_profile(params, env, "record")
            dest = write_record(profile / "records", fp, run)
            print(f"check_repro: recorded {dest.relative_to(REPO)} in {run.seconds:.0f} s")
            return 0
        if exact is not None:
            run = run_profile(params, env, "exact")
            return check_exact(exact, run)
        status, run = check_two_runs(profile, nearest, params, env)
        if status == 0 and args.save_record:
            dest = write_record(args.save_record, fp, run)
            print(f"check_repro: this class's record is in {dest}: copy it to {profile.relative_to(REPO)}/records/")
        elif status == 0:
            print("check_repro: to add this machine class's record: python scripts/check_repro.py --update")
        return status
    finally:
        if run is not None and args.keep:
            print(f"check_repro: kept {run.work}")
        elif run is not None:
            shutil.rmtree(run.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
