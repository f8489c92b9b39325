"""Fully connected GAN (Goodfellow et al. 2014, "Generative Adversarial Nets", arXiv:1406.2661), optionally
conditioned on the digit:
- generator: the one-hot label joined to z (Mirza & Osindero 2014, "Conditional Generative Adversarial Nets",
  arXiv:1411.1784);
- discriminator: a projection discriminator (Miyato & Koyama 2018, "cGANs with Projection Discriminator",
  arXiv:1802.05637, eq. 3): logit = psi(phi(x)) + embed(y) . phi(x), phi the last hidden layer. It scores whether
  the image is a real *instance of y*, a sharper signal than a label joined to the pixels.

Inside, images are flattened to 784 values in [-1, 1], matching the generator's tanh output; `generate` and
`sample` return [N, 1, 28, 28] in [0, 1] like every kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
    from genlab.models.gan.config import GanConfig


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014): zero each value with probability p, scale the rest by 1/(1-p).

    Same distribution as nn.Dropout, but the mask comes from torch.rand instead of bernoulli_, which on CPU
    costs as much as the discriminator's largest matmul (measured: 2.2 ms vs 0.8 ms for a 200x1024 mask).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        # The trainer points this at its own generator, so that one RNG state describes the whole run.
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        # In place on the uniform draws: u -> 1.0 where kept (u >= p), else 0.0 -> scaled by 1/(1-p). One float
        # mask and one multiply; bit-identical to x * (u >= p) * (1/(1-p)), since x * 1.0 == x exactly.
        mask = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        mask.ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _mlp(sizes: Sequence[int], *, leaky_slope: float, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(leaky_slope)]
        if dropout > 0:
            layers.append(Dropout(dropout))
    return layers


class Generator(nn.Module):
    """z [B, latent_dim] (, labels [B]) -> image [B, image_dim] in [-1, 1]. Conditional: the one-hot label joins z."""

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        image_dim: int = IMAGE_DIM,
        leaky_slope: float = 0.2,
        conditional: bool = False,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.conditional = conditional
        self.net = nn.Sequential(
            *_mlp([latent_dim + NUM_CLASSES * conditional, *hidden], leaky_slope=leaky_slope, dropout=0.0),
            nn.Linear(hidden[-1], image_dim),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            assert labels is not None, "a conditional generator needs labels"
            z = torch.cat([z, one_hot(labels, z.dtype)], dim=1)
        return self.net(z)


class Discriminator(nn.Module):
    """image [B, image_dim] (, labels [B]) -> logit [B] that the image is real (of that digit). Dropout after every
    activation. Conditional: a projection of the label's embedding on the last hidden layer is added."""

    def __init__(
        self,
        hidden: Sequence[int],
        image_dim: int = IMAGE_DIM,
        leaky_slope: float = 0.2,
        dropout: float = 0.3,
        conditional: bool = False,
        spectral_norm: bool = False,
    ):
        super().__init__()
        self.net = nn.Sequential(
            *_mlp([image_dim, *hidden], leaky_slope=leaky_slope, dropout=dropout),
            nn.Linear(hidden[-1], 1),
        )
        self.embed = nn.Embedding(NUM_CLASSES, hidden[-1]) if conditional else None
        if spectral_norm:
            # Every weight divided by its largest singular value, estimated by one power iteration per forward pass
            # in training (torch's parametrization; its u, v vectors are buffers, saved with the weights). The
            # label embedding too, as in the projection discriminator's paper.
            for module in [*self.net, self.embed]:
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    with_spectral_norm(module)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # Logits in float32 also under bf16 autocast, for the losses (a no-op in fp32).
        if self.embed is None:
            return self.net(x).squeeze(-1).float()
        assert labels is not None, "a conditional discriminator needs labels"
        phi = self.net[:-1](x)  # [B, hidden[-1]]
        return (self.net[-1](phi).squeeze(-1) + (self.embed(labels) * phi).sum(dim=1)).float()


