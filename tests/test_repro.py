from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from genlab.io import atomic_torch_save
from genlab.repro import (
    Difference,
    Record,
    changed_deps,
    compare_metrics,
    compare_outputs,
    compare_within,
    flatten_metrics,
    matching_record,
    measure_tolerances,
    nearest_record,
    parse_metrics_file,
    unrecorded_outputs,
)

from .conftest import REPO, bin_path, make_project, tiny_params

LOCK = {
    "stages": {
        "train": {
            "deps": [{"path": "src/train.py", "md5": "d1"}, {"path": "data", "md5": "d2.dir"}],
            "outs": [{"path": "models/gan.pt", "md5": "a1"}, {"path": "figures", "md5": "f1.dir"}],
        }
    }
}


def with_md5(lock: dict, section: str, path: str, md5: str) -> dict:
    lock = json.loads(json.dumps(lock))
    for entry in lock["stages"]["train"][section]:
        if entry["path"] == path:
            entry["md5"] = md5
    return lock


def test_identical_locks_have_no_differences():
    assert compare_outputs(LOCK, LOCK) == []


def test_a_changed_output_is_named_with_both_hashes():
    diffs = compare_outputs(LOCK, with_md5(LOCK, "outs", "models/gan.pt", "b2"))
    assert diffs == [Difference("output models/gan.pt", "a1", "b2")]
    assert str(diffs[0]) == "output models/gan.pt: expected a1, got b2"


def test_an_output_newer_than_the_record_is_named_and_only_fails_a_comparison_of_two_runs():
    newer = copy.deepcopy(LOCK)
    newer["stages"]["identity"] = {"outs": [{"path": "metrics/gan_identity.json", "md5": "c3"}]}
    assert compare_outputs(LOCK, newer, recorded_only=True) == []
    assert unrecorded_outputs(LOCK, newer) == ["metrics/gan_identity.json"]
    assert compare_outputs(LOCK, newer) == [Difference("output metrics/gan_identity.json", "(not recorded)", "c3")]
    # A recorded output that is gone still fails.
    fewer = copy.deepcopy(LOCK)
    fewer["stages"]["train"]["outs"] = [o for o in fewer["stages"]["train"]["outs"] if o["path"] != "models/gan.pt"]
    assert compare_outputs(LOCK, fewer, recorded_only=True) == [Difference("output models/gan.pt", "a1", "(missing)")]


def test_changed_code_is_reported_as_a_likely_cause():
    assert changed_deps(LOCK, with_md5(LOCK, "deps", "src/train.py", "zz")) == ["src/train.py"]


def test_metrics_exact_and_within_tolerance():
    expected = {"evaluate.json": {"gan.d_real": 0.5, "vae.mse": 0.02}}
    assert compare_metrics(expected, expected, 0.0) == []
    nudged = {"evaluate.json": {"gan.d_real": 0.5 * (1 + 1e-6), "vae.mse": 0.02}}
    assert [d.what for d in compare_metrics(expected, nudged, 0.0)] == ["metric evaluate.json:gan.d_real"]
    assert compare_metrics(expected, nudged, 1e-4) == []
    assert compare_metrics(expected, {}, 1e-4)[0].actual == "(missing)"


def test_metric_files_parse():
    assert flatten_metrics({"gan": {"acc": 1, "ok": True}, "n": 2.5}) == {"gan.acc": 1.0, "n": 2.5}
    csv_text = "epoch,loss\n1,0.5\n2,0.25\n"
    assert parse_metrics_file("h.csv", csv_text) == {"epoch1.epoch": 1.0, "epoch1.loss": 0.5, "epoch2.epoch": 2.0,
                                                      "epoch2.loss": 0.25}  # fmt: skip
    # An empty cell (the identity CSV's flips at its first epoch) is no value, not an error.
    identity = "epoch,identity_flips,settled_share\n1,,0.5\n2,0.25,1.0\n"
    assert parse_metrics_file("gan_identity.csv", identity) == {
        "epoch1.epoch": 1.0, "epoch1.settled_share": 0.5, "epoch2.epoch": 2.0, "epoch2.identity_flips": 0.25,
        "epoch2.settled_share": 1.0,
    }  # fmt: skip


