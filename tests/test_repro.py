from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from genlab.io import atomic_torch_save
from genlab.repro import (
    Difference,
    changed_deps,
    compare_metrics,
    compare_outputs,
    flatten_metrics,
    parse_metrics_file,
)

from .conftest import make_project, tiny_params

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


@pytest.mark.slow
def test_check_catches_one_changed_weight_and_one_changed_metric(tmp_path, tiny_mirror):
    """Record a tiny profile, then alter the record as if one weight of the GAN and one metric had been
    different: the check must fail and name exactly those two."""
    mirror, sha = tiny_mirror
    project = make_project(tmp_path / "project")
    profile = project / "profiles" / "tiny"
    profile.mkdir(parents=True)
    full = tiny_params(sha, epochs=1)
    (profile / "params.yaml").write_text(
        yaml.safe_dump({k: full[k] for k in ("data", "classifier", "gan", "vae", "render", "evaluate")})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GENLAB_"))}
    env.update(GENLAB_DATA_MIRROR=str(mirror), GENLAB_OFFLINE="1", GENLAB_THREADS="1")
    check = [sys.executable, "scripts/check_repro.py", "--profile", "tiny"]

    recorded = subprocess.run([*check, "--update", "--keep"], cwd=project, env=env, capture_output=True, text=True)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    kept = re.search(r"kept (\S+)", recorded.stdout).group(1)

    # The record now says: the GAN had one weight different, and the discriminator's accuracy was 0.1 higher.
    model = torch.load(f"{kept}/models/gan.pt", weights_only=True)
    model["model"]["generator.net.0.weight"][0, 0] += 1e-3
    atomic_torch_save(tmp_path / "altered.pt", model)
    altered_md5 = hashlib.md5((tmp_path / "altered.pt").read_bytes()).hexdigest()
    lock = yaml.safe_load((profile / "dvc.lock").read_text())
    for entry in lock["stages"]["train_gan"]["outs"]:
        if entry["path"] == "models/gan.pt":
            original_md5, entry["md5"] = entry["md5"], altered_md5
    (profile / "dvc.lock").write_text(yaml.safe_dump(lock))
    evaluation = json.loads((profile / "metrics" / "evaluate.json").read_text())
    evaluation["gan"]["discriminator_accuracy"] += 0.1
    (profile / "metrics" / "evaluate.json").write_text(json.dumps(evaluation))

    result = subprocess.run(check, cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT reproduced (2 differences" in result.stdout
    assert f"output models/gan.pt: expected {altered_md5}, got {original_md5}" in result.stdout
    assert "metric evaluate.json:gan.discriminator_accuracy" in result.stdout
