"""Training under torchrun (genlab.distributed): the shard arithmetic, and the real thing: 2 gloo processes on this
machine's CPU, through the training stage as users launch it (GENLAB_PROCESSES=2)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from genlab.checkpoints import load_checkpoint
from genlab.config import load_params
from genlab.distributed import World
from tests.conftest import make_idx_files, make_project, stage_env, tiny_params


def test_the_ranks_shards_cover_every_global_batch_once_and_differ_in_size_by_at_most_one():
    batch = torch.randperm(103)
    for size in (1, 2, 3, 8):
        shards = [World(rank=r, size=size).shard(batch) for r in range(size)]
        assert torch.equal(torch.cat(shards), batch)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_one_process_is_not_distributed_and_replicates_nothing():
    world, module = World(), torch.nn.Linear(2, 2)
    assert not world.distributed and world.is_main and world.replicate(module) is module
    assert world.gather("x") == ["x"] and torch.equal(world.all_sum(torch.ones(2)), torch.ones(2))


def train(project: Path, env: dict[str, str], model: str = "gan") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipeline/train.py", model], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def mlflow_train_runs(project: Path):
    from tests.test_pipeline import mlflow_runs

    _, runs = mlflow_runs(project)
    return runs[runs["tags.genlab.stage"] == "train"].reset_index()


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    mirror = base / "mirror"
    sha = make_idx_files(mirror, n_train=1000, n_test=100)
    env = {**stage_env(mirror), "PYTHONPATH": "src"}
    made = {}
    for name in ("one", "two_a", "two_b", "killed"):
        project = make_project(base / name, tiny_params(sha, epochs=4, models=("gan", "vae")))
        for stage in ("download", "train_classifier"):
            subprocess.run([sys.executable, f"pipeline/{stage}.py"], cwd=project, env=env, check=True,
                           capture_output=True)  # fmt: skip
        made[name] = project
    return made, env


@pytest.mark.stack
@pytest.mark.slow
def test_two_gloo_processes_are_reproducible_and_only_rank_0_writes_and_logs(projects):
    made, env = projects
    two = {**env, "GENLAB_PROCESSES": "2"}
    for name in ("two_a", "two_b"):
        result = train(made[name], two)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("[gan] 4/4") == 1, result.stdout  # rank 0 alone reports
    assert train(made["one"], env).returncode == 0
    paths = load_params(made["one"] / "params.yaml").paths
    bits = {name: (made[name] / paths.model("gan")).read_bytes() for name in ("one", "two_a", "two_b")}
    assert bits["two_a"] == bits["two_b"], "two 2-process runs differ"
    checkpoint = load_checkpoint(made["two_a"] / paths.model("gan"), torch.device("cpu"))
    assert checkpoint["config"]["world_size"] == 2 and len(checkpoint["rng"]["ranks"]) == 2
    assert "world_size" not in load_checkpoint(made["one"] / paths.model("gan"), torch.device("cpu"))["config"]
    runs = mlflow_train_runs(made["two_a"])
    assert len(runs[runs["tags.genlab.model"] == "gan"]) == 1 and runs.loc[0, "params.world_size"] == "2"
    # The same optimisation, sharded: the losses stay close to one process's (the noise and dropout streams
    # differ, so the bits do not).
    one = json.loads((made["one"] / paths.summary("gan")).read_text())
    two = json.loads((made["two_a"] / paths.summary("gan")).read_text())
    assert abs(one["loss_d"] - two["loss_d"]) < 0.25 and abs(one["loss_g"] - two["loss_g"]) < 0.5, (one, two)


def rank_processes(launcher: psutil.Process) -> dict[int, psutil.Process]:
    found = {}
    for child in launcher.children(recursive=True):
        try:
            rank = child.environ().get("RANK")
        except psutil.Error:
            continue
        if rank is not None and "pipeline/train.py" in " ".join(child.cmdline()):
            found[int(rank)] = child
    return found


@pytest.mark.stack
@pytest.mark.slow
def test_a_rank_killed_mid_run_fails_the_stage_in_one_line_and_the_rerun_resumes_the_same_run(projects):
    made, env = projects
    project = made["killed"]
    two = {**env, "GENLAB_PROCESSES": "2", "GENLAB_CHECKPOINT_EVERY": "1"}
    launcher = subprocess.Popen([sys.executable, "pipeline/train.py", "vae"], cwd=project, env=two,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    state_dir = project / ".genlab" / "state"
    deadline = time.monotonic() + 300
    while not list(state_dir.glob("vae-*.pt")) and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.01)
    ranks = rank_processes(psutil.Process(launcher.pid))
    assert set(ranks) == {0, 1}, "the run ended before a rank could be killed"
    ranks[1].send_signal(signal.SIGKILL)
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 1, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("genlab train@vae: 2 processes under torchrun: a rank failed") and "rerun" in last, last
    paths = load_params(project / "params.yaml").paths
    assert not (project / paths.model("vae")).exists()
    first = mlflow_train_runs(project)
    first = first[first["tags.genlab.model"] == "vae"]
    assert len(first) == 1 and first["status"].iloc[0] in ("KILLED", "FAILED"), err

    rerun = train(project, two, "vae")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stdout
    runs = mlflow_train_runs(project)
    runs = runs[runs["tags.genlab.model"] == "vae"]
    assert list(runs["run_id"]) == list(first["run_id"]) and runs["status"].iloc[0] == "FINISHED"


def _rank_gradient(rank: int, size: int, port: int, out: str) -> None:
    """One rank of a 2-process gloo group: DDP over a linear model, this rank's shard of a 7-sample batch."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size))
    world = World(rank=rank, size=size)
    world.init(torch.device("cpu"))
    x, y, model = _problem()
    shard = world.shard(torch.arange(x.shape[0]))
    network = world.replicate(model)
    for weighted in (True, False):
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(network(x[shard]), y[shard])
        (world.weighted(loss, len(shard), x.shape[0]) if weighted else loss).backward()
        if rank == 0:
            torch.save(model.weight.grad.clone(), f"{out}-{weighted}.pt")
    world.finish()


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 1, generator=g)
    torch.manual_seed(0)
    return x, y, torch.nn.Linear(3, 1)


@pytest.mark.stack
@pytest.mark.slow
def test_ddp_with_weighted_shards_gives_the_global_batchs_mean_gradient_when_the_batch_splits_unevenly(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "grad")
    mp.spawn(_rank_gradient, args=(2, port, out), nprocs=2, join=True)  # shards of 4 and 3 samples
    x, y, model = _problem()
    torch.nn.functional.mse_loss(model(x), y).backward()
    assert torch.allclose(torch.load(f"{out}-True.pt"), model.weight.grad, atol=1e-6)
    # Unweighted, DDP's average of the two shards' means is not the mean over 7: the weighting is what fixes it.
    assert not torch.allclose(torch.load(f"{out}-False.pt"), model.weight.grad, atol=1e-4)


def test_a_batch_that_leaves_a_rank_without_samples_is_refused_before_training():
    from genlab.config import ConfigError
    from tests.test_train import make_trainer

    with pytest.raises(ConfigError, match="too few for 2 processes"):
        make_trainer("vae", batch_size=199, world=World(rank=0, size=2))  # 200 images: a last batch of 1
