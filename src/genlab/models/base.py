"""What every generative model kind provides, so that training, rendering, evaluation, the MLflow export and the
`genlab generate` command serve any registered kind (genlab.registry) without knowing it.

One convention for images: `generate` and `sample` return grey levels in [0, 1], shape [N, 1, 28, 28], whatever
range the network works in (the GAN's tanh gives [-1, 1]; it converts). Labels are digit classes, long [N], for
conditional models only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

NUM_CLASSES = 10  # MNIST and Fashion-MNIST both have ten classes
IMAGE_SIDE = 28
IMAGE_DIM = IMAGE_SIDE * IMAGE_SIDE


def check_labels(labels: torch.Tensor | None, n: int, *, conditional: bool, kind: str) -> None:
    """Conditional models need one label in [0, NUM_CLASSES) per image; unconditional ones take none."""
    if not conditional:
        if labels is not None:
            raise ValueError(f"{kind} is an unconditional model: it takes no labels")
        return
    if labels is None:
        raise ValueError(f"{kind} is a conditional model: give one label per image")
    if labels.shape != (n,) or labels.dtype != torch.long:
        raise ValueError(
            f"{kind}: labels must be a long tensor of shape [{n}], got {labels.dtype} {tuple(labels.shape)}"
        )
    if n and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        raise ValueError(f"{kind}: labels must lie in 0..{NUM_CLASSES - 1}")


def one_hot(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """long [N] -> [N, NUM_CLASSES] one-hot, the label input of the conditional networks."""
    return nn.functional.one_hot(labels, NUM_CLASSES).to(dtype)


def cycling_labels(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """0, 1, ..., 9, 0, 1, ...: balanced labels for n conditional samples."""
    return torch.arange(n, device=device) % NUM_CLASSES


def digit_rows(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditional grid's inputs: the same `latent` [C, d] in every row, row k asking for digit k.
    Returns (latent [NUM_CLASSES * C, d], labels [NUM_CLASSES * C]); drawn with C images per row."""
    per_row = latent.shape[0]
    labels = torch.arange(NUM_CLASSES, device=latent.device).repeat_interleave(per_row)
    return latent.repeat(NUM_CLASSES, 1), labels


class GenerativeModel(nn.Module, ABC):
    """A model kind's network. Subclasses build from their typed config section (`from_config`)."""

    kind: ClassVar[str]
    # The random stream of evaluation samples (genlab.streams). Kept per kind as it was before the registry, so
    # that evaluation keeps its recorded bits.
    evaluation_stream: ClassVar[int] = 12

    conditional: bool
    latent_dim: int

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Any) -> GenerativeModel: ...

    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The model's input noise, [n, latent_dim], N(0, I), on the model's device."""
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device())

    @abstractmethod
    def generate(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images from given noise (and labels), [N, 1, 28, 28] in [0, 1]."""

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n new images, [n, 1, 28, 28] in [0, 1]; labels (long [n]) for conditional models."""
        check_labels(labels, n, conditional=self.conditional, kind=self.kind)
        return self.generate(self.sample_latent(n, generator), labels)

    def sampler(self) -> nn.Module:
        """The module logged as the MLflow model: latent [B, latent_dim] (and labels) -> images."""
        return Sampler(self)

    @abstractmethod
    def flops_per_sample(self) -> int:
        """Matmul FLOPs of one training step per sample (forward and backward), for the benchmark's MFU."""

    def evaluation_metrics(
        self, test_images: torch.Tensor, test_labels: torch.Tensor, *, seed: int, cfg: Any
    ) -> dict[str, float]:
        """The kind's own test-set metrics beside the sample metrics (images [N, 784] in [0, 1], labels long [N];
        cfg: the evaluate section). None by default."""
        return {}


class Sampler(nn.Module):
    """A model's generate() as a module (MLflow logs modules): latent [B, d] (, labels [B]) -> [B, 1, 28, 28]."""

    def __init__(self, model: GenerativeModel):
        super().__init__()
        self.model = model

    def forward(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.generate(latent, labels)


def linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def mlp_flops(sizes: list[tuple[int, int]], *, forward: int, weight_grad: int, input_grad: int, first_input_grad: int):
    """FLOPs of matmuls: each Linear costs 2*in*out per row for forward, weight gradient and input gradient.
    Arguments say how many rows (per real sample) each pass processes; the first layer's input gradient is
    only needed when something upstream trains (the generator, for the discriminator in a generator step)."""
    total = 0
    for i, (fan_in, fan_out) in enumerate(sizes):
        per = 2 * fan_in * fan_out
        total += per * (forward + weight_grad + (first_input_grad if i == 0 else input_grad))
    return total
