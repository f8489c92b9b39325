"""Typed configuration.

Two sources, kept apart on purpose:
- ``Params``: everything that changes results. It lives in ``params.yaml`` so DVC sees it; each stage
  depends only on the sections it reads.
- ``Runtime``: settings that do not change results on a given device (data mirror, device, threads,
  MLflow location). They come from ``GENLAB_*`` environment variables.

The library never reads either file itself: pipeline scripts call ``load_params`` / ``load_runtime`` and pass
the typed objects down.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from genlab.errors import GenlabError

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
# Upper bounds: far above any sensible value, low enough that a typo (1e9) is refused here rather than training
# absurdly or running out of memory an hour in.
LearningRate = Annotated[float, Field(gt=0, le=1)]  # Adam steps above 1 diverge on these networks
Epochs = Annotated[int, Field(gt=0, le=10_000)]
BatchSize = Annotated[int, Field(gt=0, le=100_000)]  # and at most the training set (checked when data is loaded)
Width = Annotated[int, Field(gt=0, le=16_384)]  # hidden units, channels, latent dimensions
GridImages = Annotated[int, Field(gt=0, le=1_024)]  # images drawn into one grid every epoch
DiagnosticSamples = Annotated[int, Field(ge=0, le=100_000)]  # per-epoch diagnostic samples (0: off)
Probability = Annotated[float, Field(ge=0, lt=1)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# fp32 is deterministic and the same bits across CPU ISA levels; bf16 autocasts forward passes to bf16 matmuls (on
# GPUs, and on CPUs with native bf16: genlab.runtime.check_bf16), deterministic on one machine class.
Precision = Literal["fp32", "bf16"]
# torch.compile mode for the networks: "eager" compiles nothing; "reduce-overhead" adds CUDA graphs on a GPU.
# (Not "off": YAML 1.1 reads an unquoted off as false, and `dvc exp run -S` rewrites params.yaml unquoted.)
CompileMode = Literal["eager", "default", "reduce-overhead", "max-autotune"]


class Section(BaseModel):
    # allow_inf_nan=False: `lr: .inf` or `.nan` is a typo, never a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class PathsConfig(Section):
    """Every file a stage reads or writes. dvc.yaml refers to these with ${paths.*} and spells each model's files as
    the methods below do (tests/test_dvc_deps.py checks that they agree)."""

    data: str = "data/prepared"
    classifier_model: str = "models/classifier.pt"
    classifier_summary: str = "metrics/classifier.json"
    model_dir: str = "models"  # <name>.pt: each model's final checkpoint
    output_dir: str = "outputs"  # <name>_snapshots.pt: its per-epoch images, for render
    metrics_dir: str = "metrics"  # <name>_train.csv/.json, <name>_eval.json, <name>_identity.csv/.json; real_eval.json
    figures: str = "figures"  # <name>/: its rendered grids
    identity: str = "identity"  # <name>/: strips.png, drift.png, grid.gif of its fixed inputs' identity
    # Resumable training state. Not a DVC out: `dvc repro` deletes outs before a stage runs.
    state: str = ".genlab/state"

    @field_validator("*")
    @classmethod
    def _inside_repository(cls, v: str) -> str:
        # Stages write here before DVC checks its outs: a path outside the repository would be written first.
        normal = os.path.normpath(v)
        if not v or os.path.isabs(v) or normal == "." or normal == ".." or normal.startswith("../"):
            raise ValueError("must be a relative path inside the repository (not absolute, not ., no ../)")
        return v

    def git_tracked_outputs(self) -> tuple[str, ...]:
        """What stages write into files git tracks: the metrics (cache: false) and dvc.lock. A run that changed
        only these has not made the working copy dirty (genlab.tracking.git_tags)."""
        return (self.metrics_dir, self.classifier_summary, "dvc.lock")

    def model(self, name: str) -> Path:
        return Path(self.model_dir) / f"{name}.pt"

    def snapshots(self, name: str) -> Path:
        return Path(self.output_dir) / f"{name}_snapshots.pt"

    def history(self, name: str) -> Path:
        return Path(self.metrics_dir) / f"{name}_train.csv"

    def summary(self, name: str) -> Path:
        return Path(self.metrics_dir) / f"{name}_train.json"

    def evaluation(self, name: str) -> Path:
        """A model's evaluation, or with FLOOR the real images' (what a perfect model would score)."""
        return Path(self.metrics_dir) / f"{name}_eval.json"

    def figures_of(self, name: str) -> Path:
        return Path(self.figures) / name

    def identity_of(self, name: str) -> Path:
        return Path(self.identity) / name

    def identity_history(self, name: str) -> Path:
        return Path(self.metrics_dir) / f"{name}_identity.csv"

    def identity_summary(self, name: str) -> Path:
        return Path(self.metrics_dir) / f"{name}_identity.json"


class DataConfig(Section):
    dataset: Literal["mnist", "fashion-mnist", "custom"] = "mnist"
    # Only for dataset "custom" (tests, private mirrors): SHA-256 of each decompressed IDX file.
    custom_sha256: dict[str, Sha256] | None = None

    @model_validator(mode="after")
    def _custom_needs_checksums(self) -> DataConfig:
        from genlab.data import IDX_FILES

        if self.dataset == "custom":
            missing = [f for f in IDX_FILES if not self.custom_sha256 or f not in self.custom_sha256]
            extra = sorted(set(self.custom_sha256 or {}) - set(IDX_FILES))
            if missing or extra:
                raise ValueError(
                    f"dataset 'custom' needs custom_sha256 with exactly the keys {list(IDX_FILES)}"
                    f" (missing: {missing}, unknown: {extra})"
                )
        elif self.custom_sha256 is not None:
            raise ValueError(f"custom_sha256 is only allowed with dataset 'custom', not '{self.dataset}'")
        return self


class ClassifierConfig(Section):
    """The MNIST CNN whose features the sample metrics use (genlab.models.classifier)."""

    channels: Annotated[list[Width], Field(min_length=2, max_length=2)] = [16, 32]
    feature_dim: Width = 128
    epochs: Epochs = 4
    batch_size: BatchSize = 128
    # One-cycle schedule (Smith & Topin 2018): warm up to max_lr, then anneal; 4 epochs reach > 99% on MNIST.
    max_lr: LearningRate = 3e-3
    # The stage fails below this test accuracy: metrics in a poor feature space would mislead.
    min_test_accuracy: Probability = 0.99


class ModelSection(Section):
    """A model's params section: its kind's Config (genlab.models.<kind>.config). Besides its own keys, every kind's
    section has epochs, conditional, precision, compile and diagnostic_samples, which the shared trainer reads."""

    def resolved(self) -> Self:
        """The values training uses (a kind with named variants applies the chosen one)."""
        return self

    def record(self) -> dict[str, Any]:
        """The values that define a run: stored in its checkpoints (checked on resume) and logged as MLflow params."""
        return self.resolved().model_dump()


class RenderConfig(Section):
    epochs: Annotated[list[PositiveInt], Field(min_length=1, max_length=100)] = [25, 50, 75, 100]
    nrow: PositiveInt = 8
    scale: Annotated[int, Field(ge=1, le=16)] = 4
    padding: Annotated[int, Field(ge=0, le=16)] = 2


class IdentityConfig(Section):
    """The identity@<name> stages (genlab.identity): each fixed input's digit at every epoch."""

    # settle_epoch: the first epoch from which this share of the fixed inputs keeps its final digit to the end.
    settled_share: Annotated[float, Field(gt=0, le=1)] = 0.9
    most_drifting: Annotated[int, Field(ge=1, le=1_024)] = 8  # inputs listed, those that changed digit most often
    gif_ms: Annotated[int, Field(ge=20, le=10_000)] = 120  # how long the GIF shows each epoch


