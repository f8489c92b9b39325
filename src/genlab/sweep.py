"""Sweeps across machines: an Optuna study in a shared database (RDB storage: the stack's PostgreSQL), each trial a
DVC experiment (`dvc exp run -S key=value --name <study>-<trial>`) and so also MLflow runs (every stage logs).

Why Optuna rather than Ray Tune: a worker is one plain process that needs only the database's URL, so a worker on
any machine joins a study by running `genlab sweep` in its own clone; trials are claimed through the database's
transactions; the study (its trials, their params, values and states) outlives every worker. Ray Tune would need a
Ray cluster (a head node and its object store) to coordinate, and would run trials in its own workers rather than
as DVC experiments of a clone.

A search space is a YAML file (sweeps/*.yaml):

    study: gan-lr                 # workers with the same storage and study name share the trials
    model: gan                    # a model of params.yaml's models; each trial runs evaluate@<model>
    metric: fid                   # a key of its evaluation metrics (paths.evaluation)
    direction: minimize
    trials: 8                     # trials of the study in all, over every worker
    params:                       # params.yaml keys, each an Optuna distribution
      gan.lr: {low: 1.0e-5, high: 1.0e-3, log: true}
      gan.batch_size: {choices: [64, 128]}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from genlab.config import ConfigError, Section, load_params
from genlab.errors import GenlabError


class Distribution(Section):
    """A float or int range (log-uniform when `log`), or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[float | int | str | bool] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def suggest(self, trial: Any, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        assert self.low is not None and self.high is not None
        if float(self.low).is_integer() and float(self.high).is_integer() and not self.log and self.step in (None, 1):
            return trial.suggest_int(name, int(self.low), int(self.high))
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


class SweepSpec(Section):
    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    model: str
    metric: str
    direction: Literal["minimize", "maximize"] = "minimize"
    trials: Annotated[int, Field(ge=1, le=10_000)]
    params: Annotated[dict[str, Distribution], Field(min_length=1)]

    @classmethod
    def load(cls, path: Path) -> SweepSpec:
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the search space ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not YAML ({e})") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ConfigError(f"{path}: {where}: {first['msg']}") from None

    def check_against(self, params_path: Path) -> None:
        """Every swept key must exist in params.yaml: `dvc exp run -S` would otherwise add it, and the stage would
        refuse it only after the trial started."""
        params = load_params(params_path)
        if self.model not in params.models:
            raise ConfigError(f"sweep model {self.model!r} is not in params.yaml's models {sorted(params.models)}")
        raw = yaml.safe_load(params_path.read_text())
        for key in self.params:
            node: Any = raw
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ConfigError(f"sweep key {key!r} is not in {params_path}: sweep keys of params.yaml only")
                node = node[part]


def storage_url(root: Path) -> str:
    """GENLAB_SWEEP_STORAGE (the stack's PostgreSQL: `genlab stack env`), else a SQLite file for one machine."""
    return os.environ.get("GENLAB_SWEEP_STORAGE") or f"sqlite:///{root / '.genlab' / 'optuna.db'}"


class TrialFailed(GenlabError):
    """One trial's `dvc exp run` failed; the study marks it FAIL and goes on."""


def run_worker(
    root: Path,
    spec: SweepSpec,
    storage: str,
    *,
    push: str | None = None,
    say: Callable[[str], None] = print,
) -> Any:
    """Join (or create) the study and run trials in this clone until the study has spec.trials of them. Returns
    the study. push: a git remote to `dvc exp push` each trial's experiment to (its outputs go to the DVC remote)."""
    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec.check_against(root / "params.yaml")
    study = None
    for attempt in range(3):
        try:
            # Heartbeats ("experimental" in Optuna 5) fail the trials of a worker that died.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage_ = optuna.storages.RDBStorage(storage, heartbeat_interval=60, grace_period=180)
            study = optuna.create_study(
                study_name=spec.study, storage=storage_, direction=spec.direction, load_if_exists=True
            )
            break
        except Exception as e:  # noqa: BLE001  SQLAlchemy's errors: bad URL, refused connection, bad password
            # Two workers that meet an empty database both create Optuna's tables; the loser retries.
            if attempt < 2 and isinstance(e, sqlalchemy.exc.IntegrityError):
                time.sleep(1 + attempt)
                continue
            raise GenlabError(
                f"Optuna storage {_redacted(storage)}: {type(e).__name__}: {str(e).splitlines()[0]}. Start the stack"
                ' (genlab stack up; eval "$(genlab stack env)") or set GENLAB_SWEEP_STORAGE'
            ) from None
    assert study is not None
    if study.direction.name.lower() != spec.direction:
        found = study.direction.name.lower()
        raise ConfigError(f"study {spec.study!r} exists with direction {found}, not {spec.direction}: rename the study")

    evaluation = root / load_params(root / "params.yaml").paths.evaluation(spec.model)

    def objective(trial: Any) -> float:
        values = {key: dist.suggest(trial, key) for key, dist in spec.params.items()}
        name = f"{spec.study}-{trial.number}"
        trial.set_user_attr("dvc_experiment", name)
        trial.set_user_attr("host", os.uname().nodename)
        settings = [arg for key, value in values.items() for arg in ("-S", f"{key}={_yaml_scalar(value)}")]
        say(f"[{spec.study}] trial {trial.number}: {' '.join(settings[1::2])} -> dvc exp run --name {name}")
        command = [_dvc(), "exp", "run", "--name", name, *settings, f"evaluate@{spec.model}"]
        done = subprocess.run(command, cwd=root)
        if done.returncode != 0:
            raise TrialFailed(f"trial {trial.number}: `dvc exp run` exited {done.returncode} (its output is above)")
        try:
            value = float(json.loads(evaluation.read_text())[spec.metric])
        except (OSError, ValueError, KeyError) as e:
            raise GenlabError(
                f"{evaluation}: no number {spec.metric!r} after trial {trial.number} ({type(e).__name__}: {e}); set"
                f" `metric` in the search space to one of the keys evaluate@{spec.model} writes there"
            ) from None
        say(f"[{spec.study}] trial {trial.number}: {spec.metric} = {value:.6g}")
        if push:
            pushed = subprocess.run([_dvc(), "exp", "push", push, name], cwd=root)
            if pushed.returncode != 0:
                raise TrialFailed(f"trial {trial.number}: `dvc exp push {push} {name}` failed (its output is above)")
        return value

    study.optimize(
        objective,
        callbacks=[optuna.study.MaxTrialsCallback(spec.trials, states=None)],
        catch=(TrialFailed,),
    )
    return study


def summary(study: Any) -> list[str]:
    """One line per trial, best first: number, state, value, params, DVC experiment."""
    import optuna

    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    trials = sorted(study.trials, key=lambda t: (t.value is None, sign * (t.value or 0.0)))
    lines = []
    for t in trials:
        value = "-" if t.value is None else f"{t.value:.6g}"
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"{t.number:>4} {t.state.name:<8} {value:>12}  {params}  {t.user_attrs.get('dvc_experiment', '')}")
    return lines


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _redacted(url: str) -> str:
    """The storage URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def _dvc() -> str:
    return str(Path(sys.executable).parent / "dvc")
