"""The real `mlflow server` on a loopback port: two short training runs logged over HTTP, read back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .conftest import bin_path, make_idx_files, make_project, tiny_params

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [bin_path("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_two_runs_logged_to_a_real_server_read_back_over_http(tmp_path, mlflow_server):
    mirror = tmp_path / "mirror"
    sha = make_idx_files(mirror)
    project = make_project(tmp_path / "project", tiny_params(sha, epochs=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GENLAB_", "MLFLOW_"))}
    env.update(GENLAB_DATA_MIRROR=str(mirror), GENLAB_OFFLINE="1", GENLAB_THREADS="1",
               GENLAB_TRACKING_URI=mlflow_server, PYTHONPATH="src")  # fmt: skip
    for stage in ("download", "train_classifier", "train_gan", "train_vae"):
        result = subprocess.run([sys.executable, f"pipeline/{stage}.py"], cwd=project, env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    client = MlflowClient(tracking_uri=mlflow_server)
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
