"""`genlab generate`: grids and arrays from the workspace's trained models, and one clear line for bad input."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from genlab.__main__ import main
from genlab.config import load_params
from genlab.io import atomic_torch_save

from .conftest import REPO
from .test_train import make_trainer, quiet


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A params.yaml naming an unconditional and a conditional model, each trained for one epoch on tiny data."""
    root = tmp_path_factory.mktemp("workspace")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name in params["models"]:
        del params[name]
    params["models"] = {"gan": "gan", "cgan": "gan", "cvae": "vae", "untrained": "vae"}
    params["render"]["epochs"] = [1]
    trainers = {
        "gan": make_trainer("gan"),
        "cgan": make_trainer("gan", conditional=True, num_fixed_samples=10),
        "cvae": make_trainer("vae", conditional=True, num_fixed_samples=10),
    }
    for name, trainer in trainers.items():
        params[name] = trainer.cfg.model_dump(exclude_none=True)
        trainer.name = name
        trainer.config = {name: trainer.cfg.record()}
        trainer.fit(1, log=quiet)
    params["untrained"] = params["cvae"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    paths = load_params(root / "params.yaml").paths
    for name, trainer in trainers.items():
        atomic_torch_save(root / paths.model(name), trainer.state_dict())
    return root


def generate(workspace, *args: str):
    """`genlab generate` run in the workspace, as in a repository's root."""
    with contextlib.chdir(workspace):
        return CliRunner().invoke(main, ["generate", *args])


def test_a_conditional_model_draws_the_digit_asked_for_as_a_grid_and_an_array(workspace, tmp_path):
    result = generate(workspace, "--model", "cgan", "--digit", "7", "--n", "16", "--out", str(tmp_path / "7.png"))
    assert result.exit_code == 0, result.output
    assert "16 images from cgan" in result.output and "digit 7" in result.output
    grid = np.asarray(Image.open(tmp_path / "7.png"))
    assert grid.shape == ((2 * 30 + 2) * 2, (8 * 30 + 2) * 2)  # two rows of eight 28-pixel digits padded by 2, scale 2
    result = generate(workspace, "--model", "cvae", "--n", "20", "--out", str(tmp_path / "all.npy"))
    assert result.exit_code == 0 and "digits 0-9 cycling" in result.output, result.output
    images = np.load(tmp_path / "all.npy")
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8


def test_the_same_seed_gives_the_same_images(workspace, tmp_path):
    for name in ("a", "b"):
        generate(workspace, "--model", "gan", "--n", "4", "--seed", "3", "--out", str(tmp_path / f"{name}.npy"))
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "dcgan"], "unknown model 'dcgan'"),
        (["--model", "cgan", "--digit", "12"], "12: a digit is 0-9"),
        (["--model", "cgan", "--n", "0"], "give a positive number of images"),
        (["--model", "gan", "--digit", "3"], "is unconditional: it cannot draw a chosen digit"),
        (["--model", "untrained"], "is missing: train it first (dvc repro train@untrained"),
        ([], "give exactly one of --model NAME or --model-uri URI"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_nonzero_exit(workspace, tmp_path, args, message):
    result = generate(workspace, *args, "--out", str(tmp_path / "x.png"))
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.png").exists()


def test_the_package_installs_the_genlab_command():
    out = subprocess.run(
        [str(sys.executable).rsplit("/", 1)[0] + "/genlab", "generate", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--digit" in out.stdout


@pytest.mark.slow
def test_genlab_ui_serves_the_repositorys_runs_on_loopback_and_names_the_training_view(tmp_path):
    """`genlab ui`: the real mlflow server against the store GENLAB_TRACKING_URI names, its page printed first."""
    import os
    import urllib.request
    from pathlib import Path

    from genlab.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "genlab", root=tmp_path)  # the store and its experiment
    env = {**os.environ, "GENLAB_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [str(Path(sys.executable).parent / "genlab"), "ui", "--port", "0", "--no-open"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once the server answers /health
        assert line.startswith("genlab ui: http://127.0.0.1:") and "?workflowType=machine_learning" in line, line
        url = line.split()[2].split("/#/")[0]
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(30)
    # Terminating genlab ui stops the server it started: nothing is left answering on its port.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=5)


def test_compare_and_promote_refuse_what_they_cannot_read_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # an empty store: no runs at all
    result = CliRunner().invoke(main, ["compare", "no-such-experiment"])
    assert result.exit_code != 0 and "Error: 'no-such-experiment' names no evaluated run" in result.output
    result = CliRunner().invoke(main, ["compare"])
    assert result.exit_code != 0 and "Error: no evaluated runs yet" in result.output
    result = CliRunner().invoke(main, ["promote", "gan", "1"])
    assert result.exit_code != 0 and "Error: no versions of genlab-gan" in result.output


def test_genlab_profile_spells_the_profile_as_dvc_set_params_that_read_back_as_its_values(monkeypatch):
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["profile", "ci"])
    assert result.exit_code == 0, result.output
    words = result.output.split()
    assert words[0::2] == ["-S"] * (len(words) // 2)
    flat = dict(w.split("=", 1) for w in words[1::2])
    profile = yaml.safe_load((REPO / "profiles" / "ci" / "params.yaml").read_text())
    assert yaml.safe_load(flat["render.epochs"]) == profile["render"]["epochs"]
    assert yaml.safe_load(flat["gan.epochs"]) == profile["gan"]["epochs"]
    assert len(flat) == sum(map(len, profile.values()))
    missing = CliRunner().invoke(main, ["profile", "nope"])
    assert missing.exit_code == 1 and "profiles: bf16, ci" in missing.output
