"""Variational autoencoder with MLP encoder and decoder (Kingma & Welling 2014, "Auto-Encoding Variational
Bayes", arXiv:1312.6114).

Inputs are flattened grey levels in [0, 1] used directly as Bernoulli targets (not binarised), so the
reconstruction term cannot reach zero: its floor is the entropy of the pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VaeLoss:
    """Per-image means over the batch, in nats."""

    loss: torch.Tensor  # negative ELBO = reconstruction + kl
    reconstruction: torch.Tensor
    kl: torch.Tensor


class VAE(nn.Module):
    def __init__(self, hidden: Sequence[int], latent_dim: int, image_dim: int = 784):
        super().__init__()
        self.latent_dim = latent_dim
        enc: list[nn.Module] = []
        for fan_in, fan_out in zip([image_dim, *hidden[:-1]], hidden, strict=True):
            enc += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.encoder = nn.Sequential(*enc)
        # One linear layer gives both mean and log-variance: [B, 2 * latent_dim].
        self.to_moments = nn.Linear(hidden[-1], 2 * latent_dim)
        dec: list[nn.Module] = []
        for fan_in, fan_out in zip([latent_dim, *reversed(hidden[1:])], list(reversed(hidden)), strict=True):
            dec += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        dec.append(nn.Linear(hidden[0], image_dim))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 784] -> (mu, logvar), each [B, latent_dim]."""
        mu, logvar = self.to_moments(self.encoder(x)).chunk(2, dim=-1)
        return mu, logvar

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): sampling made differentiable in mu and sigma (Kingma & Welling,
        sec. 2.4)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim] -> Bernoulli logits [B, 784]."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim] -> pixel means [B, 784] in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction logits, mu, logvar)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator)
        return self.decode_logits(z), mu, logvar

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VaeLoss:
        """Negative ELBO per image: BCE summed over pixels + KL(q(z|x) || N(0, I)) (Kingma & Welling, appendix B)."""
        logits, mu, logvar = self(x, generator)
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
        return VaeLoss(loss=reconstruction + kl, reconstruction=reconstruction, kl=kl)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), [n, latent_dim], on the model's device."""
        device = self.to_moments.weight.device
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def iwae_log_likelihood(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x) with k samples, per image [B], in nats (Burda et al. 2016,
        "Importance Weighted Autoencoders", arXiv:1509.00519, eq. 8):

            log p(x) >= E[ log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) ],  z_i ~ q(z|x).

        k = 1 is the ELBO; the bound tightens as k grows. x: [B, 784] grey levels used as Bernoulli targets.
        """
        mu, logvar = self.encode(x)  # [B, d]
        eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)  # [k, B, d]
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decode_logits(z)  # [k, B, 784]
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        # The 0.5 * log(2 pi) terms of p(z) and q(z|x) cancel.
        log_pz = -0.5 * z.pow(2).sum(-1)
        log_qz_x = -0.5 * (eps.pow(2) + logvar).sum(-1)
        log_w = log_px_z + log_pz - log_qz_x  # [k, B]
        return torch.logsumexp(log_w, dim=0) - math.log(k)
