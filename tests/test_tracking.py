from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from genlab.errors import TrackingUnavailable
from genlab.tracking import (
    TAG_CHECKPOINT,
    TAG_FAILURE,
    TAG_MODEL,
    TAG_STAGE,
    Tracker,
    dvc_tags,
    mlflow_server,
    repo_root,
)


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "test", root=tmp_path)


def test_run_logging_and_lookup_by_checkpoint_hash(tracker, tmp_path):
    with tracker.run(run_name="gan", tags={TAG_MODEL: "gan", TAG_STAGE: "train"}) as run_id:
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


def _checkpoint(path, name: str, kind: str, **section) -> None:
    import torch

    header = {"format": 1, "kind": kind, **({"name": name} if name != kind else {})}
    torch.save({**header, "config": {"seed": 0, name: {"epochs": 1, **section}}}, path)


def test_a_stage_run_is_a_new_child_of_the_training_run_and_leaves_it_as_it_was(tracker, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from genlab.tracking import TAG_PARENT, TAG_STAGE, file_sha256

    ckpt = tmp_path / "cgan.pt"
    _checkpoint(ckpt, "cgan", "gan", variant="stable")
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")
    with tracker.run(run_name="cgan-stable · brisk-lamb", tags={TAG_MODEL: "cgan", TAG_STAGE: "train"}) as train_id:
        tracker.set_tags({TAG_CHECKPOINT: file_sha256(ckpt)})
    client = MlflowClient()
    before = client.get_run(train_id).info

    monkeypatch.setenv("DVC_EXP_NAME", "other-exp")  # a second experiment that reuses the cached checkpoint
    with tracker.stage_run("evaluate", ckpt, "Evaluates cgan.") as eval_id:
        tracker.log_metrics({"fid": 3.0}, prefix="eval/")
    child = client.get_run(eval_id)
    assert child.data.tags[TAG_PARENT] == train_id and child.data.tags["genlab.train_run_id"] == train_id
    assert child.info.run_name == "cgan-stable · other-exp · evaluate"
    assert child.data.tags["genlab.experiment"] == "other-exp" and child.data.tags["genlab.kind"] == "gan"
    assert child.data.tags["mlflow.note.content"].startswith("Evaluates cgan. Its checkpoint was trained by run")
    after = client.get_run(train_id)
    assert (after.info.end_time, after.info.status) == (before.end_time, before.status)  # not re-opened
    assert "eval/fid" not in after.data.metrics  # the numbers stay on the evaluation's own run

    # The training stage looks for training runs only; an evaluation of the same checkpoint is not one.
    assert tracker.find_run("cgan", file_sha256(ckpt)) == train_id
    assert tracker.find_run("cgan", file_sha256(ckpt), stage="evaluate") == eval_id


def test_a_stage_run_without_a_training_run_says_where_its_checkpoint_came_from(tracker, tmp_path):
    from mlflow.tracking import MlflowClient

    from genlab.tracking import TAG_PARENT

    ckpt = tmp_path / "vae.pt"
    _checkpoint(ckpt, "vae", "vae")
    with tracker.stage_run("render", ckpt, "Renders vae.") as run_id:
        pass
    run = MlflowClient().get_run(run_id)
    assert TAG_PARENT not in run.data.tags and run.info.status == "FINISHED"
    assert "DVC restored it from its cache" in run.data.tags["mlflow.note.content"]
    assert run.info.run_name.startswith("vae · ") and run.info.run_name.endswith(" · render")


def test_run_titles_and_experiment_labels(monkeypatch, tmp_path):
    from genlab.tracking import experiment_label, run_title

    assert run_title("gan", "stable", "brisk-lamb") == "gan-stable · brisk-lamb"
    assert run_title("vae", None, "1a2b3c4", "evaluate") == "vae · 1a2b3c4 · evaluate"
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lamb")
    assert experiment_label() == "brisk-lamb"
    monkeypatch.delenv("DVC_EXP_NAME")
    assert experiment_label(tmp_path) == "no-git"  # not a git work tree


def test_the_dataset_is_logged_as_the_runs_input_without_loading_it(tracker):
    import mlflow

    sha = "ab" * 32
    with tracker.run(run_name="vae") as run_id:
        tracker.log_dataset("mnist", sha, "https://ossci-datasets.s3.amazonaws.com/mnist/", context="training")
    (logged,) = mlflow.get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest, logged.dataset.source_type) == ("mnist", sha[:16], "http")
    assert {t.key: t.value for t in logged.tags} == {"genlab.sha256": sha, "mlflow.data.context": "training"}


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


