"""The plug-in seam, proved: a new model kind is its package under src/genlab/models, its params section and its
name in `models`. tests/plugin_example/pixels is copied into a scratch project with nothing else edited, and
`dvc repro` trains, renders and evaluates it beside a built-in model."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from genlab import registry

from .conftest import REPO, bin_path, make_project, tiny_params
from .test_pipeline import check_training_plots, run, stage_env

EXAMPLE = REPO / "tests" / "plugin_example" / "pixels"


def test_the_registry_finds_exactly_the_packages_with_a_config():
    assert registry.kinds() == ["gan", "vae"]
    assert registry.config_class("gan").__name__ == "GanConfig"
    with pytest.raises(ValueError, match="unknown model kind 'pixels'"):
        registry.model_class("pixels")


@pytest.mark.slow
@pytest.mark.e2e
def test_a_new_kind_runs_through_every_stage_with_no_other_edit(tmp_path, tiny_mirror):
    mirror, sha = tiny_mirror
    params = tiny_params(sha, epochs=2)
    params["models"] = {"gan": "gan", "pixels": "pixels", "cpixels": "pixels"}
    del params["vae"], params["cgan"], params["cvae"]
    section = {"conditional": False, "epochs": 2, "batch_size": 100, "lr": 0.05, "diagnostic_samples": 100}
    params["pixels"] = {**section, "precision": "fp32", "compile": "eager"}
    params["cpixels"] = {**params["pixels"], "conditional": True}
    project = make_project(tmp_path / "project", params)
    shutil.copytree(EXAMPLE, project / "src" / "genlab" / "models" / "pixels")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "a new kind"], cwd=project, check=True)
    env = stage_env(mirror)
    run([bin_path("dvc"), "repro"], project, env)

    for name in ("pixels", "cpixels"):
        evaluation = json.loads((project / "metrics" / f"{name}_eval.json").read_text())
        assert evaluation["num_samples"] == 100 and evaluation["fid"] > 0
        assert sorted(p.name for p in (project / "figures" / name).iterdir()) == [
            "epoch_001.png", "epoch_002.png", "progression.png"
        ]  # fmt: skip
    # Its history is drawn by its own template (plots.json in its package), every column in a panel.
    check_training_plots(project, env, {"pixels": "pixels", "cpixels": "pixels", "gan": "gan"})
    conditional = json.loads((project / "metrics" / "cpixels_eval.json").read_text())
    assert "conditional_accuracy" in conditional and len(conditional["fid_by_class"]) == 10
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    deps = [d["path"] for d in lock["stages"]["train@pixels"]["deps"]]
    assert "src/genlab/models/pixels" in deps and "src/genlab/models/gan" not in deps