class EvaluateConfig(Section):
    batch_size: BatchSize = 1000
    # Generated samples per model, compared with the whole test set (10,000 for MNIST). The floor draws as many
    # real training images, so at most the training set (checked when data is loaded).
    num_samples: Annotated[int, Field(gt=0, le=1_000_000)] = 10_000
    # Neighbours defining the k-NN manifolds of improved precision/recall (Kynkäänniemi et al. 2019 use 3).
    knn_k: Annotated[int, Field(gt=0, le=100)] = 3
    # Classifier two-sample test: a fresh CNN trained on half of the real and generated images.
    c2st_epochs: Annotated[int, Field(gt=0, le=100)] = 3
    c2st_lr: LearningRate = 1e-3
    # Importance samples per test image for the VAE's IWAE bound (Burda et al. 2016).
    iwae_samples: Annotated[int, Field(gt=0, le=10_000)] = 100


FLOOR = "real"  # the evaluation of real images: not a model name
ModelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class ParamsBase(BaseSettings):
    """params.yaml's fixed sections. Values come only from the file (no environment overrides: DVC must see every
    value). `Params` (see params_class) adds one section per trained model, typed by its kind's Config."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seed: Annotated[int, Field(ge=0, lt=2**31)] = 0
    # The trained models: name -> kind (a package under genlab/models). dvc.yaml runs train, render, identity and
    # evaluate stages for each; each name has a params section of its own, validated by its kind's Config.
    models: Annotated[dict[ModelName, str], Field(min_length=1)] = {"gan": "gan", "vae": "vae"}
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    render: RenderConfig = RenderConfig()
    identity: IdentityConfig = IdentityConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, *_: Any, **__: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    def model(self, name: str) -> ModelSection:
        """The params section of the model `name` (one of `models`)."""
        if name not in self.models:
            raise KeyError(f"{name!r} is not a model in params.yaml's models: {sorted(self.models)}")
        return getattr(self, name)

    @model_validator(mode="after")
    def _render_epochs_exist(self) -> Self:
        trained = {name: self.model(name).epochs for name in self.models}  # type: ignore[attr-defined]
        if not trained:
            return self
        fewest = min(trained.values())
        late = [e for e in self.render.epochs if e > fewest]
        if late:
            shown = ", ".join(f"{name}.epochs={e}" for name, e in trained.items())
            raise ValueError(
                f"render.epochs {late} exceed the epochs trained ({shown}); choose render epochs between 1 and {fewest}"
            )
        return self

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_is_int(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("seed must be an integer")
        return v


RESERVED_NAMES = frozenset(ParamsBase.model_fields) | {FLOOR}


@functools.cache
def params_class(models: tuple[tuple[str, str], ...]) -> type[ParamsBase]:
    """Params for these (name, kind) pairs: the fixed sections plus one per model, typed by its kind's Config.
    Raises ValueError naming a model whose name is reserved or whose kind is not registered."""
    from genlab import registry

    fields: dict[str, Any] = {}
    for name, kind in models:
        if name in RESERVED_NAMES:
            raise ValueError(f"models: {name!r} is a reserved name (sections {sorted(RESERVED_NAMES)}); rename it")
        config = registry.config_class(kind)
        fields[name] = (config, config())
    return create_model("Params", __base__=ParamsBase, **fields)


# The type of a loaded params.yaml. Its model sections are typed attributes of the class params_class built.
Params = ParamsBase


def make_params(raw: dict[str, Any]) -> ParamsBase:
    """Validate a parsed params.yaml (raises pydantic's ValidationError, or ValueError for a bad `models`)."""
    models = raw.get("models", ParamsBase.model_fields["models"].default)
    if not isinstance(models, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in models.items()):
        raise ValueError(f"models must map model names to kinds, e.g. {{gan: gan, cgan: gan}}; got {models!r}")
    return params_class(tuple(models.items()))(**raw)


TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


class Runtime(Section):
    """Settings that do not change results, from GENLAB_* environment variables: load_runtime reads them (field
    `threads` from GENLAB_THREADS, and so on) and names the variable in its errors."""

    # Local directory with the dataset's IDX files (.gz or raw), tried after the official mirrors.
    data_mirror: Path | None = None
    # Skip the network mirrors (offline machines, tests).
    offline: bool = False
    device: Literal["cpu", "cuda"] = "cpu"
    # CPU threads for PyTorch. 0 = one per core the process may use.
    threads: Annotated[int, Field(ge=0, le=1024)] = 0
    # Epochs between resumable checkpoints: 1 loses at most one epoch to a kill. A save costs 75 ms for the GAN
    # (40 MB) and 33 ms for the VAE, under 1% of an epoch on a 2-core CPU (docs/faults.md).
    checkpoint_every: Annotated[int, Field(gt=0, le=10_000)] = 1
    # Training processes on this machine (DistributedDataParallel under torchrun, genlab.distributed). Unlike the
    # other settings it changes the bits: the run's config (params, checkpoint) records world_size when above 1.
    processes: Annotated[int, Field(ge=1, le=1024)] = 1
    # Train in bf16 (a model's precision: bf16) on a CPU without native bf16 arithmetic, where oneDNN emulates it.
    force_bf16: bool = False
    # MLflow: by default sqlite:///<repo root>/mlflow.db and artifacts in <repo root>/mlruns.
    tracking_uri: str | None = None
    experiment: Annotated[str, Field(min_length=1, max_length=256)] = "genlab"

    @field_validator("data_mirror")
    @classmethod
    def _mirror_from_repo_root(cls, v: Path | None) -> Path | None:
        # A relative mirror is relative to the repository, also when `dvc exp run --temp` runs the stage in a
        # temporary copy (DVC sets DVC_ROOT to the original repository there).
        if v is None or v.is_absolute():
            return v
        return (Path(os.environ.get("DVC_ROOT", ".")) / v).resolve()

    @field_validator("tracking_uri")
    @classmethod
    def _known_scheme(cls, v: str | None) -> str | None:
        if v is not None and v.split(":", 1)[0].split("+", 1)[0] not in TRACKING_SCHEMES:
            raise ValueError(
                f"not a tracking URI MLflow reads: use one of {', '.join(s + '://' for s in TRACKING_SCHEMES)}"
                " (e.g. http://127.0.0.1:5000), or unset it for <repo>/mlflow.db"
            )
        return v


class ConfigError(GenlabError):
    """A bad params.yaml or GENLAB_* variable. The message names the file and key, or the variable."""


def require_at_most(key: str, value: int, available: int, what: str) -> None:
    """Refuse params.yaml's `key` when it asks for more than the data has: limits the schema cannot know, checked
    once the data is loaded."""
    if value > available:
        raise ConfigError(f"{key} = {value} is more than the {available} {what}; choose at most that")


def _format_validation_error(err: ValidationError, name: Callable[[str], str], source: str) -> str:
    """One line per problem: '<source>: <key> = <value>: <what is wrong>'. name(dotted key) spells the key."""
    lines = []
    for e in err.errors():
        key = name(".".join(str(p) for p in e["loc"]) or "(top level)")
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'. Check the spelling; allowed keys are in params.yaml's docs.")
            continue
        value = e.get("input")
        shown = "(missing)" if e["type"] == "missing" else repr(value)
        if isinstance(value, dict) and e["type"] != "missing":
            shown = "{...}"
        msg = re.sub(r"^Value error, ", "", e["msg"])
        lines.append(f"{source}: {msg}" if not e["loc"] else f"{source}: {key} = {shown}: {msg}")
    return "\n".join(lines)


def load_runtime(environ: Mapping[str, str] | None = None) -> Runtime:
    """Runtime from the GENLAB_* variables (of `environ`, default os.environ); ConfigError names a bad variable."""
    env = os.environ if environ is None else environ
    values = {name: env[f"GENLAB_{name.upper()}"] for name in Runtime.model_fields if f"GENLAB_{name.upper()}" in env}
    try:
        # Values passed in, not read by pydantic-settings again: the same validation, and `environ` is honoured.
        return Runtime.model_validate(values)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, lambda k: f"GENLAB_{k.upper()}", "environment")) from None


class DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader keeps the last of two equal keys in a mapping; this one refuses them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in first_line and key != "<<":
                raise DuplicateKey(
                    f"line {line}: key {key!r} appears twice (first on line {first_line[key]}); keep one"
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def missing_keys(model: type[BaseModel], raw: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys of `model` (recursing into its sections) absent from `raw`, except those whose default is None (optional
    features such as data.custom_sha256). Every other value changes results and must be written out."""
    missing = []
    for key, field in model.model_fields.items():
        if key not in raw:
            if field.default is not None:
                missing.append(f"{prefix}{key}")
            continue
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel) and isinstance(raw[key], Mapping):
            missing += missing_keys(section, raw[key], f"{prefix}{key}.")
    return missing


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ConfigError naming the bad key.

    Stricter than pydantic alone: duplicate keys, an empty file and a missing key are errors, since a default
    filled in silently is a value DVC never saw change."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run from the repository root)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.MarkedYAMLError as e:
        where = f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}" if e.problem_mark else "?"
        raise ConfigError(f"{path}: not valid YAML at {where}: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; restore it with `git checkout {path}`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        params = make_params(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, str, str(path))) from None
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    missing = missing_keys(type(params), raw)
    if missing:
        defaults = params.model_dump(exclude_none=True)
        shown = ", ".join(
            f"{k} (a whole section)" if isinstance(_get(defaults, k), dict) else f"{k} (default {_get(defaults, k)!r})"
            for k in missing[:8]
        )
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise ConfigError(
            f"{path}: missing {shown}{more}. Write every value out: a default filled in here is one DVC never tracks."
        )
    return params


def _get(values: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'gan': {'lr': 1e-4}} -> {'gan.lr': 1e-4}; lists become strings (MLflow params are strings)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump()
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