def test_find_run_prefers_a_finished_run_of_the_same_experiment(tracker):
    from genlab.tracking import TAG_EXPERIMENT

    def train(experiment: str, fail: bool = False) -> str:
        tags = {TAG_MODEL: "gan", TAG_STAGE: "train", TAG_EXPERIMENT: experiment, TAG_CHECKPOINT: "same"}
        try:
            with tracker.run(tags=tags) as run_id:
                if fail:
                    raise RuntimeError("killed")
        except RuntimeError:
            pass  # the run is marked FAILED, as a crashed stage's is
        return run_id

    mine, theirs = train("brisk-lamb"), train("lucid-owl")
    train("lucid-owl", fail=True)  # the newest, but failed
    assert tracker.find_run("gan", "same", experiment="brisk-lamb") == mine
    assert tracker.find_run("gan", "same", experiment="another") == theirs  # the newest finished one
    assert tracker.find_run("gan", "same") == theirs


def test_what_the_pipeline_writes_does_not_make_the_working_copy_dirty(tmp_path, monkeypatch):
    import subprocess

    from genlab.tracking import experiment_label, git_tags

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "gan_train.json").write_text("{}")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    (tmp_path / "metrics" / "gan_train.json").write_text('{"epoch": 1}')  # a stage ran
    assert git_tags(tmp_path, outputs=("metrics", "dvc.lock"))["git.dirty"] == "false"
    assert "+dirty" not in experiment_label(tmp_path, outputs=("metrics",))
    assert git_tags(tmp_path)["git.dirty"] == "true"
    (tmp_path / "params.yaml").write_text("seed: 1\n")  # a user's edit
    assert experiment_label(tmp_path, outputs=("metrics",)).endswith("+dirty")


def test_a_run_ends_killed_on_ctrl_c_and_failed_on_an_error_with_the_reason(tracker):
    client = MlflowClient()
    with pytest.raises(KeyboardInterrupt):
        with tracker.run(run_name="interrupted") as interrupted:
            raise KeyboardInterrupt("signal SIGTERM")
    with pytest.raises(ValueError):
        with tracker.run(run_name="failed") as failed:
            raise ValueError("gan diverged in epoch 3: loss_d is nan")
    for run_id, status, reason in (
        (interrupted, "KILLED", "interrupted (signal SIGTERM)"),
        (failed, "FAILED", "gan diverged in epoch 3: loss_d is nan"),
    ):
        run = client.get_run(run_id)
        assert run.info.status == status and run.data.tags[TAG_FAILURE] == reason


def test_a_run_whose_process_was_killed_is_marked_killed_by_the_next_start(tracker, tmp_path):
    """kill -9 inside a run leaves it RUNNING; the next run of the store marks it KILLED, and leaves a run of a live
    process (this one) alone."""
    script = (
        "import os, signal\n"
        "from genlab.tracking import Tracker\n"
        f"t = Tracker({tracker.tracking_uri!r}, 'test', root=__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "with t.run(run_name='doomed') as run_id:\n"
        "    print(run_id, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    doomed = done.stdout.split()[0]
    client = MlflowClient()
    assert client.get_run(doomed).info.status == "RUNNING"
    with tracker.run(run_name="alive") as alive:
        assert client.get_run(doomed).info.status == "KILLED"
        assert "ended without ending the run (killed)" in client.get_run(doomed).data.tags[TAG_FAILURE]
        assert tracker.end_orphaned_runs() == []  # this process's own run is alive
        assert client.get_run(alive).info.status == "RUNNING"


def test_an_unreachable_tracking_server_fails_within_seconds_naming_the_variable(tmp_path):
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"^GENLAB_TRACKING_URI=http://127.0.0.1:9: no MLflow server answers"):
        Tracker("http://127.0.0.1:9", "genlab", root=tmp_path)
    assert time.monotonic() - start < 10
    (tmp_path / "broken.db").write_bytes(b"not a database" * 100)
    with pytest.raises(TrackingUnavailable, match=r"broken.db\?timeout=60 cannot be used"):
        Tracker(f"sqlite:///{tmp_path / 'broken.db'}?timeout=60", "genlab", root=tmp_path)


def test_a_run_with_a_ledger_is_continued_after_a_failure_and_the_ledger_goes_when_it_finishes(tracker, tmp_path):
    ledger = tmp_path / "state" / "gan.run.json"
    with pytest.raises(ValueError):
        with tracker.run(run_name="gan", ledger=ledger) as first:
            assert not tracker.logged_params(first) and tracker.logged_steps(first, "loss") == set()
            tracker.log_params({"lr": 0.1})
            tracker.log_metrics({"loss": 1.0}, step=1)
            raise ValueError("stopped")
    assert ledger.exists()
    with tracker.run(run_name="another name", ledger=ledger) as second:
        assert second == first and tracker.logged_params(second) and tracker.logged_steps(second, "loss") == {1}
    run = MlflowClient().get_run(first)
    assert run.info.status == "FINISHED" and run.info.run_name == "gan" and not ledger.exists()
    with tracker.run(run_name="gan", ledger=ledger) as third:  # a finished run is not continued
        assert third != first
