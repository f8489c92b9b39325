"""MLflow tracking. The only module in genlab that imports mlflow.

Layout: SQLite backend `<repo root>/mlflow.db`, artifacts under `<repo root>/mlruns/`, both absolute, so
`mlflow ui` in the repo root shows every run, also those of `dvc exp run --temp/--queue`, which run stages
in a temporary copy but set DVC_ROOT to the original repository.

Nothing here writes into DVC-tracked files: run IDs stay in MLflow. Later stages find a model's run by the
SHA-256 of its checkpoint, stored as the tag `genlab.checkpoint_sha256`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

EXPERIMENT_DEFAULT = "genlab"
TAG_MODEL = "genlab.model"  # the model's name in params.yaml (gan, cgan, ...)
TAG_KIND = "genlab.kind"  # its kind: the package under genlab/models (gan, vae, ...)
TAG_CHECKPOINT = "genlab.checkpoint_sha256"


@contextmanager
def mlflow_server(
    backend_store_uri: str, *, cwd: Path | None = None, artifacts_destination: Path | None = None, timeout: float = 90
) -> Iterator[str]:
    """The real `mlflow server` (this environment's) on a free loopback port while the block runs; yields its URL.

    Raises RuntimeError with the server's last output when it does not answer /health within `timeout` seconds.
    """
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
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
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


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """git.commit and git.dirty of the working copy the stage runs in (the temporary copy under dvc exp)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=cwd).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
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


