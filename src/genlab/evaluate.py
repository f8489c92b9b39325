"""Evaluation of the trained models: their own diagnostics (discriminator accuracy, reconstruction error, VAE
likelihood bounds) and sampling for the sample metrics of genlab.metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genlab.metrics import pixel_entropy
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.streams import make_generator
from genlab.vae_trainer import evaluate_vae_loss


@torch.no_grad()
def discriminator_accuracy(gan: GAN, real: torch.Tensor, *, seed: int, batch_size: int = 1000) -> dict[str, float]:
    """The trained discriminator on held-out real images ([-1, 1], [N, 784]) against N fresh generated ones.

    Accuracy 0.5 means the discriminator cannot tell them apart; 1.0 means it always can. Mean D(x) and D(G(z))
    are the discriminator's average probabilities of "real".
    """
    gan.eval()
    g = make_generator(seed, stream=10, device=real.device)
    n = real.shape[0]
    correct = d_real = d_fake = 0.0
    for start in range(0, n, batch_size):
        x = real[start : start + batch_size]
        real_logits = gan.discriminator(x)
        fake_logits = gan.discriminator(gan.generator(gan.sample_noise(x.shape[0], g)))
        correct += float((real_logits > 0).sum() + (fake_logits < 0).sum())
        d_real += float(torch.sigmoid(real_logits).sum())
        d_fake += float(torch.sigmoid(fake_logits).sum())
    return {
        "discriminator_accuracy": correct / (2 * n),
        "d_real": d_real / n,
        "d_fake": d_fake / n,
        "num_real": n,
        "num_generated": n,
    }


@torch.no_grad()
def vae_reconstruction(vae: VAE, images: torch.Tensor, *, seed: int, batch_size: int = 1000) -> dict[str, float]:
    """Reconstruction error over all of `images` ([0, 1], [N, 784]).

    mse_per_pixel and bce_per_image decode from the posterior mean (deterministic); the negative ELBO uses one
    sampled z per image from a fixed stream, in nats per image.
    """
    vae.eval()
    n = images.shape[0]
    sq = bce = 0.0
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size]
        mu, _ = vae.encode(x)
        logits = vae.decode_logits(mu)
        sq += float(F.mse_loss(torch.sigmoid(logits), x, reduction="sum"))
        bce += float(F.binary_cross_entropy_with_logits(logits, x, reduction="sum"))
    elbo = evaluate_vae_loss(vae, images, seed=seed, batch_size=batch_size)
    return {
        "mse_per_pixel": sq / images.numel(),
        "bce_per_image": bce / n,
        "test_loss": elbo["loss"],
        "test_reconstruction": elbo["reconstruction"],
        "test_kl": elbo["kl"],
        "num_images": n,
    }


@torch.no_grad()
def vae_log_likelihood(vae: VAE, images: torch.Tensor, *, k: int, seed: int, batch_size: int = 100) -> dict[str, float]:
    """Test negative log-likelihood estimated by the IWAE bound with k importance samples, in nats per image (an
    upper bound on the NLL, tighter than the negative ELBO), beside the floor any model has on grey-level targets:
    the pixels' own entropy."""
    vae.eval()
    g = make_generator(seed, stream=11, device=images.device)
    total = 0.0
    for start in range(0, images.shape[0], batch_size):
        total += float(vae.iwae_log_likelihood(images[start : start + batch_size], k, g).double().sum())
    return {
        "test_nll_iwae": -total / images.shape[0],
        "iwae_samples": k,
        "bce_floor_per_image": pixel_entropy(images),
    }


@torch.no_grad()
def gan_samples(gan: GAN, n: int, *, seed: int, batch_size: int = 1000) -> torch.Tensor:
    """n generated images from fixed noise, [n, 784] in [0, 1]."""
    gan.eval()
    g = make_generator(seed, stream=12, device=next(gan.parameters()).device)
    out = [gan.generator(gan.sample_noise(min(batch_size, n - i), g)) for i in range(0, n, batch_size)]
    return (torch.cat(out) + 1) / 2


@torch.no_grad()
def vae_samples(vae: VAE, n: int, *, seed: int, batch_size: int = 1000) -> torch.Tensor:
    """n images decoded from prior draws z ~ N(0, I) (the Bernoulli means), [n, 784] in [0, 1]."""
    vae.eval()
    g = make_generator(seed, stream=13, device=next(vae.parameters()).device)
    return torch.cat([vae.decode(vae.sample_prior(min(batch_size, n - i), g)) for i in range(0, n, batch_size)])


def real_samples(images: torch.Tensor, n: int, *, seed: int) -> torch.Tensor:
    """n distinct images drawn at random (fixed seed): the training images that stand in for a perfect model."""
    g = make_generator(seed, stream=14, device=images.device)
    return images.index_select(0, torch.randperm(images.shape[0], generator=g, device=images.device)[:n])