def record(name: str, **fp) -> Record:
    base = {"device": "cpu", "cpu_vendor": "AuthenticAMD", "aten_capability": "avx2", "mkl_isa": "avx2",
            "onednn_isa": "Intel AVX2", "threads": 2, "torch": "2.14.1", "mkl": "2024.2", "onednn": "3.12.0",
            "cuda": "none", "cudnn": "none", "cpu_model": "AMD EPYC 7B13"}  # fmt: skip
    return Record(name, base | fp, {}, {})


def test_the_record_of_this_machine_class_is_chosen_whatever_the_model_name():
    records = [record("avx512", aten_capability="avx512"), record("avx2")]
    here = record("here", cpu_model="AMD EPYC 9B45").fingerprint
    assert matching_record(records, here).name == "avx2"
    assert matching_record(records, here | {"threads": 4}) is None


def test_the_nearest_record_weighs_device_and_vendor_over_threads_and_versions():
    records = [record("amd-4t", threads=4), record("intel-2t", cpu_vendor="GenuineIntel"), record("gpu", device="H100")]
    assert nearest_record(records, record("x", threads=8).fingerprint).name == "amd-4t"
    assert nearest_record(records, record("x", cpu_vendor="GenuineIntel", threads=8).fingerprint).name == "intel-2t"
    assert nearest_record([], record("x").fingerprint) is None
    assert nearest_record(records[:2], record("x", device="H100").fingerprint) is None  # only CPU records
    assert nearest_record(records, record("x", device="H100", threads=8).fingerprint).name == "gpu"


def test_tolerances_are_the_measured_spread_times_a_factor():
    reference = {"evaluate.json": {"fid": 10.0, "classes": 10.0}}
    samples = [{"evaluate.json": {"fid": 11.0, "classes": 10.0}}, {"evaluate.json": {"fid": 9.5, "classes": 10.0}}]
    tolerances = measure_tolerances(reference, samples, factor=3)
    assert tolerances == {"evaluate.json:fid": 3.0, "evaluate.json:classes": 0.0}
    family = {"e.json:share.0": 0.1, "e.json:share.1": 0.1, "h.csv:epoch1.loss": 1.0, "h.csv:epoch2.loss": 1.0}
    moved = {"e.json:share.0": 0.1, "e.json:share.1": 0.12, "h.csv:epoch1.loss": 1.0, "h.csv:epoch2.loss": 1.5}

    def as_files(flat):
        return {f: {k.split(":")[1]: v for k, v in flat.items() if k.startswith(f)} for f in ("e.json", "h.csv")}

    shared = measure_tolerances(as_files(family), [as_files(moved)], factor=2)
    assert shared == pytest.approx(
        {"e.json:share.0": 0.04, "e.json:share.1": 0.04, "h.csv:epoch1.loss": 1.0, "h.csv:epoch2.loss": 1.0}
    )  # fmt: skip  a family shares its largest spread
    with pytest.raises(ValueError, match="evaluate.json:fid"):
        measure_tolerances(reference, [{"evaluate.json": {"classes": 10.0}}], factor=3)
    with pytest.raises(ValueError, match="evaluate.json:fid is NaN in one run"):
        measure_tolerances(reference, [{"evaluate.json": {"fid": float("nan"), "classes": 10.0}}], factor=3)
    shares = {"e.json": {"gan.class_share.0": 0.5, "gan.max_class_share": 0.5}}
    moved_share = {"e.json": {"gan.class_share.0": 0.6, "gan.max_class_share": 0.5}}
    assert measure_tolerances(shares, [moved_share], factor=1)["e.json:gan.max_class_share"] == pytest.approx(0.1)


def test_metrics_within_tolerance_pass_and_outside_fail_with_the_numbers():
    expected = {"evaluate.json": {"fid": 10.0, "classes": 10.0}}
    tolerances = {"evaluate.json:fid": 3.0, "evaluate.json:classes": 0.0}
    assert compare_within(expected, {"evaluate.json": {"fid": 12.9, "classes": 10.0}}, tolerances) == []
    diffs = compare_within(expected, {"evaluate.json": {"fid": 13.5, "classes": 9.0}}, tolerances)
    assert [d.what for d in diffs] == ["metric evaluate.json:fid", "metric evaluate.json:classes"]
    assert "|difference| 3.5 > tolerance 3" in str(diffs[0])
    untolerated = compare_within(expected, expected, {"evaluate.json:fid": 1.0})
    assert [d.what for d in untolerated] == ["metric evaluate.json:classes"]
    assert "no measured tolerance" in str(untolerated[0])


