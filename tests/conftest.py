"""Shared fixtures: tiny IDX datasets made here, a temporary MLflow database, a scratch project copy."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from genlab import cpu_pins
from genlab.data import IDX_FILES, write_idx

REPO = Path(__file__).resolve().parents[1]
MNIST_MIRROR = (REPO.parent / "shared" / "datasets" / "mnist").resolve()


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 28, 28] images with labels 0-9: class k is a bright bar at a class-specific place, plus noise.
    Easy enough that a few epochs of either model visibly learn it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        row = 3 + 2 * int(k)
        images[i, row : row + 3, 4:24] = 230
        images[i, 4:24, row : row + 2] = 180
    return images, labels


def make_idx_files(directory: Path, n_train: int = 300, n_test: int = 100, gz: bool = True) -> dict[str, str]:
    """Write the four IDX files (gzip-compressed when gz) and return their decompressed SHA-256s."""
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_digits(n_train, seed=1)
    test_x, test_y = synthetic_digits(n_test, seed=2)
    contents = dict(
        zip(IDX_FILES, (write_idx(train_x), write_idx(train_y), write_idx(test_x), write_idx(test_y)), strict=True)
    )
    for name, data in contents.items():
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}


@pytest.fixture
def tiny_mirror(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    mirror = tmp_path / "mirror"
    return mirror, make_idx_files(mirror)


def tiny_params(sha256: dict[str, str], epochs: int = 2, models: tuple[str, ...] | None = None, **overrides) -> dict:
    """params.yaml for a fast run on the tiny custom dataset; `models` keeps only those of params.yaml's models."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] = {"dataset": "custom", "custom_sha256": sha256}
    params["gan"].update(
        epochs=epochs,
        batch_size=50,
        generator_hidden=[32, 64],
        discriminator_hidden=[64, 32],
        latent_dim=16,
        num_fixed_samples=16,
        diagnostic_samples=50,
    )
    params["classifier"].update(
        channels=[4, 8], feature_dim=16, epochs=5, batch_size=25, max_lr=0.01, min_test_accuracy=0.5
    )
    params["vae"].update(
        epochs=epochs, batch_size=50, hidden=[64, 32], latent_dim=4, num_reconstructions=8, diagnostic_samples=50
    )
    # The conditional models: the same tiny networks, ten rows of two fixed images.
    params["cgan"].update({**params["gan"], "conditional": True, "num_fixed_samples": 20})
    params["cvae"].update({**params["vae"], "conditional": True, "num_fixed_samples": 20})
    params["render"].update(epochs=list(range(1, epochs + 1)), scale=2)
    params["evaluate"].update(batch_size=50, num_samples=100, c2st_epochs=1, iwae_samples=10)
    if models is not None:
        for name in set(params["models"]) - set(models):
            del params["models"][name], params[name]
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        params[section][key] = value
    return params


PROJECT_FILES = ("dvc.yaml", "params.yaml", "pipeline", "src", "scripts", ".dvcignore", ".gitignore")


def make_project(dest: Path, params: dict | None = None) -> Path:
    """A scratch copy of the repository (code, dvc.yaml, DVC and git initialised) to run stages in."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    (dest / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy2(REPO / ".dvc" / name, dest / ".dvc" / name)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=genlab-test", "-c", "user.email=test@genlab.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "scratch"], cwd=dest, check=True)
    return dest


def stage_env(mirror: Path) -> dict[str, str]:
    """The environment of a stage run in a scratch project: this one's, less any DVC_, GENLAB_ or MLFLOW_ setting,
    offline, reading `mirror`, one thread. The CPU pins genlab set here are left out too: the stage sets its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVC_", "GENLAB_", "MLFLOW_", "AWS_")) and k not in cpu_pins.APPLIED
    }
    env.update(
        GENLAB_DATA_MIRROR=str(mirror),
        GENLAB_OFFLINE="1",
        GENLAB_THREADS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
    )
    return env


def bin_path(name: str) -> str:
    """An executable of this environment (dvc, mlflow), next to the running interpreter."""
    return str(Path(sys.executable).parent / name)


def run_queue(project: Path, env: dict[str, str], timeout: float = 600) -> str:
    """`dvc queue start -j 2`, then wait until nothing is running or queued; returns `dvc queue status`."""
    dvc = bin_path("dvc")
    subprocess.run([dvc, "queue", "start", "-j", "2"], cwd=project, env=env, check=True, capture_output=True)
    deadline = time.monotonic() + timeout
    while True:
        status = subprocess.run([dvc, "queue", "status"], cwd=project, env=env, check=True, capture_output=True,
                                text=True).stdout  # fmt: skip
        if ("Running" not in status and "Queued" not in status) or time.monotonic() > deadline:
            return status
        time.sleep(2)
