"""The GAN's trainer: alternating discriminator and generator steps (Goodfellow et al. 2014, Algorithm 1, with
k = 1), on the shared loop of genlab.trainer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genlab.models.gan import GAN
from genlab.optim import adam
from genlab.streams import batch_indices, make_generator
from genlab.trainer import Trainer, to_uint8_images


class GanTrainer(Trainer):
    kind = "gan"

    def __init__(
        self,
        model: GAN,
        train_images: torch.Tensor,
        config: dict[str, Any],
        *,
        batch_size: int,
        lr: float,
        betas: tuple[float, float],
        num_fixed_samples: int,
        seed: int,
        device: torch.device,
        precision: str = "fp32",
        compile_mode: str = "eager",
        diagnostic_samples: int = 0,
        diagnostics: Callable[[torch.Tensor], dict[str, float]] | None = None,
    ):
        super().__init__(
            model,
            config,
            seed=seed,
            device=device,
            precision=precision,
            compile_mode=compile_mode,
            diagnostics=diagnostics,
        )
        self.gan = model
        model.use_generator(self.rng)  # dropout masks come from the trainer's stream too
        self.data = train_images  # float [N, 784] in [-1, 1], on device
        self.batch_size = batch_size
        self.opt_g = adam(model.generator.parameters(), lr=lr, betas=betas, device=device)
        self.opt_d = adam(model.discriminator.parameters(), lr=lr, betas=betas, device=device)
        # The same input every epoch, from its own stream, so grids are comparable across epochs and runs.
        self.fixed_noise = model.sample_noise(num_fixed_samples, make_generator(seed, stream=2, device=device))
        self.diagnostic_noise = model.sample_noise(diagnostic_samples, make_generator(seed, stream=4, device=device))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def compile_targets(self) -> list[torch.nn.Module]:
        return [self.gan.generator, self.gan.discriminator]

    def train_epoch(self) -> dict[str, float]:
        gan, n = self.gan, self.data.shape[0]
        gan.train()
        # Sums over the epoch's samples, kept on the device: [loss_d, loss_g, D(x), D(G(z)), correct].
        sums = torch.zeros(5, device=self.device)
        for idx in batch_indices(n, self.batch_size, self.rng, self.device):
            real = self.data.index_select(0, idx)
            b = real.shape[0]
            with self.autocast():
                fake = gan.generator(gan.sample_noise(b, self.rng))
                loss_d, real_logits, fake_logits = gan.discriminator_loss(real, fake.detach())
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()

            # Generator step. The discriminator's weights need no gradients here: skipping them saves a third
            # of its backward pass.
            gan.discriminator.requires_grad_(False)
            with self.autocast():
                loss_g, _ = gan.generator_loss(fake)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            gan.discriminator.requires_grad_(True)

            with torch.no_grad():
                sums += torch.stack(
                    [
                        loss_d * b,
                        loss_g * b,
                        torch.sigmoid(real_logits).sum(),
                        torch.sigmoid(fake_logits).sum(),
                        (real_logits > 0).sum() + (fake_logits < 0).sum(),
                    ]
                )
        s = (sums / n).tolist()  # the one host sync of the epoch
        return {
            "loss_d": s[0],
            "loss_g": s[1],
            "d_real": s[2],
            "d_fake": s[3],
            "discriminator_accuracy": s[4] / 2,
        }

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        self.gan.eval()
        return to_uint8_images(self.gan.generator(self.fixed_noise), symmetric=True)

    @torch.no_grad()
    def diagnostic_images(self) -> torch.Tensor:
        self.gan.eval()
        return (self.gan.generator(self.diagnostic_noise) + 1) / 2


def build_gan(cfg: dict[str, Any]) -> GAN:
    return GAN(
        latent_dim=cfg["latent_dim"],
        generator_hidden=cfg["generator_hidden"],
        discriminator_hidden=cfg["discriminator_hidden"],
        leaky_slope=cfg["leaky_slope"],
        dropout=cfg["dropout"],
        real_label=cfg["real_label"],
    )
