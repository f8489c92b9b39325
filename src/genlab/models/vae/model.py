"""Variational autoencoder with MLP encoder and decoder (Kingma & Welling 2014, "Auto-Encoding Variational
Bayes", arXiv:1312.6114), optionally conditioned on the digit: the one-hot label joins the encoder's input and the
decoder's (the conditional VAE of Sohn et al. 2015, "Learning Structured Output Representation using Deep
Conditional Generative Models"; Kingma et al. 2014's M2 with the label observed). Its bound is then on log p(x|y).

Inputs are flattened grey levels in [0, 1] used directly as Bernoulli targets (not binarised), so the
reconstruction term cannot reach zero: its floor is the entropy of the pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.base import (
    IMAGE_DIM,
    IMAGE_SIDE,
    NUM_CLASSES,
    GenerativeModel,
    linear_sizes,
    mlp_flops,
    one_hot,
)
from genlab.streams import make_generator

if TYPE_CHECKING:
    from genlab.config import EvaluateConfig
    from genlab.models.vae.config import VaeConfig


@dataclass
class VaeLoss:
    """Per-image means over the batch, in nats."""

    loss: torch.Tensor  # negative ELBO = reconstruction + kl
    reconstruction: torch.Tensor
    kl: torch.Tensor


class VAE(GenerativeModel):
    kind = "vae"
    evaluation_stream = 13

    def __init__(self, hidden: Sequence[int], latent_dim: int, image_dim: int = IMAGE_DIM, conditional: bool = False):
        super().__init__()
        self.latent_dim = latent_dim
        self.conditional = conditional
        label_dim = NUM_CLASSES * conditional
        enc: list[nn.Module] = []
        for fan_in, fan_out in zip([image_dim + label_dim, *hidden[:-1]], hidden, strict=True):
            enc += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.encoder = nn.Sequential(*enc)
        # One linear layer gives both mean and log-variance: [B, 2 * latent_dim].
        self.to_moments = nn.Linear(hidden[-1], 2 * latent_dim)
        dec: list[nn.Module] = []
        for fan_in, fan_out in zip(
            [latent_dim + label_dim, *reversed(hidden[1:])], list(reversed(hidden)), strict=True
        ):
            dec += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        dec.append(nn.Linear(hidden[0], image_dim))
        self.decoder = nn.Sequential(*dec)

    @classmethod
    def from_config(cls, cfg: VaeConfig) -> VAE:
        return cls(hidden=cfg.hidden, latent_dim=cfg.latent_dim, conditional=cfg.conditional)

    def _with_label(self, v: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """[B, d] -> [B, d + 10] with the one-hot label when conditional; v unchanged otherwise."""
        if not self.conditional:
            return v
        assert labels is not None, "a conditional VAE needs labels"
        return torch.cat([v, one_hot(labels, v.dtype)], dim=-1)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, 784] (, labels [B]) -> (mu, logvar), each [B, latent_dim], float32 also under bf16 autocast: the
        sampled z and the KL need more than bf16's 8 mantissa bits (a no-op in fp32)."""
        moments = self.to_moments(self.encoder(self._with_label(x, labels))).float()
        mu, logvar = moments.chunk(2, dim=-1)
        return mu, logvar

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): sampling made differentiable in mu and sigma (Kingma & Welling,
        sec. 2.4)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode_logits(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z [..., latent_dim] (, labels [...]) -> Bernoulli logits [..., 784]."""
        return self.decoder(self._with_label(z, labels))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z [B, latent_dim] (, labels [B]) -> pixel means [B, 784] in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, labels))

    def generate(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded prior draws (the Bernoulli means), [B, 1, 28, 28]."""
        return self.decode(latent, labels).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction logits, mu, logvar)."""
        mu, logvar = self.encode(x, labels)
        z = self.reparameterize(mu, logvar, generator)
        return self.decode_logits(z, labels), mu, logvar

    def loss(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        *,
        network: nn.Module | None = None,
    ) -> VaeLoss:
        """Negative ELBO per image: BCE summed over pixels + KL(q(z|x) || N(0, I)) (Kingma & Welling, appendix B).
        Conditional: of log p(x|y), with q(z|x,y) and p(x|z,y). `network`: what runs the forward pass, this VAE
        or a DistributedDataParallel wrapper of it (genlab.distributed)."""
        logits, mu, logvar = (self if network is None else network)(x, generator, labels)
        # Summed over 784 pixels in float32 also when the decoder ran in bf16.
        reconstruction = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
        return VaeLoss(loss=reconstruction + kl, reconstruction=reconstruction, kl=kl)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), [n, latent_dim], on the model's device."""
        return self.sample_latent(n, generator)

    def flops_per_sample(self) -> int:
        enc = linear_sizes(self.encoder) + linear_sizes(self.to_moments)
        dec = linear_sizes(self.decoder)
        return mlp_flops(enc, forward=1, weight_grad=1, input_grad=1, first_input_grad=0) + mlp_flops(
            dec, forward=1, weight_grad=1, input_grad=1, first_input_grad=1
        )

    def iwae_log_likelihood(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x) with k samples, per image [B], in nats (Burda et al. 2016,
        "Importance Weighted Autoencoders", arXiv:1509.00519, eq. 8):

            log p(x) >= E[ log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) ],  z_i ~ q(z|x).

        k = 1 is the ELBO; the bound tightens as k grows. x: [B, 784] grey levels used as Bernoulli targets.
        Conditional: the bound on log p(x|y).
        """
        mu, logvar = self.encode(x, labels)  # [B, d]
        eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)  # [k, B, d]
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.decode_logits(z, None if labels is None else labels.expand(k, -1))  # [k, B, 784]
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        # The 0.5 * log(2 pi) terms of p(z) and q(z|x) cancel.
        log_pz = -0.5 * z.pow(2).sum(-1)
        log_qz_x = -0.5 * (eps.pow(2) + logvar).sum(-1)
        log_w = log_px_z + log_pz - log_qz_x  # [k, B]
        return torch.logsumexp(log_w, dim=0) - math.log(k)

    @torch.no_grad()
    def evaluation_metrics(
        self, test_images: torch.Tensor, test_labels: torch.Tensor, *, seed: int, cfg: EvaluateConfig
    ) -> dict[str, float]:
        labels = test_labels if self.conditional else None
        return {
            **reconstruction_metrics(self, test_images, labels, seed=seed, batch_size=cfg.batch_size),
            **iwae_metrics(self, test_images, labels, k=cfg.iwae_samples, seed=seed),
        }


@torch.no_grad()
def evaluate_loss(
    vae: VAE, images: torch.Tensor, labels: torch.Tensor | None = None, *, seed: int, batch_size: int = 1000
) -> dict[str, float]:
    """Negative ELBO and its terms per image over `images`, with a fixed noise stream (same every call)."""
    vae.eval()
    g = make_generator(seed, stream=3, device=images.device)
    sums = torch.zeros(3, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        y = None if labels is None else labels[start : start + batch_size]
        out = vae.loss(x, g, y)
        sums += torch.stack([out.loss, out.reconstruction, out.kl]) * x.shape[0]
    s = (sums / images.shape[0]).tolist()
    return {"loss": s[0], "reconstruction": s[1], "kl": s[2]}


@torch.no_grad()
def reconstruction_metrics(
    vae: VAE, images: torch.Tensor, labels: torch.Tensor | None, *, seed: int, batch_size: int = 1000
) -> dict[str, float]:
    """Reconstruction error over all of `images` ([0, 1], [N, 784]).

    mse_per_pixel and bce_per_image decode from the posterior mean (deterministic); the negative ELBO uses one
    sampled z per image from a fixed stream, in nats per image.
    """
    vae.eval()
    n = images.shape[0]
    sq = bce = 0.0
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size]
        y = None if labels is None else labels[start : start + batch_size]
        mu, _ = vae.encode(x, y)
        logits = vae.decode_logits(mu, y)
        sq += float(F.mse_loss(torch.sigmoid(logits), x, reduction="sum"))
        bce += float(F.binary_cross_entropy_with_logits(logits, x, reduction="sum"))
    elbo = evaluate_loss(vae, images, labels, seed=seed, batch_size=batch_size)
    return {
        "mse_per_pixel": sq / images.numel(),
        "bce_per_image": bce / n,
        "test_loss": elbo["loss"],
        "test_reconstruction": elbo["reconstruction"],
        "test_kl": elbo["kl"],
        "num_images": n,
    }


@torch.no_grad()
def iwae_metrics(
    vae: VAE, images: torch.Tensor, labels: torch.Tensor | None, *, k: int, seed: int, batch_size: int = 100
) -> dict[str, float]:
    """Test negative log-likelihood estimated by the IWAE bound with k importance samples, in nats per image (an
    upper bound on the NLL, tighter than the negative ELBO), beside the floor any model has on grey-level targets:
    the pixels' own entropy."""
    vae.eval()
    g = make_generator(seed, stream=11, device=images.device)
    total = 0.0
    for start in range(0, images.shape[0], batch_size):
        y = None if labels is None else labels[start : start + batch_size]
        total += float(vae.iwae_log_likelihood(images[start : start + batch_size], k, g, y).double().sum())
    return {
        "test_nll_iwae": -total / images.shape[0],
        "iwae_samples": k,
        "bce_floor_per_image": pixel_entropy(images),
    }


def pixel_entropy(images: torch.Tensor) -> float:
    """Mean over images of the summed binary entropy of the grey levels, in nats per image.

    With grey levels as Bernoulli targets, BCE(q, x) = H(x) + KL(x || q) >= H(x): this is the lowest reconstruction
    term (and negative ELBO) any model can reach on these images, not zero.
    """
    x = images.double()
    h = -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x))
    return float(h.sum(dim=1).mean())


MODEL = VAE
