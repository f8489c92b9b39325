"""Bad input and hostile conditions, replayed against the real stage scripts in scratch projects.

Each case changes one thing (params.yaml, a GENLAB_* variable, a file), runs one stage and checks what a user
would: a non-zero exit, one line that names the key, variable or file, no traceback, no hang, no MLflow run left
RUNNING and no output written or changed. A few cases are conditions the stage recovers from (exit 0 with a line
that says what it did). GENLAB_FAULT_TABLE=<file> writes the replay table (docs/faults.md holds one).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genlab.data import write_idx

from .conftest import bin_path, make_idx_files, make_project, stage_env, tiny_params

pytestmark = pytest.mark.slow

OUTPUT_DIRS = ("data", "models", "outputs", "metrics", "figures")
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there
INF, NAN = float("inf"), float("nan")  # yaml.safe_dump writes them as .inf and .nan


@dataclass(frozen=True)
class Case:
    name: str
    stage: tuple[str, ...]  # pipeline/<stage[0]>.py with the rest as arguments
    expect: str  # what the message must say (the key, variable or file, and the problem)
    params: Callable[[dict], None] | None = None  # edits the parsed params.yaml
    text: Callable[[str], str] | None = None  # edits params.yaml's text (what YAML parsing would hide)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Path], None] | None = None  # file changes in the project, before the stage runs
    recovers: bool = False  # the stage copes (exit 0) and says how
    timeout: float = 120


def edit(section: str, key: str | None, value) -> Callable[[dict], None]:
    """Set params[section][key] (params[section] when key is None)."""

    def change(params: dict) -> None:
        if key is None:
            params[section] = value
        else:
            params[section][key] = value

    return change


def delete(*keys: str) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        target = params
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


def replace_file(relative: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        path = project / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)

    return setup


def mirror_file(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    """Replace the mirror's copy of `name` (the project's own mirror, see prepared())."""
    return replace_file(f"mirror/{name}.gz", make)


def gzip_bomb(path: Path) -> None:
    """A valid gzip of a training-image IDX header for 10 images, then 512 MiB of zeros (about 0.5 MB on disk)."""
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunks = [deflate.compress(header)]
    zeros = bytes(1 << 24)
    chunks += [deflate.compress(zeros) for _ in range(32)]
    path.write_bytes(b"".join([*chunks, deflate.flush()]))


def nan_weights(path: Path) -> None:
    state = torch.load(path.with_name("gan.pt.good"), weights_only=True)
    next(iter(state["model"].values())).fill_(float("nan"))
    torch.save(state, path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def truncate_half(project: Path) -> None:
    path = project / "mirror" / "t10k-images-idx3-ubyte.gz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def corrupt_state(project: Path) -> None:
    """Put half a zip where the gan's resumable checkpoint lives (the name the stage prints on resume)."""
    from genlab.experiment import config_key

    config = json.loads((project / "gan_config.json").read_text())
    state = project / ".genlab" / "state" / f"gan-{config_key(config)}.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(b"PK\x03\x04 half a zip")


