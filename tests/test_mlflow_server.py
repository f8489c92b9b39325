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


def test_mlflow_models_serve_answers_a_seven_please(tmp_path):
    """A conditional model's logged sampler behind the real `mlflow models serve` on a loopback port: a label
    column in, one image per row out, the seed optional, a digit outside 0-9 refused."""
    import json
    import socket
    import time
    import urllib.error
    import urllib.request

    import mlflow
    import torch

    from genlab.models.gan.model import GAN
    from genlab.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "serve", root=tmp_path)
    torch.manual_seed(0)
    gan = GAN(latent_dim=8, generator_hidden=[16], discriminator_hidden=[16], conditional=True).eval()
    with tracker.run(run_name="cgan"):
        tracker.log_sampler(gan, "cgan_sampler", latent=torch.zeros(4, 8), labels=torch.arange(4))
    (model,) = mlflow.search_logged_models(experiment_ids=[tracker.experiment.experiment_id], output_format="list")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": tracker.tracking_uri}
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", model.model_uri, "-h", "127.0.0.1", "-p", str(port),
               "--env-manager", "local"]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def ask(records):
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"dataframe_records": records}).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
                time.sleep(1)
        status, answer = ask([{"label": 7}, {"label": 7}, {"label": 1}])
        assert status == 200, answer
        images = torch.tensor(answer["predictions"])
        assert images.shape == (3, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
        status, seeded = ask([{"label": 7, "seed": 0}, {"label": 7, "seed": 3}])
        assert status == 200 and seeded["predictions"][0] == answer["predictions"][0], seeded
        assert seeded["predictions"][1] != seeded["predictions"][0]
        expected = gan.generate(
            torch.randn(8, generator=torch.Generator().manual_seed(0)).expand(2, 8), torch.tensor([7, 7])
        )
        assert torch.allclose(images[:2], expected, atol=1e-6)  # seed 0 by default, the digit asked for
        status, answer = ask([{"label": 12}])
        assert status >= 400 and "label must lie in 0..9" in json.dumps(answer), answer  # in its stack trace
    finally:
        proc.terminate()
        proc.wait(20)