class GAN(GenerativeModel):
    """Generator and discriminator with their losses: binary cross-entropy on logits.

    The generator uses the non-saturating loss of Goodfellow et al. (sec. 3): it is trained to make the
    discriminator say "real", -log D(G(z)), rather than minimising log(1 - D(G(z))).
    """

    kind = "gan"

    def __init__(
        self,
        latent_dim: int,
        generator_hidden: Sequence[int],
        discriminator_hidden: Sequence[int],
        image_dim: int = IMAGE_DIM,
        leaky_slope: float = 0.2,
        dropout: float = 0.3,
        real_label: float = 1.0,
        conditional: bool = False,
        loss: str = "bce",
        spectral_norm: bool = False,
        ema_decay: float = 0.0,
        r1_gamma: float = 0.0,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.real_label = real_label
        self.conditional = conditional
        self.loss = loss
        self.r1_gamma = r1_gamma
        self.generator = Generator(latent_dim, generator_hidden, image_dim, leaky_slope, conditional)
        self.discriminator = Discriminator(
            discriminator_hidden, image_dim, leaky_slope, dropout, conditional, spectral_norm
        )
        # The averaged generator samples; the trained one only learns. Its weights start as a copy and follow
        # update_average() after every generator step. Not a parameter of any optimiser.
        self.generator_average: AveragedModel | None = None
        if ema_decay > 0:
            self.generator_average = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
            self.generator_average.requires_grad_(False)

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator that draws samples, snapshots and evaluations: the weight average when there is one."""
        return self.generator if self.generator_average is None else self.generator_average.module

    @torch.no_grad()
    def update_average(self) -> None:
        if self.generator_average is not None:
            self.generator_average.update_parameters(self.generator)

    @classmethod
    def from_config(cls, cfg: GanConfig) -> GAN:
        return cls(
            latent_dim=cfg.latent_dim,
            generator_hidden=cfg.generator_hidden,
            discriminator_hidden=cfg.discriminator_hidden,
            leaky_slope=cfg.leaky_slope,
            dropout=cfg.dropout,
            real_label=cfg.real_label,
            conditional=cfg.conditional,
            loss=cfg.loss,
            spectral_norm=cfg.spectral_norm,
            ema_decay=cfg.ema_decay,
            r1_gamma=cfg.r1_gamma,
        )

    def generate(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.sampling_generator(latent, labels)  # [B, 784] in [-1, 1]
        return ((x + 1) / 2).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)

    def flops_per_sample(self) -> int:
        g, d = linear_sizes(self.generator), linear_sizes(self.discriminator)
        # Discriminator step: G forward on B noise rows; D forward, weight grads and inner input grads on 2B rows.
        d_step = mlp_flops(g, forward=1, weight_grad=0, input_grad=0, first_input_grad=0)
        d_step += mlp_flops(d, forward=2, weight_grad=2, input_grad=2, first_input_grad=0)
        # Generator step: D forward and input grads (all layers, to reach G) on B rows, weights frozen; G backward.
        g_step = mlp_flops(d, forward=1, weight_grad=0, input_grad=1, first_input_grad=1)
        g_step += mlp_flops(g, forward=0, weight_grad=1, input_grad=1, first_input_grad=0)
        return d_step + g_step

    @torch.no_grad()
    def evaluation_metrics(
        self, test_images: torch.Tensor, test_labels: torch.Tensor, *, seed: int, cfg: EvaluateConfig
    ) -> dict[str, float]:
        """The trained discriminator on held-out real images against as many fresh generated ones (for a
        conditional GAN, each scored with its own label; generated images get the real ones' labels).

        Accuracy 0.5 means the discriminator cannot tell them apart; 1.0 means it always can. Mean D(x) and D(G(z))
        are the discriminator's average probabilities of "real".
        """
        self.eval()
        real = test_images * 2 - 1  # the discriminator's [-1, 1]
        g = make_generator(seed, stream=10, device=real.device)
        n, batch_size = real.shape[0], cfg.batch_size
        correct = d_real = d_fake = 0.0
        for start in range(0, n, batch_size):
            x = real[start : start + batch_size]
            y = test_labels[start : start + batch_size] if self.conditional else None
            real_logits = self.discriminator(x, y)
            fake_logits = self.discriminator(self.sampling_generator(self.sample_noise(x.shape[0], g), y), y)
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

    def use_generator(self, generator: torch.Generator | None) -> None:
        """Draw dropout masks from `generator` instead of torch's global one."""
        for m in self.modules():
            if isinstance(m, Dropout):
                m.generator = generator

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample_latent(n, generator)

    def discriminator_loss(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        discriminator: nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (loss, real logits, fake logits). `fake` should be detached from the generator. Conditional: real
        and fake images both carry `labels`. `discriminator`: the network to run, self.discriminator or a
        DistributedDataParallel wrapper of it (genlab.distributed)."""
        discriminator = self.discriminator if discriminator is None else discriminator
        if self.r1_gamma > 0:
            real = real.detach().requires_grad_(True)  # the R1 penalty differentiates the logits by the images
        # One forward pass over [real; fake]: half the layer calls, and matmuls twice as tall run faster.
        both = None if labels is None else torch.cat([labels, labels])
        logits = discriminator(torch.cat([real, fake]), both)
        real_logits, fake_logits = logits[: real.shape[0]], logits[real.shape[0] :]
        if self.loss == "hinge":
            # Lim & Ye 2017, eq. 5: no loss once a real logit is above 1 or a fake one below -1.
            loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
        else:
            # One-sided label smoothing when real_label < 1 (Salimans et al. 2016, sec. 3.4).
            real_target = torch.full_like(real_logits, self.real_label)
            loss = F.binary_cross_entropy_with_logits(real_logits, real_target)
            loss = loss + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        if self.r1_gamma > 0:
            loss = loss + self.r1_penalty(real, real_logits)
        return loss, real_logits, fake_logits

    def r1_penalty(self, real: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
        """gamma/2 * mean over real images of |d logit / d image|^2 (Mescheder et al. 2018, eq. 9). `real` must
        require grad; create_graph: the penalty's own gradient reaches the discriminator's weights."""
        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)  # [B, 784]
        return self.r1_gamma / 2 * grad.float().pow(2).sum(dim=1).mean()

    def generator_loss(
        self, fake: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (loss, fake logits): BCE of D(G(z)) against the "real" label; hinge: -D(G(z)) (Lim & Ye 2017)."""
        fake_logits = self.discriminator(fake, labels)
        if self.loss == "hinge":
            return -fake_logits.mean(), fake_logits
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits)), fake_logits


MODEL = GAN
