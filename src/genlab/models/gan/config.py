"""The GAN kind's params section."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from genlab.config import (
    BatchSize,
    CompileMode,
    DiagnosticSamples,
    Epochs,
    GridImages,
    LearningRate,
    ModelSection,
    Precision,
    Probability,
    Section,
    Width,
)
from genlab.models.base import NUM_CLASSES

RealLabel = Annotated[float, Field(gt=0.5, le=1)]


class GanOverrides(Section):
    """A named variant: the GAN keys it changes (see GanConfig)."""

    lr: LearningRate | None = None
    beta1: Probability | None = None
    beta2: Probability | None = None
    real_label: RealLabel | None = None
    dropout: Probability | None = None
    batch_size: BatchSize | None = None


class GanConfig(ModelSection):
    # "faithful" is the original write-up; any other name applies <section>.variants.<name> on top of these values.
    variant: str = "faithful"
    variants: dict[str, GanOverrides] = {"stable": GanOverrides(beta1=0.5, real_label=0.9)}
    # Label-conditioned: the generator gets the digit beside z, the discriminator scores (image, digit) pairs.
    conditional: bool = False
    epochs: Epochs = 100
    batch_size: BatchSize = 100
    latent_dim: Width = 100
    generator_hidden: list[Width] = [256, 512, 1024]
    discriminator_hidden: list[Width] = [1024, 512, 256]
    leaky_slope: Annotated[float, Field(ge=0, lt=1)] = 0.2
    dropout: Probability = 0.3
    lr: LearningRate = 2e-4
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    # Target for real images in the discriminator loss; < 1 is one-sided label smoothing (Salimans et al. 2016).
    real_label: RealLabel = 1.0
    # Fixed-noise images rendered every epoch; a conditional model draws them as ten rows, row k of digit k.
    num_fixed_samples: GridImages = 64
    # Per-epoch class coverage and classifier score of this many fixed-noise samples (0: off).
    diagnostic_samples: DiagnosticSamples = 1000
    precision: Precision = "fp32"
    compile: CompileMode = "eager"

    @model_validator(mode="after")
    def _variant_is_defined(self) -> GanConfig:
        if "faithful" in self.variants:
            raise ValueError("variants may not redefine 'faithful' (the base values are the faithful variant)")
        if self.variant != "faithful" and self.variant not in self.variants:
            raise ValueError(
                f"variant {self.variant!r} is not defined; choose 'faithful' or one of {sorted(self.variants)}"
            )
        if self.conditional and self.num_fixed_samples % NUM_CLASSES:
            raise ValueError(
                f"num_fixed_samples = {self.num_fixed_samples}: a conditional model draws {NUM_CLASSES} rows of"
                f" equal length; choose a multiple of {NUM_CLASSES}"
            )
        return self

    def resolved(self) -> GanConfig:
        """The values training uses: the chosen variant's overrides applied (`variant` still names it)."""
        if self.variant == "faithful":
            return self
        return self.model_copy(update=self.variants[self.variant].model_dump(exclude_none=True))

    def record(self) -> dict[str, Any]:
        # The variant table is not part of the run: resolved() applied the chosen entry. An unconditional GAN's
        # record keeps exactly the keys it had before conditioning existed: its checkpoint's bytes depend on them.
        return self.resolved().model_dump(exclude={"variants"} if self.conditional else {"variants", "conditional"})


CONFIG = GanConfig