CASES = [
    # params.yaml
    Case("gan.lr: .inf", ("train", "gan"), "gan.lr = inf: Input should be a finite number", edit("gan", "lr", INF)),
    Case("vae.lr: .nan", ("train", "vae"), "vae.lr = nan: Input should be a finite number", edit("vae", "lr", NAN)),
    Case("vae.lr: 1e4", ("train", "vae"), "vae.lr = 10000.0: Input should be less than or equal to 1",
         edit("vae", "lr", 1e4)),
    Case("gan.lr: 1e6", ("train", "gan"), "gan.lr = 1000000.0: Input should be less than or equal to 1",
         edit("gan", "lr", 1e6)),
    Case("vae.lr: 0.9 (diverges)", ("train", "vae"), "vae diverged in epoch 1", edit("vae", "lr", 0.9)),
    Case("gan.epochs deleted", ("train", "gan"), "missing gan.epochs (default 100)", delete("gan", "epochs")),
    Case("gan: section deleted", ("train", "gan"), "missing gan (a whole section)", delete("gan")),
    Case("params.yaml empty", ("train", "gan"), "params.yaml: the file is empty", text=lambda t: ""),
    Case("two gan: sections", ("train", "gan"), "key 'gan' appears twice", text=lambda t: t + "gan:\n  epochs: 3\n"),
    Case("unknown top-level key", ("train", "gan"), "unknown key 'trainer'", text=lambda t: t + "trainer: 1\n"),
    Case("render.epochs: []", ("render", "gan"), "render.epochs = []: List should have at least 1 item",
         edit("render", "epochs", [])),
    Case("gan.num_fixed_samples: 1e9", ("train", "gan"), "gan.num_fixed_samples = 1000000000.0: Input should be less",
         edit("gan", "num_fixed_samples", 1e9)),
    Case("gan.batch_size: 1e9", ("train", "gan"), "gan.batch_size = 1000000000.0: Input should be less",
         edit("gan", "batch_size", 1e9)),
    Case("gan.batch_size above the data", ("train", "gan"), "gan.batch_size = 5000 is more than the 300 training",
         edit("gan", "batch_size", 5000)),
    Case("classifier.batch_size above the data", ("train_classifier",), "classifier.batch_size = 5000 is more than",
         edit("classifier", "batch_size", 5000)),
    Case("evaluate.num_samples above the data (floor)", ("evaluate", "real"), "evaluate.num_samples = 5000 is more",
         edit("evaluate", "num_samples", 5000)),
    Case("paths.figures: ../../escape", ("render", "gan"), "paths.figures = '../../escape': must be a relative path",
         edit("paths", "figures", "../../escape")),
    Case("paths.model_dir absolute", ("train", "gan"), "paths.model_dir = '/tmp/genlab-models': must be a relative",
         edit("paths", "model_dir", "/tmp/genlab-models")),
    Case("seed: -1", ("train", "gan"), "seed = -1: Input should be greater than or equal to 0", edit("seed", None, -1)),
    Case("YAML syntax error", ("train", "gan"), "params.yaml: not valid YAML", text=lambda t: t + "gan: [\n"),
    Case("unknown kind", ("train", "gan"), "unknown model kind 'dcgan'", edit("models", "gan", "dcgan")),
    Case("gan.variant misspelt", ("train", "gan"), "variant 'stabel' is not defined", edit("gan", "variant", "stabel")),
    Case("model not in models", ("train", "nope"), "'nope' is not in params.yaml's models"),
    # environment
    Case("GENLAB_THREADS=-1", ("train", "gan"), "GENLAB_THREADS = '-1': Input should be greater than or equal to 0",
         env={"GENLAB_THREADS": "-1"}),
    Case("GENLAB_DEVICE=tpu", ("train", "gan"), "GENLAB_DEVICE = 'tpu': Input should be 'cpu' or 'cuda'",
         env={"GENLAB_DEVICE": "tpu"}),
    Case("GENLAB_DEVICE=cuda without a GPU", ("train", "gan"), "GENLAB_DEVICE=cuda but no CUDA device is visible",
         env={"GENLAB_DEVICE": "cuda", "CUDA_VISIBLE_DEVICES": ""}),
    Case("GENLAB_CHECKPOINT_EVERY=0", ("train", "gan"), "GENLAB_CHECKPOINT_EVERY = '0': Input should be greater",
         env={"GENLAB_CHECKPOINT_EVERY": "0"}),
    Case("GENLAB_OFFLINE=maybe", ("download",), "GENLAB_OFFLINE = 'maybe': Input should be a valid boolean",
         env={"GENLAB_OFFLINE": "maybe"}),
    Case("GENLAB_CPU_PINS=on", ("train", "gan"), "GENLAB_CPU_PINS='on' is not valid", env={"GENLAB_CPU_PINS": "on"}),
    Case("GENLAB_TRACKING_URI without a scheme", ("train", "gan"), "GENLAB_TRACKING_URI = '127.0.0.1:5000': not a",
         env={"GENLAB_TRACKING_URI": "127.0.0.1:5000"}),
    Case("tracking server unreachable (train)", ("train", "gan"),
         "GENLAB_TRACKING_URI=http://127.0.0.1:9: no MLflow server answers", env={"GENLAB_TRACKING_URI": UNREACHABLE},
         timeout=15),
    Case("tracking server unreachable (evaluate)", ("evaluate", "gan"),
         "GENLAB_TRACKING_URI=http://127.0.0.1:9: no MLflow server answers", env={"GENLAB_TRACKING_URI": UNREACHABLE},
         timeout=15),
    Case("mlflow.db is not a database", ("train", "gan"), "cannot be used", setup=replace_file(
        "mlflow.db", lambda p: p.write_bytes(b"not sqlite" * 100))),
    # the data mirror
    Case("GENLAB_DATA_MIRROR does not exist", ("download",), "GENLAB_DATA_MIRROR=/nonexistent/mirror does not exist",
         env={"GENLAB_DATA_MIRROR": "/nonexistent/mirror"}),
    Case("mirror lacks a file", ("download",), "has neither train-labels-idx1-ubyte.gz nor train-labels-idx1-ubyte",
         setup=lambda p: (p / "mirror" / "train-labels-idx1-ubyte.gz").unlink()),
    Case("a FIFO in the mirror", ("download",), "train-images-idx3-ubyte.gz: not a regular file",
         setup=mirror_file("train-images-idx3-ubyte", lambda p: os.mkfifo(p)), timeout=60),
    Case("a device in the mirror", ("download",), "train-images-idx3-ubyte.gz: not a regular file",
         setup=mirror_file("train-images-idx3-ubyte", lambda p: p.symlink_to("/dev/zero")), timeout=60),
    Case("a directory in the mirror", ("download",), "train-images-idx3-ubyte.gz: not a regular file",
         setup=mirror_file("train-images-idx3-ubyte", lambda p: p.mkdir())),
    Case("gzip bomb (512 MiB of zeros)", ("download",), "decompresses to more than the 7856 bytes its IDX header",
         setup=mirror_file("train-images-idx3-ubyte", gzip_bomb), timeout=60),
    Case("truncated gzip", ("download",), "t10k-images-idx3-ubyte.gz: truncated gzip", setup=truncate_half),
    Case("another dataset's file", ("download",), "t10k-labels-idx1-ubyte.gz: SHA-256 of the decompressed file is",
         setup=mirror_file("t10k-labels-idx1-ubyte", lambda p: p.write_bytes(gzip.compress(write_idx(
             np.zeros(100, dtype=np.uint8)))))),
    # files the stages read
    Case("prepared data deleted", ("train", "gan"), "data/prepared/train-images-idx3-ubyte is missing: run the",
         setup=lambda p: shutil.rmtree(p / "data" / "prepared")),
    Case("classifier checkpoint deleted", ("train", "gan"), "models/classifier.pt is missing",
         setup=lambda p: (p / "models" / "classifier.pt").unlink()),
    Case("model checkpoint truncated", ("evaluate", "gan"), "models/gan.pt is not a readable checkpoint",
         setup=replace_file("models/gan.pt", lambda p: p.write_bytes(p.with_name("gan.pt.good").read_bytes()[:5000]))),
    Case("model checkpoint with NaN weights", ("evaluate", "gan"), "models/gan.pt holds 512 non-finite weights",
         setup=replace_file("models/gan.pt", nan_weights)),
    Case("model checkpoint that runs code", ("evaluate", "gan"), "models/gan.pt is not a readable checkpoint",
         setup=replace_file("models/gan.pt", lambda p: p.write_bytes(pickle.dumps(Exploit())))),
    Case("snapshots deleted", ("render", "gan"), "outputs/gan_snapshots.pt is missing",
         setup=lambda p: (p / "outputs" / "gan_snapshots.pt").unlink()),
    Case("render epoch never trained", ("render", "gan"), "render.epochs [5] exceed the epochs trained",
         edit("render", "epochs", [1, 5])),
    # conditions a stage recovers from
    Case("corrupt resume checkpoint", ("train", "gan"), "cannot resume: .genlab/state/gan-", recovers=True,
         setup=lambda p: corrupt_state(p)),
    Case("bad value under dvc repro", ("dvc", "repro", "train@gan"), "dvc checkout train@gan",
         edit("gan", "batch_size", 5000)),
]  # fmt: skip


