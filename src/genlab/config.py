"""Typed configuration.

Two sources, kept apart on purpose:
- ``Params``: everything that changes results. It lives in ``params.yaml`` so DVC sees it; each stage
  depends only on the sections it reads.
- ``Runtime``: settings that do not change results on a given device (data mirror, device, threads,
  MLflow location). They come from ``GENLAB_*`` environment variables.

The library never reads either file itself: pipeline scripts call ``load_params`` / ``Runtime()`` and pass
the typed objects down.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, lt=1)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# fp32 is deterministic; bf16 autocasts forward passes (faster on GPUs, different numbers).
Precision = Literal["fp32", "bf16"]
# torch.compile mode for the networks: "eager" compiles nothing; "reduce-overhead" adds CUDA graphs on a GPU.
# (Not "off": YAML 1.1 reads an unquoted off as false, and `dvc exp run -S` rewrites params.yaml unquoted.)
CompileMode = Literal["eager", "default", "reduce-overhead", "max-autotune"]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PathsConfig(Section):
    """Every file a stage reads or writes. dvc.yaml refers to these with ${paths.*}."""

    data: str = "data/prepared"
    classifier_model: str = "models/classifier.pt"
    classifier_summary: str = "metrics/classifier.json"
    gan_model: str = "models/gan.pt"
    gan_samples: str = "outputs/gan_samples.pt"
    gan_history: str = "metrics/gan_train.csv"
    gan_summary: str = "metrics/gan_train.json"
    vae_model: str = "models/vae.pt"
    vae_reconstructions: str = "outputs/vae_reconstructions.pt"
    vae_history: str = "metrics/vae_train.csv"
    vae_summary: str = "metrics/vae_train.json"
    figures: str = "figures"
    evaluation: str = "metrics/evaluate.json"
    # Resumable training state. Not a DVC out: `dvc repro` deletes outs before a stage runs.
    state: str = ".genlab/state"


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

    channels: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = [16, 32]
    feature_dim: PositiveInt = 128
    epochs: PositiveInt = 4
    batch_size: PositiveInt = 128
    # One-cycle schedule (Smith & Topin 2018): warm up to max_lr, then anneal; 4 epochs reach > 99% on MNIST.
    max_lr: PositiveFloat = 3e-3
    # The stage fails below this test accuracy: metrics in a poor feature space would mislead.
    min_test_accuracy: Probability = 0.99


class GanOverrides(Section):
    """A named variant: the GAN keys it changes (see GanConfig)."""

    lr: PositiveFloat | None = None
    beta1: Probability | None = None
    beta2: Probability | None = None
    real_label: Annotated[float, Field(gt=0.5, le=1)] | None = None
    dropout: Probability | None = None
    batch_size: PositiveInt | None = None


class GanConfig(Section):
    # "faithful" is the original write-up; any other name applies gan.variants.<name> on top of these values.
    variant: str = "faithful"
    variants: dict[str, GanOverrides] = {"stable": GanOverrides(beta1=0.5, real_label=0.9)}
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 100
    latent_dim: PositiveInt = 100
    generator_hidden: list[PositiveInt] = [256, 512, 1024]
    discriminator_hidden: list[PositiveInt] = [1024, 512, 256]
    leaky_slope: Annotated[float, Field(ge=0, lt=1)] = 0.2
    dropout: Probability = 0.3
    lr: PositiveFloat = 2e-4
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    # Target for real images in the discriminator loss; < 1 is one-sided label smoothing (Salimans et al. 2016).
    real_label: Annotated[float, Field(gt=0.5, le=1)] = 1.0
    num_fixed_samples: PositiveInt = 64
    # Per-epoch class coverage and classifier score of this many fixed-noise samples (0: off).
    diagnostic_samples: Annotated[int, Field(ge=0)] = 1000
    precision: Precision = "fp32"
    compile: CompileMode = "eager"

    @model_validator(mode="after")
    def _variant_is_defined(self) -> GanConfig:
        if "faithful" in self.variants:
            raise ValueError("gan.variants may not redefine 'faithful' (the base values are the faithful variant)")
        if self.variant != "faithful" and self.variant not in self.variants:
            raise ValueError(
                f"variant {self.variant!r} is not defined; choose 'faithful' or one of {sorted(self.variants)}"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """The values training uses: the chosen variant's overrides applied, the variant table dropped."""
        values = self.model_dump(exclude={"variants"})
        if self.variant != "faithful":
            values.update(self.variants[self.variant].model_dump(exclude_none=True))
        return values


