"""The team stack for real on loopback (genlab.stack): PostgreSQL, SeaweedFS's S3 gateway and `mlflow server`,
started and stopped by `genlab stack`; a tiny pipeline logged to it; the DVC remote on its S3 store between two
clones; queued experiments logging at once; a 2-worker Optuna sweep in its PostgreSQL; and the faults of each.
`make test-stack` runs them (with tests/test_distributed.py, about 6 minutes); they start and stop their own
services on free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import bin_path, make_idx_files, make_project, run_queue, stage_env, tiny_params

pytestmark = [pytest.mark.stack, pytest.mark.slow]

GIT = ["git", "-c", "user.name=genlab-test", "-c", "user.email=test@genlab.invalid"]


def run(cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True, timeout: int = 900):
    t0 = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    result.seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    if ok:
        assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def one_error_line(result) -> str:
    """The message of a command that failed as genlab's commands fail: exit 1, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


class Stack:
    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory, self.env = directory, env
        self.exports: dict[str, str] = {}

    def genlab(self, *args: str, ok: bool = True, cwd: Path | None = None, env: dict[str, str] | None = None):
        return run([bin_path("genlab"), *args], cwd or self.directory.parent, env or self.env, ok=ok)

    def state(self) -> dict:
        return json.loads((self.directory / "state.json").read_text())

    def client_env(self, mirror: Path) -> dict[str, str]:
        return {**stage_env(mirror), **self.exports, "GENLAB_STACK_DIR": str(self.directory)}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GENLAB_", "AWS_", "MLFLOW_", "DVC_"))}


@pytest.fixture(scope="module")
def stack():
    # Not under pytest's tmp_path: as root the stack runs PostgreSQL as the postgres account, which needs to reach
    # its directory, and pytest's are closed to other users (0700).
    base = Path(tempfile.mkdtemp(prefix="genlab-stack-"))
    base.chmod(0o755)
    handle = Stack(base / "stack", {**clean_env(), "GENLAB_STACK_DIR": str(base / "stack")})
    started = handle.genlab("stack", "up")
    print(f"genlab stack up (cold): {started.seconds:.1f} s")
    for line in handle.genlab("stack", "env").stdout.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        handle.exports[key] = value.strip("'")
    records = handle.state()["processes"]
    yield handle
    handle.genlab("stack", "down")
    for name, record in records.items():
        assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == "zombie", name
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mirror")
    return directory, make_idx_files(directory)


def mlflow_client(stack: Stack):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack.exports["GENLAB_TRACKING_URI"])


def runs_of(stack: Stack, experiment: str = "genlab") -> list:
    client = mlflow_client(stack)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def postgres_count(stack: Stack, sql: str, database: str = "mlflow") -> int:
    import psycopg2

    creds = json.loads((stack.directory / "credentials.json").read_text())
    port = stack.state()["ports"]["postgres"]
    with psycopg2.connect(host="127.0.0.1", port=port, user="genlab", password=creds["pg_password"],
                          dbname=database) as connection, connection.cursor() as cursor:  # fmt: skip
        cursor.execute(sql)
        return int(cursor.fetchone()[0])


def s3_keys(stack: Stack, prefix: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=stack.exports["AWS_ENDPOINT_URL"],
        aws_access_key_id=stack.exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.exports["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="genlab", Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_up_is_idempotent_and_status_and_env_describe_it(stack):
    before = stack.state()["processes"]
    again = stack.genlab("stack", "up")
    assert again.stderr.count("already running") == 3 and stack.state()["processes"] == before
    status = stack.genlab("stack", "status").stdout
    assert status.count("running (pid") == 3, status
    assert {"GENLAB_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "GENLAB_SWEEP_STORAGE"} <= set(
        stack.exports
    )
    assert stack.exports["GENLAB_SWEEP_STORAGE"].startswith("postgresql+psycopg2://genlab:")
    assert oct((stack.directory / "credentials.json").stat().st_mode & 0o777) == "0o600"


def test_a_port_in_use_or_a_cluster_of_another_version_is_refused_before_anything_starts(tmp_path):
    env = {**clean_env(), "GENLAB_STACK_DIR": str(tmp_path / "taken")}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run([bin_path("genlab"), "stack", "up", "--s3-port", str(port)], tmp_path, env, ok=False)
    line = one_error_line(result)
    assert f"--s3-port {port}: the port is in use by pid {os.getpid()}" in line, line
    assert not json.loads((tmp_path / "taken" / "state.json").read_text())["processes"] if (
        tmp_path / "taken" / "state.json").exists() else True  # fmt: skip

    old = tmp_path / "old" / "postgres" / "data"
    old.mkdir(parents=True)
    (old / "PG_VERSION").write_text("11\n")
    env["GENLAB_STACK_DIR"] = str(tmp_path / "old")
    result = run([bin_path("genlab"), "stack", "up"], tmp_path, env, ok=False)
    assert "holds a PostgreSQL 11 cluster and this machine runs PostgreSQL" in result.stderr, result.stderr
    assert "pg_upgrade" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "old" / "state.json").exists() or not json.loads(
        (tmp_path / "old" / "state.json").read_text())["processes"]  # fmt: skip


@pytest.fixture(scope="module")
def published(stack, mirror, tmp_path_factory):
    """A project whose tiny pipeline ran against the stack, committed and pushed (git: a bare origin; data: the
    stack's DVC remote)."""
    base = tmp_path_factory.mktemp("published")
    mirror_dir, sha = mirror
    origin = base / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], check=True)
    project = make_project(base / "project", tiny_params(sha, epochs=2, models=("gan", "vae")))
    env = stack.client_env(mirror_dir)
    repro = run([bin_path("dvc"), "repro"], project, env)
    print(f"tiny dvc repro logged to the stack: {repro.seconds:.1f} s")
    run([*GIT, "add", "-A"], project, env)
    run([*GIT, "commit", "-qm", "tiny run"], project, env)
    run(["git", "remote", "add", "origin", str(origin)], project, env)
    run(["git", "push", "-q", "origin", "HEAD:main"], project, env)
    pushed = stack.genlab("push", cwd=project, env=env)
    print(f"genlab push: {pushed.seconds:.1f} s")
    return project, origin, env