@dataclass
class Outcome:
    case: Case
    exit_code: int | None  # None: it hung (killed at the case's timeout)
    seconds: float
    message: str  # the line naming the problem
    traceback: bool
    running_runs: int
    changed: list[str]  # outputs written or changed by a failing stage
    outside: bool  # something written outside the project

    @property
    def verdict(self) -> str:
        if self.exit_code is None:
            return "hang"
        if self.exit_code < 0 or self.traceback:
            return "crash"
        if self.running_runs:
            return "run left RUNNING"
        if self.case.recovers:
            return "recovered" if self.exit_code == 0 and self.case.expect in self.message else "wrong"
        if self.exit_code == 0:
            return "accepted silently"
        if self.changed or self.outside:
            return "partial output"
        return "rejected clearly" if self.case.expect in self.message else "unclear message"


RESULTS: list[Outcome] = []


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A scratch project with the tiny dataset downloaded, the classifier trained and gan trained for 2 epochs."""
    root = tmp_path_factory.mktemp("faults")
    sha = make_idx_files(root / "project" / "mirror")
    params = tiny_params(sha, epochs=2)
    project = make_project(root / "project", params)
    env = {**stage_env(project / "mirror"), "PYTHONPATH": "src"}
    for stage in (["download"], ["train_classifier"], ["train", "gan"]):
        done = subprocess.run(
            [sys.executable, f"pipeline/{stage[0]}.py", *stage[1:]], cwd=project, env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()[-3000:]
    shutil.copy2(project / "models" / "gan.pt", project / "models" / "gan.pt.good")
    # The config gan's resumable checkpoint is named by (corrupt_state).
    state = torch.load(project / "models" / "gan.pt", weights_only=True)
    (project / "gan_config.json").write_text(json.dumps(state["config"]))
    return project


def tree_digest(project: Path) -> dict[str, str]:
    digest = {}
    for top in OUTPUT_DIRS:
        for path in sorted((project / top).rglob("*")):
            if path.is_file() and not path.name.endswith(".good"):
                digest[str(path.relative_to(project))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def running_runs(project: Path) -> int:
    db = project / "mlflow.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0  # the case broke the database on purpose


def replay(case: Case, prepared: Path, work: Path) -> Outcome:
    project = work / "project"
    shutil.copytree(prepared, project, symlinks=True)
    params_file = project / "params.yaml"
    if case.params is not None:
        params = yaml.safe_load(params_file.read_text())
        case.params(params)
        params_file.write_text(
            yaml.safe_dump(params, sort_keys=False).replace("'INF'", ".inf").replace("'NAN'", ".nan")
        )
    if case.text is not None:
        params_file.write_text(case.text(params_file.read_text()))
    if case.setup is not None:
        case.setup(project)
    before = tree_digest(project)
    outside_before = set(work.iterdir())
    env = {**stage_env(project / "mirror"), "PYTHONPATH": "src", **case.env}
    if case.stage[0] == "dvc":
        command = [bin_path("dvc"), *case.stage[1:]]
    else:
        command = [sys.executable, f"pipeline/{case.stage[0]}.py", *case.stage[1:]]
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=case.timeout)
        exit_code, stderr, stdout = done.returncode, done.stderr, done.stdout
    except subprocess.TimeoutExpired as e:
        exit_code, stderr, stdout = None, (e.stderr or b"").decode(), (e.stdout or b"").decode()
    seconds = time.monotonic() - start
    lines = [ln.strip() for ln in (stderr + stdout).splitlines() if ln.strip()]
    named = [ln for ln in lines if case.expect in ln]
    message = named[0] if named else next((ln for ln in reversed(lines) if ln.startswith("genlab")), lines[-1:] or "")
    changed = [] if case.recovers else [k for k, v in tree_digest(project).items() if before.get(k) != v]
    return Outcome(
        case=case,
        exit_code=exit_code,
        seconds=seconds,
        message=str(message),
        traceback="Traceback (most recent call last)" in stderr,
        running_runs=running_runs(project),
        changed=changed,
        outside=set(work.iterdir()) != outside_before
        or (work.parent / "escape").exists()  # paths.figures: ../../escape
        or (project / "pwned").exists(),  # the pickle's code ran
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_early_with_one_named_line_and_leaves_nothing_wrong(case, prepared, tmp_path):
    outcome = replay(case, prepared, tmp_path)
    RESULTS.append(outcome)
    expected = "recovered" if case.recovers else "rejected clearly"
    assert outcome.verdict == expected, (outcome.verdict, outcome.message, outcome.changed)


def test_write_the_replay_table():
    """GENLAB_FAULT_TABLE=<file>: the replay's table, for docs/faults.md and closing notes (runs last)."""
    out = os.environ.get("GENLAB_FAULT_TABLE")
    if not out or not RESULTS:
        pytest.skip("GENLAB_FAULT_TABLE not set, or no case ran")
    counts: dict[str, int] = {}
    rows = ["| input | stage | exit | seconds | message | left behind |", "|---|---|---|---|---|---|"]
    for o in RESULTS:
        counts[o.verdict] = counts.get(o.verdict, 0) + 1
        left = ", ".join(o.changed) or ("RUNNING run" if o.running_runs else "nothing")
        message = o.message.replace("|", "\\|")
        exit_code = "hung" if o.exit_code is None else str(o.exit_code)
        rows.append(
            f"| {o.case.name} | {' '.join(o.case.stage)} | {exit_code} | {o.seconds:.1f} | {message} | {left} |"
        )
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    Path(out).write_text(f"{len(RESULTS)} cases: {summary}\n\n" + "\n".join(rows) + "\n")