class Tracker:
    """A thin wrapper over one MLflow experiment. Construct once per stage."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = EXPERIMENT_DEFAULT, root: Path | None = None):
        import mlflow

        self._mlflow = mlflow
        self.root = (root or repo_root()).resolve()
        self.tracking_uri = tracking_uri or default_tracking_uri(self.root)
        mlflow.set_tracking_uri(self.tracking_uri)
        with _sqlite_init_lock(self.tracking_uri):
            if mlflow.get_experiment_by_name(experiment) is None:
                location = None  # a tracking server chooses its own artifact store
                if self.tracking_uri.startswith("sqlite:"):
                    artifacts = (self.root / "mlruns" / experiment).resolve()
                    artifacts.mkdir(parents=True, exist_ok=True)
                    location = artifacts.as_uri()
                mlflow.create_experiment(experiment, artifact_location=location)
            self.experiment = mlflow.set_experiment(experiment)

    @contextmanager
    def run(
        self, run_id: str | None = None, run_name: str | None = None, tags: Mapping[str, str] | None = None
    ) -> Iterator[str]:
        """Start (or resume, with run_id) a run; yields its id. Ends it as FAILED if the body raises."""
        with self._mlflow.start_run(
            run_id=run_id, run_name=run_name, experiment_id=self.experiment.experiment_id, tags=dict(tags or {})
        ) as r:
            yield r.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        # MLflow params are strings of at most 6000 chars; lists are shown as their repr.
        self._mlflow.log_params(
            {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in params.items()}
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, prefix: str = "") -> None:
        self._mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """A per-step image: the UI shows it with a step slider."""
        self._mlflow.log_image(image, key=key, step=step)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))

    def log_sampler(self, model: Any, name: str, latent: Any, labels: Any = None) -> None:
        """Log a generative model's sampler (genlab.models.base.Sampler) as the run's MLflow model.

        Unconditional: a PyTorch model (pt2 serialisation, which needs the input example), latent [B, d] ->
        images [B, 1, 28, 28] in [0, 1]. Conditional: a pyfunc model whose input is a table with a `label` column
        (the digit, 0-9) and, optionally, a `seed` column (default 0; on every row of a request or on none); one
        image per row, so `mlflow models serve`
        answers {"dataframe_records": [{"label": 7}]} with a 7. Its requirements are given, not inferred: inference
        imports the model in a subprocess, ~9 s per call.
        """
        import mlflow.pyfunc
        import mlflow.pytorch
        import torch

        sampler = model.sampler().eval().cpu()
        latent = latent.cpu()
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        if labels is None:
            mlflow.pytorch.log_model(sampler, name=name, input_example=latent.numpy(), pip_requirements=requirements)
            return
        import pandas as pd

        batch = torch.export.Dim("batch", min=1)  # any number of rows, latent and labels alike
        with torch.no_grad():
            program = torch.export.export(
                sampler, (latent, labels.cpu()), dynamic_shapes={"latent": {0: batch}, "labels": {0: batch}}
            )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sampler.pt2"
            torch.export.save(program, path)
            from mlflow.models import ModelSignature
            from mlflow.types import ColSpec, Schema, TensorSpec

            # Written out, not inferred from the example: `seed` may be left out of a request.
            signature = ModelSignature(
                inputs=Schema([ColSpec("long", "label"), ColSpec("long", "seed", required=False)]),
                outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 784))]),
            )
            mlflow.pyfunc.log_model(
                name=name,
                python_model=_labelled_sampler(int(latent.shape[1])),
                artifacts={"sampler": str(path)},
                signature=signature,
                input_example=pd.DataFrame({"label": list(range(10)), "seed": [0] * 10}),
                pip_requirements=[*requirements, f"pandas=={pd.__version__}"],
            )

    def find_run(self, model: str, checkpoint_sha256: str) -> str | None:
        """The newest run whose checkpoint has this hash, or None."""
        runs = self._mlflow.search_runs(
            experiment_ids=[self.experiment.experiment_id],
            filter_string=f"tags.`{TAG_MODEL}` = '{model}' and tags.`{TAG_CHECKPOINT}` = '{checkpoint_sha256}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
        return runs[0].info.run_id if runs else None

    @contextmanager
    def model_run(self, model: str, checkpoint_path: str | os.PathLike[str]) -> Iterator[bool]:
        """Re-open the run that trained this checkpoint (found by its hash); yields False, after saying so, if
        no run has it (e.g. mlflow.db was deleted but DVC outputs were restored from the cache)."""
        run_id = self.find_run(model, file_sha256(Path(checkpoint_path)))
        if run_id is None:
            print(f"tracking: no MLflow run in {self.tracking_uri} trained {checkpoint_path}; not logging to MLflow")
            yield False
            return
        with self.run(run_id=run_id):
            yield True

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


def _labelled_sampler(latent_dim: int) -> Any:
    """The pyfunc of a conditional model: rows (label, seed) -> flattened images [N, 784] in [0, 1]. Defined here
    so cloudpickle stores the class by value: with the torch.export program saved beside it, serving needs torch,
    pandas and mlflow, not genlab."""
    import mlflow.pyfunc

    class LabelledSampler(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
        def __getstate__(self) -> dict[str, Any]:
            # MLflow loads the context into this object to check the input example, then pickles it: the
            # network itself is stored as the artifact, not in the pickle.
            return {k: v for k, v in self.__dict__.items() if k != "sampler"}

        def load_context(self, context: Any) -> None:
            import torch

            self.sampler = torch.export.load(context.artifacts["sampler"]).module()

        def predict(self, context: Any, model_input: Any, params: Any = None) -> np.ndarray:
            import torch

            if "label" not in model_input.columns:
                raise ValueError("this model draws the digit you ask for: give a 'label' column (0-9)")
            labels = torch.tensor(model_input["label"].to_numpy(), dtype=torch.long)
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
                raise ValueError("label must lie in 0..9")
            seeds = model_input["seed"].to_numpy() if "seed" in model_input.columns else np.zeros(len(labels), int)
            # One noise vector per row, from the row's seed: an image does not depend on the other rows.
            latent = torch.empty(len(labels), latent_dim)
            for i, seed in enumerate(seeds):
                latent[i] = torch.randn(latent_dim, generator=torch.Generator().manual_seed(int(seed)))
            with torch.no_grad():
                return self.sampler(latent, labels).reshape(len(labels), -1).numpy()

    return LabelledSampler()


def load_logged_sampler(model_uri: str) -> tuple[Any, bool]:
    """A sampler that Tracker.log_sampler logged, as (sample(n, labels, seed) -> images [n, 1, 28, 28] in [0, 1],
    conditional?). A PyTorch model is unconditional (latent -> images); a pyfunc one takes labels."""
    import mlflow.pyfunc
    import torch

    info = mlflow.models.get_model_info(model_uri)
    if "pytorch" in info.flavors:
        module = mlflow.pytorch.load_model(model_uri)
        latent_dim = int(info.signature.inputs.inputs[0].shape[-1])

        def sample(n: int, labels: Any, seed: int) -> Any:
            latent = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                return module(latent)

        return sample, False
    import pandas as pd

    pyfunc = mlflow.pyfunc.load_model(model_uri)

    def sample_labelled(n: int, labels: Any, seed: int) -> Any:
        # One seed per row (the pyfunc's contract): rows seed, seed + 1, ...
        table = pd.DataFrame({"label": labels.tolist(), "seed": list(range(seed, seed + n))})
        return torch.from_numpy(pyfunc.predict(table)).reshape(n, 1, 28, 28)

    return sample_labelled, True