def test_the_pipeline_logs_runs_to_postgresql_and_artifacts_to_s3(stack, published):
    project, _, env = published
    runs = runs_of(stack)
    trained = {r.data.tags["genlab.model"]: r for r in runs if r.data.tags.get("genlab.stage") == "train"}
    assert {"gan", "vae"} <= set(trained)
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    client = mlflow_client(stack)
    steps = [m.step for m in client.get_metric_history(trained["gan"].info.run_id, "train/loss_d")]
    assert steps == [1, 2]
    evaluated = {r.data.tags["genlab.model"] for r in runs if r.data.tags.get("genlab.stage") == "evaluate"}
    assert {"gan", "vae"} <= evaluated
    # Where they are: the runs in PostgreSQL, their artifacts (images, history, the sampler) in the S3 bucket.
    assert postgres_count(stack, "SELECT count(*) FROM runs") == len(runs)
    keys = s3_keys(stack, "mlflow/")
    assert any(k.endswith("history/gan.csv") or "/history/" in k for k in keys), keys[:20]
    assert any("images" in k or k.endswith(".png") for k in keys)
    compare = stack.genlab("compare", cwd=project, env=env)
    assert (project / "reports" / "compare" / "report.md").exists(), compare.stdout


def test_a_second_clone_pulls_the_results_and_has_nothing_to_rerun(stack, published, tmp_path):
    _, origin, env = published
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    pulled = stack.genlab("pull", cwd=clone, env=env)
    print(f"genlab pull in a fresh clone: {pulled.seconds:.1f} s")
    repro = run([bin_path("dvc"), "repro"], clone, env)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "Data and pipelines are up to date." in run([bin_path("dvc"), "status"], clone, env).stdout
    run([bin_path("genlab"), "generate", "--model", "gan", "--n", "16", "--out", "pulled.png"], clone, env)
    assert (clone / "pulled.png").stat().st_size > 0


def test_experiments_travel_between_clones_with_dvc_exp_push_and_pull(stack, published, tmp_path):
    project, origin, env = published
    dvc = bin_path("dvc")
    run([dvc, "exp", "run", "--name", "travelling", "-S", "vae.lr=0.002", "train@vae"], project, env)
    run([dvc, "exp", "push", "origin", "travelling"], project, env)
    clone = tmp_path / "elsewhere"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    run([dvc, "exp", "pull", "origin", "travelling"], clone, env)
    assert "travelling" in run([dvc, "exp", "list", "--name-only"], clone, env).stdout
    run([dvc, "exp", "apply", "travelling"], clone, env)
    assert "vae.lr=0.002" not in run([dvc, "status", "train@vae"], clone, env).stdout
    assert yaml.safe_load((clone / "params.yaml").read_text())["vae"]["lr"] == 0.002
    assert "up to date" in run([dvc, "status", "train@vae"], clone, env).stdout


def test_queued_experiments_log_to_the_stack_at_once_and_lose_nothing(stack, published):
    project, _, env = published
    dvc = bin_path("dvc")
    before = {r.info.run_id for r in runs_of(stack)}
    run([dvc, "exp", "run", "--queue", "-S", "gan.lr=1e-4,3e-4", "train@gan"], project, env)
    status = run_queue(project, env, timeout=600)
    assert status.count("Success") == 2, status
    new = [r for r in runs_of(stack) if r.info.run_id not in before]
    assert len(new) == 2 and all(r.info.status == "FINISHED" for r in new)
    client = mlflow_client(stack)
    for r in new:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss_g")] == [1, 2]
    assert {r.data.params["gan.lr"] for r in new} == {"0.0001", "0.0003"}