# -- kills and a tracking server that goes away: real processes, a few seconds of training each ----------------------


def scratch(tmp_path: Path, epochs: int) -> tuple[Path, dict[str, str]]:
    """A project with data and classifier ready, gan set to train `epochs` epochs on 3000 tiny images."""
    sha = make_idx_files(tmp_path / "mirror", n_train=3000, n_test=100)
    project = make_project(tmp_path / "project", tiny_params(sha, epochs=epochs, models=("gan",)))
    env = {**stage_env(tmp_path / "mirror"), "PYTHONPATH": "src"}
    for stage in ("download", "train_classifier"):
        subprocess.run([sys.executable, f"pipeline/{stage}.py"], cwd=project, env=env, check=True, capture_output=True)
    return project, env


def start_and_wait(command: list[str], project: Path, env: dict[str, str], ready: Callable[[], bool]):
    proc = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the stage ended before the moment the test needed"
    return proc


def runs_of(db: Path, model: str) -> list[tuple[str, str]]:
    """(run id, status) of the training runs of `model` in a SQLite store."""
    with sqlite3.connect(db) as con:
        return con.execute(
            "select runs.run_uuid, status from runs join tags on tags.run_uuid = runs.run_uuid"
            " where tags.key = 'genlab.model' and tags.value = ?",
            (model,),
        ).fetchall()


