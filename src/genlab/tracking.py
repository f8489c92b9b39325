"""MLflow tracking. The only module of genlab that imports mlflow (sampler_pyfunc.py, which MLflow loads as a
logged model's code, is never imported by genlab).

Layout: SQLite backend `<repo root>/mlflow.db`, artifacts under `<repo root>/mlruns/`, both absolute, so
`mlflow ui` in the repo root shows every run, also those of `dvc exp run --temp/--queue`, which run stages
in a temporary copy but set DVC_ROOT to the original repository.

Nothing here writes into DVC-tracked files: run IDs stay in MLflow.

One identity per run. A training stage starts a run and ends it; it is never re-opened. The render and evaluate
stages each start a run of their own, a child of the training run that made their checkpoint (found by the
checkpoint's SHA-256, the tag `genlab.checkpoint_sha256`), named for the DVC experiment they ran in. Two
experiments that share a cached model therefore each keep their own evaluation, and every duration is true.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from genlab.errors import TrackingUnavailable

EXPERIMENT_DEFAULT = "genlab"
TAG_MODEL = "genlab.model"  # the model's name in params.yaml (gan, cgan, ...)
TAG_KIND = "genlab.kind"  # its kind: the package under genlab/models (gan, vae, ...)
TAG_CHECKPOINT = "genlab.checkpoint_sha256"
TAG_STAGE = "genlab.stage"  # train, render or evaluate: the DVC stage that made the run
TAG_EXPERIMENT = "genlab.experiment"  # the DVC experiment's name, or the short commit (experiment_label)
TAG_TRAIN_RUN = "genlab.train_run_id"  # on render and evaluate runs: the run that trained their checkpoint
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: the UI nests a child run under its parent
TAG_PROCESS = "genlab.process"  # host:pid:start time of the process running it (see Tracker.end_orphaned_runs)
TAG_FAILURE = "genlab.failure"  # why a FAILED or KILLED run ended, in one line

# MLflow's HTTP client retries a failed request 7 times with a backoff factor of 2 and a 120 s timeout: 4-5 minutes
# before a stage learns that its server is gone. genlab checks the server before any work (check_tracking_store)
# and rides out a short outage mid-run with these instead (about 15 s of retries, then the run stays resumable).
# A value set in the environment wins.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
PREFLIGHT_TIMEOUT_S = 5.0


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    *,
    cwd: Path | None = None,
    artifacts_destination: Path | None = None,
    timeout: float = 90,
    port: int = 0,
) -> Iterator[str]:
    """The real `mlflow server` (this environment's) on a loopback port (0: a free one) while the block runs;
    yields its URL.

    Raises RuntimeError with the server's last output when it does not answer /health within `timeout` seconds.
    """
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", backend_store_uri]  # fmt: skip
    if artifacts_destination is not None:
        command += ["--artifacts-destination", str(artifacts_destination)]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while health_problem(url, timeout=2) is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                stderr = proc.communicate()[1] or ""
                raise RuntimeError(f"mlflow server at {url} did not start:\n{stderr[-2000:]}") from None
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def health_problem(url: str, timeout: float) -> str | None:
    """None when the MLflow server at `url` answers its /health endpoint with 200 within `timeout` seconds; else
    why not (an HTTP status, connection refused, a timeout)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:  # noqa: S310
            return None if response.status == 200 else f"HTTP {response.status}"
    except OSError as e:  # URLError, connection refused, timeout
        return str(getattr(e, "reason", e))


def check_tracking_store(uri: str, named: str) -> None:
    """Fail fast, before any work, when a tracking server does not answer its /health endpoint within
    PREFLIGHT_TIMEOUT_S. `named`: how the message names the store (GENLAB_TRACKING_URI=<uri>). Other stores are
    checked by their first use (Tracker.__init__)."""
    if not uri.startswith(("http://", "https://")):
        return
    reason = health_problem(uri, timeout=PREFLIGHT_TIMEOUT_S)
    if reason is None:
        return
    raise TrackingUnavailable(
        f"{named}: no MLflow server answers ({reason}). Start it, check the address and port, or unset"
        " GENLAB_TRACKING_URI to log to mlflow.db in the repository."
    )


def process_tag() -> str:
    """This process as host:pid:start time; the start time tells a reused pid from the process that had it."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.2f}"


def process_alive(tag: str) -> bool | None:
    """Whether the process a TAG_PROCESS value names is still running; None if it ran on another host."""
    import psutil

    host, pid, started = tag.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" == started
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """A Ctrl-C or SIGTERM that arrives while a run's end is written takes effect once it is written: raised in
    the middle of the write, it would leave the run RUNNING (seen under torchrun, which SIGTERMs rank 0 just as
    rank 0 marks its run FAILED for a peer that died). A second signal acts at once: the user insists, and the
    next stage's start marks the run KILLED (Tracker.end_orphaned_runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def defer(signum: int, frame: object) -> None:
        if caught:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}, twice")
        caught.append(signum)

    previous = {s: signal.signal(s, defer) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            raise KeyboardInterrupt(f"signal {signal.Signals(caught[0]).name}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.splitlines()[0].split())[:300]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def repo_root() -> Path:
    """The original repository: DVC_ROOT under `dvc repro` / `dvc exp run`, else the git top level, else cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return Path(top).resolve()
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd().resolve()


def default_tracking_uri(root: Path) -> str:
    # timeout: how long a writer waits for SQLite's lock before "database is locked". Python's default of 5 s
    # is too short when several DVC experiments (`dvc queue start -j N`) log to one database.
    return f"sqlite:///{root / 'mlflow.db'}?timeout=60"


@contextmanager
def _sqlite_init_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise first contact with a SQLite store: creating a fresh database runs schema migrations, and two
    processes migrating at once can fail. A no-op for other backends."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def git_tags(cwd: Path | None = None, outputs: Sequence[str] = ()) -> dict[str, str]:
    """git.commit and git.dirty of the working copy the stage runs in (the temporary copy under dvc exp). Changes to
    `outputs` (files the pipeline itself writes, PathsConfig.git_tracked_outputs) do not count as dirty: otherwise
    the first stage of a `dvc repro` would make every later run of it look uncommitted."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=cwd).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        excluded = [f":(exclude){p}" for p in outputs]
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded))
    except (OSError, subprocess.CalledProcessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def dvc_tags() -> dict[str, str]:
    tags = {}
    for var, tag in (
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev"),
        ("DVC_STAGE", "dvc.stage"),
    ):
        if os.environ.get(var):
            tags[tag] = os.environ[var]
    return tags


def commit_label(commit: str) -> str:
    """A commit as run names and the tag genlab.experiment spell it: its first 7 hex digits."""
    return commit[:7]


def experiment_label(cwd: Path | None = None, outputs: Sequence[str] = (), git: Mapping[str, str] | None = None) -> str:
    """What a run belongs to: the DVC experiment's name under `dvc exp run`, else the short commit ('+dirty' with
    uncommitted edits of tracked files other than `outputs`, see git_tags). `git`: git_tags' answer, when the
    caller has it already (each call runs git twice)."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    git = git_tags(cwd, outputs) if git is None else git
    if git["git.commit"] == "unknown":
        return "no-git"
    return commit_label(git["git.commit"]) + ("+dirty" if git["git.dirty"] == "true" else "")


def run_title(model: str, variant: str | None, experiment: str, stage: str | None = None) -> str:
    """'gan-stable · brisk-lamb', '<model>[-<variant>] · <experiment>[ · <stage>]': distinct in the run list."""
    return " · ".join([f"{model}-{variant}" if variant else model, experiment, *([stage] if stage else [])])


class Tracker:
    """A thin wrapper over one MLflow experiment. Construct once per stage."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT_DEFAULT, root: Path | None = None):
        """Connect to the store (GENLAB_TRACKING_URI's `tracking_uri`, or <root>/mlflow.db) and its experiment.
        Raises TrackingUnavailable within seconds when the store cannot be reached or read: construct it before a
        stage does any work."""
        for var, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(var, value)
        self.root = (root or repo_root()).resolve()
        self.tracking_uri = tracking_uri or default_tracking_uri(self.root)
        # How messages name the store: the variable that chose it, or what it is.
        self.named = (
            f"GENLAB_TRACKING_URI={tracking_uri}" if tracking_uri else f"the tracking store {self.tracking_uri}"
        )
        check_tracking_store(self.tracking_uri, self.named)
        try:
            self._connect(experiment)
        except Exception as e:  # MLflow's and its database driver's: the store exists but cannot be used
            raise TrackingUnavailable(
                f"{self.named} cannot be used: {_first_line(e)}. Check that it is a readable,"
                " writable MLflow store, or point GENLAB_TRACKING_URI at another."
            ) from e

    def _connect(self, experiment: str) -> None:
        import mlflow

        # Four INFO lines per run from the system-metrics monitor (started, no GPU, stopping, stopped) and one from
        # the input-example check: routine, and in every stage's output. Warnings and errors still show.
        for noisy in ("mlflow.system_metrics", "mlflow.pyfunc"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._mlflow = mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        with _sqlite_init_lock(self.tracking_uri):
            if mlflow.get_experiment_by_name(experiment) is None:
                location = None  # a tracking server chooses its own artifact store
                if self.tracking_uri.startswith("sqlite:"):
                    artifacts = (self.root / "mlruns" / experiment).resolve()
                    artifacts.mkdir(parents=True, exist_ok=True)
                    location = artifacts.as_uri()
                # MLflow 3.17's UI ignores this tag (its sidebar switch, default GenAI, decides the view; `genlab
                # ui` opens the model-training view by URL), but it says what the experiment is to later UIs.
                kind = {"mlflow.experimentKind": "custom_model_development"}
                mlflow.create_experiment(experiment, artifact_location=location, tags=kind)
            self.experiment = mlflow.set_experiment(experiment)

    @contextmanager
    def run(
        self,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        description: str | None = None,
        parent_run_id: str | None = None,
        system_metrics: bool = False,
        ledger: Path | None = None,
    ) -> Iterator[str]:
        """Start a run; yields its id.

        ledger: a file that holds the run's id while it lasts. A run that did not finish (killed, failed, its store
        lost) is continued, not duplicated, by the next run with the same ledger; the ledger is removed when the
        run finishes. A continued run keeps its name; logged_params and logged_steps tell what it has logged.

        The run always ends in a true state: FINISHED when the body returns, KILLED on Ctrl-C or SIGTERM
        (genlab.entry turns SIGTERM into KeyboardInterrupt), FAILED on an exception, with the reason in the tag
        genlab.failure. A run whose process died without ending it (kill -9) is marked KILLED by the next stage
        that starts one (end_orphaned_runs). When the tracking store itself fails, the exception becomes
        TrackingUnavailable and the run is left for a rerun to resume.

        parent_run_id nests it under that run (the tag mlflow.parentRunId), leaving the parent as it is.
        system_metrics: CPU, memory, disk and network (and GPU, where nvidia-ml-py is installed) sampled into
        system/* metrics while the run lasts."""
        if system_metrics and "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" not in os.environ:
            # MLflow's default, 10 s, leaves a run shorter than that with no samples (the monitor publishes only
            # while the run is active); 5 s costs a few hundred rows per hour.
            self._mlflow.set_system_metrics_sampling_interval(5)
        try:
            run_id = self.unfinished_run(ledger) if ledger is not None else None
            self.end_orphaned_runs(keep=run_id)
            active = self._mlflow.start_run(
                run_id=run_id,
                run_name=None if run_id else run_name,
                experiment_id=self.experiment.experiment_id,
                tags={**dict(tags or {}), TAG_PROCESS: process_tag()},
                description=description,
                parent_run_id=parent_run_id,  # read only: a finished parent keeps its status and end time
                log_system_metrics=system_metrics,
            )
        except Exception as e:
            raise self.unavailable(e, "starting a run") from e
        if ledger is not None:
            from genlab.io import atomic_write_json

            atomic_write_json(ledger, {"run_id": active.info.run_id})
        try:
            yield active.info.run_id
        except KeyboardInterrupt as e:
            self._end("KILLED", f"interrupted ({_first_line(e) if str(e) else 'Ctrl-C'})")
            raise
        except TrackingUnavailable:
            self._end("FAILED", None)
            raise
        except Exception as e:
            if self._is_tracking_failure(e):
                self._end("FAILED", None)
                raise self.unavailable(e, "logging") from e
            self._end("FAILED", _first_line(e))
            raise
        except BaseException as e:  # SystemExit from a stage
            self._end("FAILED", _first_line(e))
            raise
        else:
            try:
                with _interrupts_deferred():
                    self._mlflow.end_run("FINISHED")
                    if ledger is not None:  # with the end: a FINISHED run is never resumed
                        ledger.unlink(missing_ok=True)
            except Exception as e:
                raise self.unavailable(e, "ending the run") from e

    def _end(self, status: str, reason: str | None) -> None:
        """End the active run as `status`, noting `reason`. Best effort when the store is what failed: MLflow
        drops the run from its stack first, so nothing retries at exit, and the next run of the stage resumes it
        or marks it KILLED."""
        try:
            with _interrupts_deferred():
                if reason is not None:
                    self._mlflow.set_tag(TAG_FAILURE, reason)
                self._mlflow.end_run(status)
        except Exception as e:
            if not self._is_tracking_failure(e):
                raise
            print(
                f"genlab: could not mark the run {status} ({_first_line(e)}); a rerun resumes or marks it",
                file=sys.stderr,
            )

    def _is_tracking_failure(self, e: BaseException) -> bool:
        """MLflow's errors: its HTTP client raises MlflowException once its retries are spent, and its SQL store
        wraps the database's errors in one."""
        from mlflow.exceptions import MlflowException

        return isinstance(e, MlflowException)

    def unavailable(self, e: BaseException, doing: str) -> TrackingUnavailable:
        return TrackingUnavailable(
            f"{self.named} failed while {doing}: {_first_line(e)}. Training state is kept:"
            " once the store answers again, rerun the stage (dvc repro) to resume the same run."
        )

    def end_orphaned_runs(self, keep: str | None = None) -> list[str]:
        """Mark KILLED the RUNNING runs of this experiment whose process, on this host, is gone (kill -9, out of
        memory, a power cut): they would otherwise stay RUNNING for ever. Runs of other hosts are left alone;
        they are theirs to mark. `keep`: a run about to be resumed. Returns the ids marked."""
        client = self._mlflow.MlflowClient()
        runs = client.search_runs(
            [self.experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
        marked = []
        for run in runs:
            tag = run.data.tags.get(TAG_PROCESS)
            if run.info.run_id == keep or tag is None or process_alive(tag) is not False:
                continue
            client.set_tag(run.info.run_id, TAG_FAILURE, f"its process ({tag}) ended without ending the run (killed)")
            client.set_terminated(run.info.run_id, "KILLED")
            marked.append(run.info.run_id)
        return marked

    def unfinished_run(self, ledger: Path) -> str | None:
        """The run noted in `ledger` (JSON {"run_id": ...}, see run), if that run is in this store and did not
        finish: a rerun continues it instead of leaving it beside a new one."""
        if not ledger.exists():
            return None
        try:
            run_id = json.loads(ledger.read_text())["run_id"]
        except (ValueError, KeyError, TypeError):
            return None  # a ledger cut short by a kill names no run
        return run_id if isinstance(run_id, str) and self.resumable(run_id) else None

    def resumable(self, run_id: str) -> bool:
        """Whether run_id is a run of this experiment, in this store, that did not finish (a rerun continues it)."""
        from mlflow.exceptions import MlflowException

        try:
            run = self._mlflow.MlflowClient().get_run(run_id)
        except MlflowException:
            return False
        return run.info.experiment_id == self.experiment.experiment_id and run.info.status != "FINISHED"

    def logged_params(self, run_id: str) -> bool:
        """Whether run_id has logged any params (a new run, or one killed at its very start, has not)."""
        return bool(self._mlflow.MlflowClient().get_run(run_id).data.params)

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        """The steps at which run_id logged metric `key` (none for a new run; for a continued one, those it need
        not log again)."""
        return {m.step for m in self._mlflow.MlflowClient().get_metric_history(run_id, key)}

    @contextmanager
    def stage_run(
        self,
        stage: str,
        checkpoint_path: str | os.PathLike[str],
        description: str,
        outputs: Sequence[str] = (),
        checkpoint: Mapping[str, Any] | None = None,
    ) -> Iterator[str]:
        """A run of a stage that reads a trained checkpoint (render, evaluate): its own run, a child of the run
        that trained the checkpoint, named and tagged for the DVC experiment it runs in. Yields its id.
        `checkpoint`: the file's content, when the stage has loaded it already."""
        if checkpoint is None:
            from genlab.checkpoints import load_checkpoint

            checkpoint = load_checkpoint(Path(checkpoint_path))
        # The checkpoint describes itself (genlab.checkpoints): its kind, its name in params.yaml, its config.
        name = checkpoint.get("name", checkpoint["kind"])
        variant = checkpoint["config"][name].get("variant")
        sha = file_sha256(Path(checkpoint_path))
        git = git_tags(outputs=outputs)
        experiment = experiment_label(git=git)
        trained_by = self.find_run(name, sha, experiment=experiment)
        origin = (
            f"Its checkpoint was trained by run {trained_by}."
            if trained_by
            else f"No run in this store trained its checkpoint (SHA-256 {sha[:12]}…); DVC restored it from its cache."
        )
        tags = {
            TAG_MODEL: name,
            TAG_KIND: checkpoint["kind"],
            TAG_STAGE: stage,
            TAG_EXPERIMENT: experiment,
            TAG_CHECKPOINT: sha,
            **({TAG_TRAIN_RUN: trained_by} if trained_by else {}),
            **git,
            **dvc_tags(),
        }
        with self.run(
            run_name=run_title(name, variant, experiment, stage),
            tags=tags,
            description=f"{description} {origin}",
            parent_run_id=trained_by,
        ) as run_id:
            yield run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MLflow params are strings of at most 6000 chars; lists are shown as their repr.
        self._mlflow.log_params(
            {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in params.items()}
        )

    def log_config(self, config: Mapping[str, Any]) -> None:
        """A run's defining config: its values as params (flattened: gan.lr), its SHA-256 values as tags
        (genlab.data_sha256): the params feed the UI's image captions and compare view, where 64-digit hashes
        only crowd out the values people compare."""
        from genlab.config import flatten

        flat = flatten(dict(config))
        self.log_params({k: v for k, v in flat.items() if not k.endswith("_sha256")})
        self.set_tags({f"genlab.{k}": str(v) for k, v in flat.items() if k.endswith("_sha256")})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, prefix: str = "") -> None:
        self._mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """A per-step image: the UI shows it with a step slider."""
        self._mlflow.log_image(image, key=key, step=step)

    def log_dataset(self, name: str, sha256: str, source: str, context: str) -> None:
        """The run's input dataset (MLflow's Datasets column) without loading it: name, digest (the first 16 hex
        digits of the data's SHA-256; MLflow stores at most 36 characters, the whole hash is the input's tag
        genlab.sha256) and where it comes from (a URL, or a local path for a custom dataset)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice and warns that a path matches both.
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
            origin = resolve_dataset_source(source)  # an HTTP source for a URL, a local one for a path
        # MetaDataset's `profile` is abstract in MLflow's stubs and None at run time (a dataset without a profile).
        dataset = MetaDataset(origin, name=name, digest=sha256[:16])  # type: ignore[abstract]
        self._mlflow.log_input(dataset, context=context, tags={"genlab.sha256": sha256})

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))

    def log_sampler(
        self, model: Any, name: str, latent: Any, labels: Any = None, registered_name: str | None = None
    ) -> Any:
        """Log a generative model's sampler (genlab.models.base.Sampler) as the run's MLflow model, and register it
        as a new version of `registered_name` (when given). Returns MLflow's ModelInfo.

        One contract for every model: the input is a table, one image per row, with a `seed` column (the row's
        noise; optional, default 0) and, for a conditional model, a `label` column (the digit, 0-9); the output is
        images [N, 1, 28, 28], float32 in [0, 1]. A table rather than a latent tensor, because MLflow converts a
        table's integer columns of any width, where a tensor input must match its dtype exactly (float64 failed). So
        `mlflow models serve` answers {"dataframe_records": [{"label": 7}]} with a 7. The pyfunc is
        genlab/sampler_pyfunc.py and the network a torch.export program beside it: serving needs torch, pandas
        and mlflow, not genlab. Its requirements are given, not inferred: inference imports the model in a
        subprocess, ~9 s per call.
        """
        import mlflow.pyfunc
        import pandas as pd
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema, TensorSpec

        conditional = labels is not None
        sampler = model.sampler().eval().cpu()
        latent = latent.cpu()
        batch = torch.export.Dim("batch", min=1)  # any number of rows
        inputs: tuple[Any, ...] = (latent,)
        shapes: dict[str, Any] = {"latent": {0: batch}}
        if conditional:
            inputs, shapes = (latent, labels.cpu()), {"latent": {0: batch}, "labels": {0: batch}}
        with torch.no_grad():
            program = torch.export.export(sampler, inputs, dynamic_shapes=shapes)
        columns: list[ColSpec | TensorSpec] = [ColSpec("long", "seed", required=False)]
        example = pd.DataFrame({"seed": list(range(4))})
        if conditional:
            columns.insert(0, ColSpec("long", "label"))
            example = pd.DataFrame({"label": list(range(10)), "seed": [0] * 10})
        signature = ModelSignature(
            inputs=Schema(columns), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 28, 28))])
        )
        with tempfile.TemporaryDirectory() as tmp:
            path, config = Path(tmp) / "sampler.pt2", Path(tmp) / "sampler.json"
            torch.export.save(program, path)
            # An artifact, not MLflow's model_config, which log_model also logs as the run's params.
            config.write_text(json.dumps({"latent_dim": int(latent.shape[1]), "conditional": conditional}))
            return mlflow.pyfunc.log_model(
                name=name,
                # Models from code: MLflow copies this file into the model, nothing is pickled.
                python_model=str(Path(__file__).with_name("sampler_pyfunc.py")),
                artifacts={"sampler": str(path), "config": str(config)},
                signature=signature,
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"pandas=={pd.__version__}"],
                metadata={"output": "images [N, 1, 28, 28], float32 in [0, 1]", "conditional": conditional},
                registered_model_name=registered_name,
            )

    def find_run(
        self, model: str, checkpoint_sha256: str, stage: str = "train", experiment: str | None = None
    ) -> str | None:
        """The run of `stage` that made this checkpoint, or None. Byte-identical checkpoints of several experiments
        share one hash, and a killed run may have set it too: prefer a finished run of `experiment`, then any
        finished run, then the newest of any status."""
        runs = self._mlflow.search_runs(
            experiment_ids=[self.experiment.experiment_id],
            filter_string=f"tags.`{TAG_MODEL}` = '{model}' and tags.`{TAG_CHECKPOINT}` = '{checkpoint_sha256}'"
            f" and tags.`{TAG_STAGE}` = '{stage}'",
            order_by=["attributes.start_time DESC"],
            output_format="list",
        )
        finished = [r for r in runs if r.info.status == "FINISHED"]
        own = [r for r in finished if experiment is not None and r.data.tags.get(TAG_EXPERIMENT) == experiment]
        best = own or finished or runs
        return best[0].info.run_id if best else None

    def model_versions(self, registered_name: str) -> list[tuple[int, str]]:
        """(version, the run that logged it) of a registered model, newest first; [] if there is none."""
        client = self._mlflow.MlflowClient()
        versions = client.search_model_versions(f"name = '{registered_name}'")
        return sorted(((int(v.version), v.run_id or "") for v in versions), reverse=True)

    def set_alias(self, registered_name: str, alias: str, version: int) -> None:
        """Point models:/<registered_name>@<alias> at `version` (moving it from where it was)."""
        self._mlflow.MlflowClient().set_registered_model_alias(registered_name, alias, str(version))

    def runs_frame(self, filter_string: str = ""):
        """Runs of the experiment as a pandas DataFrame (params.*, metrics.*, tags.* columns), newest first."""
        return self._mlflow.search_runs(
            experiment_ids=[self.experiment.experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
        )

    def artifact_paths(self, run_id: str, directory: str) -> list[str]:
        """Paths of the files a run logged under `directory`, sorted."""
        return sorted(a.path for a in self._mlflow.MlflowClient().list_artifacts(run_id, directory) if not a.is_dir)

    def download_artifact(self, run_id: str, path: str, dst_dir: str | os.PathLike[str]) -> Path:
        Path(dst_dir).mkdir(parents=True, exist_ok=True)
        return Path(self._mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst_dir)))


def load_logged_sampler(model_uri: str) -> tuple[Any, bool]:
    """A sampler that Tracker.log_sampler logged, as (sample(n, labels, seed) -> images [n, 1, 28, 28] in [0, 1],
    conditional?). Row i is drawn with seed `seed + i`."""
    import mlflow.pyfunc
    import pandas as pd
    import torch

    pyfunc = mlflow.pyfunc.load_model(model_uri)
    if (pyfunc.metadata.metadata or {}).get("output") is None:
        raise ValueError(
            "it was logged by an older genlab (a latent tensor in, flat images out); retrain it, or draw from the"
            " workspace's checkpoint with --model"
        )
    conditional = "label" in pyfunc.metadata.get_input_schema().input_names()

    def sample(n: int, labels: Any, seed: int) -> Any:
        table = pd.DataFrame({"seed": list(range(seed, seed + n))})
        if conditional:
            table.insert(0, "label", labels.tolist())
        return torch.from_numpy(pyfunc.predict(table))

    return sample, conditional
