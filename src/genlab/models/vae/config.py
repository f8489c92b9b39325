"""The VAE kind's params section."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from genlab.config import (
    BatchSize,
    CompileMode,
    DiagnosticSamples,
    Epochs,
    GridImages,
    LearningRate,
    ModelSection,
    Precision,
    Width,
)
from genlab.models.base import NUM_CLASSES


class VaeConfig(ModelSection):
    # Label-conditioned (Sohn et al. 2015): encoder and decoder both get the digit beside their input.
    conditional: bool = False
    epochs: Epochs = 100
    batch_size: BatchSize = 128
    hidden: list[Width] = [512, 256]
    latent_dim: Width = 20
    lr: LearningRate = 1e-3
    # Unconditional: reconstructions of this many fixed test images, rendered every epoch.
    num_reconstructions: GridImages = 32
    # Conditional: generated images from fixed prior draws, rendered every epoch as ten rows, row k of digit k.
    num_fixed_samples: GridImages = 80
    # Per-epoch class coverage and classifier score of this many samples from fixed prior draws (0: off).
    diagnostic_samples: DiagnosticSamples = 1000
    precision: Precision = "fp32"
    compile: CompileMode = "eager"

    @model_validator(mode="after")
    def _rows_of_digits(self) -> VaeConfig:
        if self.conditional and self.num_fixed_samples % NUM_CLASSES:
            raise ValueError(
                f"num_fixed_samples = {self.num_fixed_samples}: a conditional model draws {NUM_CLASSES} rows of"
                f" equal length; choose a multiple of {NUM_CLASSES}"
            )
        return self

    def record(self) -> dict[str, Any]:
        # An unconditional VAE's record keeps exactly the keys it had before conditioning existed: its checkpoint's
        # bytes depend on them.
        return self.model_dump(exclude=None if self.conditional else {"conditional", "num_fixed_samples"})


CONFIG = VaeConfig