@pytest.mark.e2e
def test_a_kill_before_the_first_checkpoint_and_a_sigterm_leave_one_run_that_the_rerun_finishes(tmp_path):
    project, env = scratch(tmp_path, epochs=4)
    state = project / ".genlab" / "state"
    train = [sys.executable, "pipeline/train.py", "gan"]

    # kill -9 once the run exists but before any checkpoint: formerly a RUNNING run for ever, and a second beside it.
    proc = start_and_wait(train, project, env, lambda: any(state.glob("gan-*.run.json")))
    proc.kill()
    proc.communicate()
    assert not list(state.glob("gan-*.pt")), "a checkpoint was written before the kill; the test proves nothing"
    ((killed, status),) = runs_of(project / "mlflow.db", "gan")
    assert status == "RUNNING"

    # SIGTERM after the first checkpoint: the run is marked KILLED at once, the stage exits 130.
    proc = start_and_wait(train, project, env, lambda: any(state.glob("gan-*.pt")))
    proc.terminate()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "genlab train@gan: interrupted" in stderr, stderr
    assert runs_of(project / "mlflow.db", "gan") == [(killed, "KILLED")]  # the same run, continued, then stopped

    done = subprocess.run(train, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout
    assert runs_of(project / "mlflow.db", "gan") == [(killed, "FINISHED")]
    with sqlite3.connect(project / "mlflow.db") as con:
        steps = con.execute(
            "select step from metrics where run_uuid = ? and key = 'time/epoch_seconds' order by step", (killed,)
        ).fetchall()
    assert [s for (s,) in steps] == [1, 2, 3, 4]  # each epoch logged once, though some ran twice


@pytest.mark.e2e
def test_a_killed_classifier_stage_restarts_in_its_own_run(tmp_path):
    sha = make_idx_files(tmp_path / "mirror", n_train=3000, n_test=100)
    project = make_project(tmp_path / "project", tiny_params(sha, models=("gan",)))
    env = {**stage_env(tmp_path / "mirror"), "PYTHONPATH": "src"}
    subprocess.run([sys.executable, "pipeline/download.py"], cwd=project, env=env, check=True, capture_output=True)
    command = [sys.executable, "pipeline/train_classifier.py"]
    ledger = project / ".genlab" / "state" / "classifier.run.json"
    proc = start_and_wait(command, project, env, ledger.exists)
    proc.kill()
    proc.communicate()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ((_, status),) = runs_of(project / "mlflow.db", "classifier")
    assert status == "FINISHED" and not ledger.exists()


@pytest.mark.e2e
def test_a_tracking_server_that_dies_mid_run_fails_the_stage_and_the_rerun_resumes_the_same_run(tmp_path):
    from genlab.tracking import mlflow_server

    project, env = scratch(tmp_path, epochs=30)
    backend, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts"
    state = project / ".genlab" / "state"
    train = [sys.executable, "pipeline/train.py", "gan"]
    server = mlflow_server(backend, artifacts_destination=artifacts, cwd=tmp_path)
    url = server.__enter__()
    env = {**env, "GENLAB_TRACKING_URI": url}
    proc = start_and_wait(train, project, env, lambda: any(state.glob("gan-*.pt")))
    server.__exit__(None, None, None)  # the server goes away after the first checkpoint
    start = time.monotonic()
    _, stderr = proc.communicate(timeout=300)
    waited = time.monotonic() - start
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr
    assert f"GENLAB_TRACKING_URI={url} failed while logging" in stderr and "rerun the stage" in stderr, stderr
    assert waited < 120, f"{waited:.0f} s to give up"
    assert any(state.glob("gan-*.pt")), "the training state must survive for the rerun"

    port = int(url.rsplit(":", 1)[1])
    with mlflow_server(backend, artifacts_destination=artifacts, cwd=tmp_path, port=port):
        done = subprocess.run(train, cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stdout
    ((_, status),) = runs_of(tmp_path / "server.db", "gan")
    assert status == "FINISHED"
