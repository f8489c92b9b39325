"""Independent Gaussian pixels: x ~ N(mean[y], exp(log_std[y])^2), clamped to [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from genlab.models.base import IMAGE_DIM, NUM_CLASSES, GenerativeModel


class Pixels(GenerativeModel):
    kind = "pixels"

    def __init__(self, conditional: bool = False):
        super().__init__()
        self.conditional = conditional
        self.latent_dim = IMAGE_DIM
        rows = NUM_CLASSES if conditional else 1
        self.mean = nn.Parameter(torch.full((rows, IMAGE_DIM), 0.5))
        self.log_std = nn.Parameter(torch.zeros(rows, IMAGE_DIM))

    @classmethod
    def from_config(cls, cfg) -> Pixels:
        return cls(conditional=cfg.conditional)

    def _row(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        return labels if labels is not None else torch.zeros(n, dtype=torch.long, device=self.mean.device)

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian negative log-likelihood per image (up to a constant)."""
        row = self._row(labels, x.shape[0])
        mean, log_std = self.mean[row], self.log_std[row]
        return (((x - mean) / log_std.exp()).square() / 2 + log_std).sum(1).mean()

    def generate(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        row = self._row(labels, latent.shape[0])
        return (self.mean[row] + self.log_std[row].exp() * latent).clamp(0, 1).reshape(-1, 1, 28, 28)

    def flops_per_sample(self) -> int:
        return 0  # no matmuls


MODEL = Pixels
