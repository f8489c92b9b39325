from __future__ import annotations

import numpy as np
import pytest

from genlab.tracking import TAG_CHECKPOINT, TAG_MODEL, Tracker, dvc_tags, mlflow_server, repo_root


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "test", root=tmp_path)


def test_run_logging_and_lookup_by_checkpoint_hash(tracker, tmp_path):
    with tracker.run(run_name="gan", tags={TAG_MODEL: "gan"}) as run_id:
        tracker.log_params({"gan.lr": 2e-4, "gan.hidden": [1, 2]})
        for step in (1, 2):
            tracker.log_metrics({"loss": 1.0 / step}, step=step, prefix="train/")
        tracker.log_image(np.zeros((8, 8), np.uint8), key="gan/snapshot", step=1)
        tracker.set_tags({TAG_CHECKPOINT: "abc"})
    assert tracker.find_run("gan", "abc") == run_id
    assert tracker.find_run("gan", "other") is None
    assert tracker.find_run("vae", "abc") is None

    frame = tracker.runs_frame()
    assert frame.loc[0, "metrics.train/loss"] == 0.5
    assert frame.loc[0, "params.gan.hidden"] == "[1, 2]"
    # Artifacts live under <root>/mlruns/<experiment>, not in the working directory.
    assert any((tmp_path / "mlruns" / "test").rglob("*.png"))


def test_model_run_reopens_the_run_that_made_a_checkpoint(tracker, tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    from genlab.tracking import file_sha256

    with tracker.run(tags={TAG_MODEL: "vae", TAG_CHECKPOINT: file_sha256(ckpt)}) as run_id:
        pass
    with tracker.model_run("vae", ckpt) as found:
        assert found
        tracker.log_metrics({"mse": 0.1}, prefix="eval/")
    assert tracker.runs_frame().set_index("run_id").loc[run_id, "metrics.eval/mse"] == 0.1
    ckpt.write_bytes(b"other weights")
    with tracker.model_run("vae", ckpt) as found:
        assert not found


def test_repo_root_and_dvc_tags_follow_dvc(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")
    assert repo_root() == tmp_path.resolve()
    assert dvc_tags()["dvc.exp_name"] == "brisk-lamb"


def _log_many(uri: str, root: str, name: str, steps: int) -> None:
    t = Tracker(uri, "concurrent", root=__import__("pathlib").Path(root))
    with t.run(run_name=name, tags={TAG_MODEL: name}):
        for step in range(steps):
            t.log_metrics({"loss": float(step)}, step=step)


def test_concurrent_writers_on_a_fresh_database_lose_nothing(tmp_path):
    """Two processes create and write one fresh SQLite store at once, as `dvc queue start -j 2` does."""
    import multiprocessing as mp

    from mlflow.tracking import MlflowClient

    from genlab.tracking import default_tracking_uri

    uri = default_tracking_uri(tmp_path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_log_many, args=(uri, str(tmp_path), f"w{i}", 150)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    t = Tracker(uri, "concurrent", root=tmp_path)
    runs = t.runs_frame()
    assert len(runs) == 2
    client = MlflowClient(uri)
    for run_id in runs["run_id"]:
        assert len(client.get_metric_history(run_id, "loss")) == 150


def test_mlflow_server_that_cannot_start_raises_with_its_output():
    with pytest.raises(RuntimeError, match=r"did not start:(.|\n)*bogus"):
        with mlflow_server("bogus://nowhere", timeout=60):
            pass