class VaeConfig(Section):
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 128
    hidden: list[PositiveInt] = [512, 256]
    latent_dim: PositiveInt = 20
    lr: PositiveFloat = 1e-3
    num_reconstructions: PositiveInt = 32
    # Per-epoch class coverage and classifier score of this many samples from fixed prior draws (0: off).
    diagnostic_samples: Annotated[int, Field(ge=0)] = 1000
    precision: Precision = "fp32"
    compile: CompileMode = "eager"


class RenderConfig(Section):
    epochs: list[PositiveInt] = [25, 50, 75, 100]
    nrow: PositiveInt = 8
    scale: Annotated[int, Field(ge=1, le=16)] = 4
    padding: Annotated[int, Field(ge=0, le=16)] = 2


class EvaluateConfig(Section):
    batch_size: PositiveInt = 1000
    # Generated samples per model, compared with the whole test set (10,000 for MNIST).
    num_samples: PositiveInt = 10_000
    # Neighbours defining the k-NN manifolds of improved precision/recall (Kynkäänniemi et al. 2019 use 3).
    knn_k: PositiveInt = 3
    # Classifier two-sample test: a fresh CNN trained on half of the real and generated images.
    c2st_epochs: PositiveInt = 3
    c2st_lr: PositiveFloat = 1e-3
    # Importance samples per test image for the VAE's IWAE bound (Burda et al. 2016).
    iwae_samples: PositiveInt = 100


class Params(BaseSettings):
    """params.yaml. Values come only from the file (no environment overrides: DVC must see every value)."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    seed: Annotated[int, Field(ge=0, lt=2**31)] = 0
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    gan: GanConfig = GanConfig()
    vae: VaeConfig = VaeConfig()
    render: RenderConfig = RenderConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, *_: Any, **__: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @model_validator(mode="after")
    def _render_epochs_exist(self) -> Params:
        trained = min(self.gan.epochs, self.vae.epochs)
        late = [e for e in self.render.epochs if e > trained]
        if late:
            raise ValueError(
                f"render.epochs {late} exceed the epochs trained (gan.epochs={self.gan.epochs},"
                f" vae.epochs={self.vae.epochs}); choose render epochs between 1 and {trained}"
            )
        return self

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_is_int(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("seed must be an integer")
        return v


class Runtime(BaseSettings):
    """Settings that do not change results, from GENLAB_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="GENLAB_", frozen=True, extra="ignore")

    # Local directory with the dataset's IDX files (.gz or raw), tried after the official mirrors.
    data_mirror: Path | None = None
    # Skip the network mirrors (offline machines, tests).
    offline: bool = False
    device: Literal["cpu", "cuda"] = "cpu"
    # CPU threads for PyTorch. 0 = one per core the process may use.
    threads: Annotated[int, Field(ge=0)] = 0
    checkpoint_every: PositiveInt = 5
    # MLflow: by default sqlite:///<repo root>/mlflow.db and artifacts in <repo root>/mlruns.
    tracking_uri: str | None = None
    experiment: str = "genlab"

    @field_validator("data_mirror")
    @classmethod
    def _mirror_from_repo_root(cls, v: Path | None) -> Path | None:
        # A relative mirror is relative to the repository, also when `dvc exp run --temp` runs the stage in a
        # temporary copy (DVC sets DVC_ROOT to the original repository there).
        if v is None or v.is_absolute():
            return v
        return (Path(os.environ.get("DVC_ROOT", ".")) / v).resolve()


class ConfigError(SystemExit):
    """A bad params.yaml. Exits non-zero with one readable message."""

    def __init__(self, message: str):
        super().__init__(f"genlab: invalid configuration\n{message}")
        self.message = message


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key '{key}'. Check the spelling; allowed keys are in params.yaml's docs.")
            continue
        value = e.get("input")
        shown = "(missing)" if e["type"] == "missing" else repr(value)
        if isinstance(value, dict) and e["type"] != "missing":
            shown = "{...}"
        msg = re.sub(r"^Value error, ", "", e["msg"])
        lines.append(f"  {path}: {key} = {shown}: {msg}")
    return "\n".join(lines)


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ConfigError (a SystemExit) naming the bad key."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"  {path}: file not found (run from the repository root)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"  {path}: not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"  {path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params(**raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, e)) from None


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
