"""The GAN kind's params section."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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
# bce: the original non-saturating GAN loss (Goodfellow et al. 2014); hinge: Lim & Ye 2017, as in SN-GAN (Miyato et
# al. 2018) and SAGAN (Zhang et al. 2019).
GanLoss = Literal["bce", "hinge"]
# Per generator step; 0 samples from the trained generator itself. 0.999 averages over the last ~1,000 steps.
EmaDecay = Annotated[float, Field(ge=0, lt=1)]
R1Gamma = Annotated[float, Field(ge=0, le=1_000)]


class GanOverrides(Section):
    """A named variant: the GAN keys it changes (see GanConfig)."""

    lr: LearningRate | None = None
    beta1: Probability | None = None
    beta2: Probability | None = None
    real_label: RealLabel | None = None
    dropout: Probability | None = None
    batch_size: BatchSize | None = None
    loss: GanLoss | None = None
    spectral_norm: bool | None = None
    ema_decay: EmaDecay | None = None
    discriminator_lr: LearningRate | None = None
    r1_gamma: R1Gamma | None = None


# Stabilisers, all off in the faithful variant, with their neutral values. A record leaves out those at their
# neutral value, so the runs made before they existed keep their checkpoints' bytes.
STABILISERS_OFF: dict[str, Any] = {
    "loss": "bce", "spectral_norm": False, "ema_decay": 0.0, "discriminator_lr": None, "r1_gamma": 0.0
}  # fmt: skip


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
    # Stabilisers (see the variants in params.yaml, and README "GAN variants" for what each measured):
    loss: GanLoss = "bce"
    # Spectral normalisation of every discriminator weight (Miyato et al. 2018, arXiv:1802.05957): each layer is
    # 1-Lipschitz, so the discriminator cannot sharpen without bound and its gradients to the generator stay useful.
    spectral_norm: bool = False
    # Samples, snapshots and the exported sampler come from an exponential moving average of the generator's
    # weights (Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training", arXiv:1806.04498).
    ema_decay: EmaDecay = 0.0
    # The discriminator's own learning rate; null: lr. Two time-scale update rule (Heusel et al. 2017,
    # arXiv:1706.08500), e.g. 4x the generator's as in SAGAN.
    discriminator_lr: LearningRate | None = None
    # R1 penalty (Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?", arXiv:1801.04406,
    # eq. 9): gamma/2 times the squared gradient norm of the discriminator's logit at real images, added to its
    # loss; 0: off. It keeps the discriminator flat on the data, where plain GAN training oscillates.
    r1_gamma: R1Gamma = 0.0

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
        # The chosen variant only: another variant's smoothing does not stop `-S gan.loss=hinge` on this one.
        run = self.resolved()
        if run.loss == "hinge" and run.real_label < 1:
            raise ValueError(
                f"variant {self.variant!r}: real_label = {run.real_label} (label smoothing) applies to the bce loss"
                " only; with loss: hinge leave real_label at 1.0"
            )
        return self

    def resolved(self) -> GanConfig:
        """The values training uses: the chosen variant's overrides applied (`variant` still names it)."""
        return self.with_variant(self.variant)

    def with_variant(self, name: str) -> GanConfig:
        if name == "faithful":
            return self
        return self.model_copy(update=self.variants[name].model_dump(exclude_none=True))

    def record(self) -> dict[str, Any]:
        # The variant table is not part of the run: resolved() applied the chosen entry. An unconditional GAN's
        # record keeps exactly the keys it had before conditioning existed: its checkpoint's bytes depend on them.
        resolved = self.resolved()
        left_out = {"variants"} if self.conditional else {"variants", "conditional"}
        left_out |= {k for k, off in STABILISERS_OFF.items() if getattr(resolved, k) == off}
        return resolved.model_dump(exclude=left_out)


CONFIG = GanConfig