def only_record(profile) -> Path:
    (record_dir,) = (profile / "records").iterdir()
    return record_dir


def tiny_profile(tmp_path, tiny_mirror):
    """A scratch project with a tiny profile, and the environment and command to check it."""
    mirror, sha = tiny_mirror
    # Two models: the check is generic over models, and each more one costs every run here.
    full = tiny_params(sha, epochs=1, models=("gan", "vae"))
    project = make_project(tmp_path / "project", full)
    profile = project / "profiles" / "tiny"
    profile.mkdir(parents=True)
    (profile / "params.yaml").write_text(
        yaml.safe_dump({k: full[k] for k in ("data", "classifier", "gan", "vae", "render", "evaluate")})
    )
    # Also without the pins genlab set in this test process: each stage sets its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GENLAB_", "ATEN_", "MKL_", "ONEDNN_"))}
    env.update(GENLAB_DATA_MIRROR=str(mirror), GENLAB_OFFLINE="1", GENLAB_THREADS="1")
    return project, profile, env, [sys.executable, "scripts/check_repro.py", "--profile", "tiny"]


@pytest.mark.slow
@pytest.mark.e2e
def test_check_catches_one_changed_weight_and_one_changed_metric(tmp_path, tiny_mirror):
    """Record a tiny profile, then alter the record as if one weight of the GAN and one metric had been
    different: the check must fail and name exactly those two."""
    project, profile, env, check = tiny_profile(tmp_path, tiny_mirror)
    recorded = subprocess.run([*check, "--update", "--keep"], cwd=project, env=env, capture_output=True, text=True)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    kept = re.search(r"kept (\S+)", recorded.stdout).group(1)
    assert "mode record" in recorded.stdout
    record_dir = only_record(profile)

    # The record now says: the GAN had one weight different, and the discriminator's accuracy was 0.1 higher.
    model = torch.load(f"{kept}/models/gan.pt", weights_only=True)
    model["model"]["generator.net.0.weight"][0, 0] += 1e-3
    atomic_torch_save(tmp_path / "altered.pt", model)
    altered_md5 = hashlib.md5((tmp_path / "altered.pt").read_bytes()).hexdigest()
    lock = yaml.safe_load((record_dir / "dvc.lock").read_text())
    for entry in lock["stages"]["train@gan"]["outs"]:
        if entry["path"] == "models/gan.pt":
            original_md5, entry["md5"] = entry["md5"], altered_md5
    (record_dir / "dvc.lock").write_text(yaml.safe_dump(lock))
    evaluation = json.loads((record_dir / "metrics" / "gan_eval.json").read_text())
    evaluation["discriminator_accuracy"] += 0.1
    (record_dir / "metrics" / "gan_eval.json").write_text(json.dumps(evaluation))

    result = subprocess.run(check, cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"mode exact: record {record_dir.name}" in result.stdout
    assert "NOT reproduced (2 differences" in result.stdout
    assert f"output models/gan.pt: expected {altered_md5}, got {original_md5}" in result.stdout
    assert "metric gan_eval.json:discriminator_accuracy" in result.stdout


def load_check_script(project: Path, monkeypatch):
    """The project copy's scripts/check_repro.py as a module, so a test can wrap its runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_repro_under_test", project / "scripts" / "check_repro.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts its src/ first; undone after the test
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.e2e
def test_two_run_mode_on_a_foreign_machine_class(tmp_path, tiny_mirror, monkeypatch, capsys):
    """With only a record from another machine class, the check runs twice, requires the two runs to agree bit for
    bit, and compares metrics within the measured tolerances. A weight changed in one run fails it, and so does a
    metric outside its tolerance."""
    project, profile, env, check = tiny_profile(tmp_path, tiny_mirror)
    recorded = subprocess.run([*check, "--update"], cwd=project, env=env, capture_output=True, text=True)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    record_dir = only_record(profile)
    fp = json.loads((record_dir / "fingerprint.json").read_text())
    fp["cpu_vendor"] = "GenuineIntel"  # as if it had been recorded on an Intel machine
    (record_dir / "fingerprint.json").write_text(json.dumps(fp))
    evaluation = json.loads((record_dir / "metrics" / "gan_eval.json").read_text())
    tolerances = {f"{p.name}:{k}": 0.0 for p in (record_dir / "metrics").iterdir()
                  for k in parse_metrics_file(p.name, p.read_text())}  # fmt: skip
    tolerances["gan_eval.json:fid"] = 1.0
    (profile / "tolerances.json").write_text(json.dumps({"tolerances": tolerances}))

    for k in [k for k in os.environ if k.startswith(("DVC_", "GENLAB_"))]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("GENLAB_"):
            monkeypatch.setenv(k, v)
    script = load_check_script(project, monkeypatch)
    real_run, saved = script.run_profile, []

    def run_and_keep(*args):
        run = real_run(*args)
        saved.append(tmp_path / f"run{len(saved)}")
        shutil.copytree(run.work, saved[-1], symlinks=True)
        return run

    monkeypatch.setattr(script, "run_profile", run_and_keep)
    assert script.main(["--profile", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "mode two-run: no record was made on this machine class" in out
    assert f"nearest record {record_dir.name} differs in: cpu_vendor: GenuineIntel -> AuthenticAMD" in out
    assert "deterministic here: two runs agree" in out and "reproduced within tolerance" in out
    assert "code or data changed" not in out  # nothing was edited: never blame code

    def replay(*altered_second):
        """Re-check with the two saved runs (copies), the second one altered by the callables."""
        copies = []
        for i, src in enumerate(saved):
            copies.append(tmp_path / f"replay{len(list(tmp_path.glob('replay*')))}")
            shutil.copytree(src, copies[-1], symlinks=True)
            for alter in altered_second if i == 1 else ():
                alter(copies[-1])
        runs = iter(copies)

        def cached(params, env, label):
            work = next(runs)
            files = script.metric_files(work / "params.yaml")
            return script.Run(
                yaml.safe_load((work / "dvc.lock").read_text()), script.metrics_of(work, files), 1.0, work
            )

        monkeypatch.setattr(script, "run_profile", cached)
        status = script.main(["--profile", "tiny"])
        return status, capsys.readouterr().out

    def change_one_weight(work: Path):
        model = torch.load(work / "models" / "gan.pt", weights_only=True)
        model["model"]["generator.net.0.weight"][0, 0] += 1e-3
        atomic_torch_save(work / "models" / "gan.pt", model)
        subprocess.run([bin_path("dvc"), "commit", "-f", "-q", "train@gan"], cwd=work, check=True)

    status, out = replay(change_one_weight)
    assert status == 1 and "NOT deterministic on this machine: two runs differ in 1 places" in out
    assert "output models/gan.pt" in out

    evaluation["fid"] += 0.5  # inside the tolerance of 1.0
    (record_dir / "metrics" / "gan_eval.json").write_text(json.dumps(evaluation))
    status, out = replay()
    assert status == 0 and "reproduced within tolerance" in out
    evaluation["fid"] += 1.0  # now 1.5 away
    (record_dir / "metrics" / "gan_eval.json").write_text(json.dumps(evaluation))
    status, out = replay()
    assert status == 1 and "NOT reproduced: 1 metrics outside the measured tolerance" in out
    assert "metric gan_eval.json:fid" in out and "|difference| 1.5 > tolerance 1" in out


def test_the_stages_get_their_own_pins_not_the_ones_genlab_set_in_the_check(monkeypatch):
    from genlab import cpu_pins

    script = load_check_script(REPO, monkeypatch)
    monkeypatch.setattr(cpu_pins, "APPLIED", {"ATEN_CPU_CAPABILITY": "avx2"})
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # as genlab's import in the check's own process left it
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # the user's: passed on
    env = script.stage_env({"GENLAB_CPU_PINS": "off"})
    assert "ATEN_CPU_CAPABILITY" not in env and env["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"
    assert env["GENLAB_CPU_PINS"] == "off"
