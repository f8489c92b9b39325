"""The real `mlflow server` on a loopback port: two short training runs logged over HTTP, read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from genlab.tracking import mlflow_server

from .conftest import make_idx_files, make_project, tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    with mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", artifacts_destination=tmp_path / "server-artifacts"
    ) as url:
        yield url


def test_two_runs_logged_to_a_real_server_read_back_over_http(tmp_path, server):
    mirror = tmp_path / "mirror"
    sha = make_idx_files(mirror)
    project = make_project(tmp_path / "project", tiny_params(sha, epochs=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GENLAB_", "MLFLOW_"))}
    env.update(GENLAB_DATA_MIRROR=str(mirror), GENLAB_OFFLINE="1", GENLAB_THREADS="1",
               GENLAB_TRACKING_URI=server, PYTHONPATH="src")  # fmt: skip
    for script, *args in (["download"], ["train_classifier"], ["train", "gan"], ["train", "vae"]):
        result = subprocess.run([sys.executable, f"pipeline/{script}.py", *args], cwd=project, env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("genlab")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["genlab.model"] for r in runs) == ["classifier", "gan", "vae"]
    for run in [r for r in runs if r.data.tags["genlab.model"] != "classifier"]:
        loss = "train/loss_d" if run.data.tags["genlab.model"] == "gan" else "train/test_loss"
        assert [m.step for m in client.get_metric_history(run.info.run_id, loss)] == [1, 2]
        images = client.list_artifacts(run.info.run_id, "images")
        assert len(images) >= 2, images  # one logged image per epoch (with its step), read over HTTP
        assert run.data.params["seed"] == "0"
    # The server, not the project directory, stores the artifacts.
    assert not (project / "mlruns").exists()
    assert any(Path(tmp_path / "server-artifacts").rglob("*.png"))