def test_two_sweep_workers_share_one_study_in_postgresql(stack, published, tmp_path):
    _, origin, env = published
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "study": "tiny-vae", "model": "vae", "metric": "test_loss", "direction": "minimize", "trials": 4,
        "params": {"vae.lr": {"low": 5e-4, "high": 5e-3, "log": True}},
    }))  # fmt: skip
    workers = []
    for name in ("worker-a", "worker-b"):
        clone = tmp_path / name
        run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
        command = [bin_path("genlab"), "sweep", str(space), "--push", "origin"]
        workers.append((clone, subprocess.Popen(command, cwd=clone, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True)))  # fmt: skip
    t0 = time.monotonic()
    outputs = {clone.name: proc.communicate(timeout=900)[0] for clone, proc in workers}
    print(f"2-worker sweep, 4 trials: {time.monotonic() - t0:.1f} s")
    assert all(proc.returncode == 0 for _, proc in workers), "\n".join(o[-3000:] for o in outputs.values())

    import optuna

    study = optuna.load_study(study_name="tiny-vae", storage=stack.exports["GENLAB_SWEEP_STORAGE"])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 4 and all(t.state != optuna.trial.TrialState.FAIL for t in study.trials)
    names = {t.user_attrs["dvc_experiment"] for t in complete}
    # Both workers took trials, each trial is a DVC experiment in its worker's clone and on the git remote ...
    assert all(sum(f"trial {t.number}:" in out for t in complete) for out in outputs.values()), outputs
    pushed = run(["git", "ls-remote", str(origin), "refs/exps/*"], tmp_path, env).stdout
    assert all(name in pushed for name in names), (names, pushed)
    for clone, _ in workers:
        listed = run([bin_path("dvc"), "exp", "list", "--name-only"], clone, env).stdout.split()
        assert set(listed) <= names and listed
    # ... and has its MLflow runs, named for that experiment, with the trial's learning rate.
    tags = [(r, r.data.tags) for r in runs_of(stack)]
    trained = {
        t.get("genlab.experiment"): r
        for r, t in tags
        if t.get("genlab.model") == "vae" and t.get("genlab.stage") == "train"
    }
    for trial in complete:
        run_of_trial = trained[trial.user_attrs["dvc_experiment"]]
        assert float(run_of_trial.data.params["vae.lr"]) == pytest.approx(trial.params["vae.lr"])


def test_a_dead_server_or_a_missing_bucket_is_named_and_up_restores_it(stack, published, mirror):
    project, _, env = published
    mirror_dir, _ = mirror
    mlflow_record = stack.state()["processes"]["mlflow"]
    os.killpg(mlflow_record["pid"], 9)
    time.sleep(1)
    assert "stopped" in stack.genlab("stack", "status", ok=False).stdout
    line = one_error_line(run([bin_path("python"), "pipeline/train.py", "vae"], project, {**env, "PYTHONPATH": "src"},
                              ok=False))  # fmt: skip
    assert "no MLflow server answers" in line and stack.exports["GENLAB_TRACKING_URI"] in line
    restarted = stack.genlab("stack", "up")
    assert restarted.stderr.count("already running") == 2 and "mlflow: started" in restarted.stderr
    assert stack.state()["ports"]["mlflow"] == int(stack.exports["GENLAB_TRACKING_URI"].rsplit(":", 1)[1])

    import boto3

    s3 = boto3.client("s3", endpoint_url=stack.exports["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id=stack.exports["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=stack.exports["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    saved = {k: s3.get_object(Bucket="genlab", Key=k)["Body"].read() for k in s3_keys(stack, "")}
    for key in saved:
        s3.delete_object(Bucket="genlab", Key=key)
    s3.delete_bucket(Bucket="genlab")
    assert "bucket 'genlab' missing" in stack.genlab("stack", "status", ok=False).stdout
    assert "has no bucket 'genlab'" in one_error_line(stack.genlab("push", ok=False, cwd=project, env=env))
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-key"}
    stack.genlab("stack", "up")
    assert "refuses AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in one_error_line(
        stack.genlab("pull", ok=False, cwd=project, env=wrong))  # fmt: skip
    for key, body in saved.items():
        s3.put_object(Bucket="genlab", Key=key, Body=body)
    assert stack.genlab("stack", "status").returncode == 0


def test_dvc_pull_without_a_remote_is_an_error_not_up_to_date(stack, published, tmp_path):
    project, _, env = published
    bare = tmp_path / "bare"
    shutil.copytree(project, bare, ignore=shutil.ignore_patterns(".dvc"))
    (bare / ".dvc").mkdir()
    (bare / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    line = one_error_line(run([bin_path("genlab"), "pull"], bare, env, ok=False))
    assert "no default DVC remote in .dvc/config" in line
    unset = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    unset.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    line = one_error_line(run([bin_path("genlab"), "pull"], project, unset, ok=False))
    assert "no S3 credentials for DVC remote 'stack'" in line
