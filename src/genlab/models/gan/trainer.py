"""The GAN's trainer: alternating discriminator and generator steps (Goodfellow et al. 2014, Algorithm 1, with
k = 1), on the shared loop of genlab.trainer. A conditional GAN trains on (image, digit) pairs: the generator's
images carry the real batch's labels, so both sides see the data's class balance."""

from __future__ import annotations

from typing import Any

import torch

from genlab.config import ConfigError
from genlab.data import TrainingData
from genlab.models.base import cycling_labels, digit_rows
from genlab.models.gan.config import GanConfig
from genlab.models.gan.model import GAN
from genlab.optim import adam
from genlab.streams import make_generator
from genlab.trainer import Trainer, to_uint8_images


class GanTrainer(Trainer):
    model: GAN

    def __init__(self, model: GAN, cfg: GanConfig, data: TrainingData, **context: Any):
        """context: the keyword arguments of genlab.trainer.Trainer (name, config, seed, device, diagnostics)."""
        super().__init__(model, cfg, data, **context)
        if self.world.distributed and cfg.r1_gamma > 0:
            # DistributedDataParallel syncs gradients in .backward() only; the R1 penalty takes torch.autograd.grad.
            raise ConfigError(
                f"{self.name}.r1_gamma = {cfg.r1_gamma:g}: the R1 penalty does not run under torchrun"
                " (GENLAB_PROCESSES > 1); train this variant in one process or set r1_gamma: 0"
            )
        seed, device = self.seed, self.device
        self.gan = model
        model.use_generator(self.rng)  # dropout masks come from the trainer's stream too
        self.data = data.train_images.mul(2.0).sub_(1.0)  # [N, 784] in [-1, 1], the generator's tanh range
        self.labels = data.train_labels if cfg.conditional else None
        self.batch_size = cfg.batch_size
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = adam(model.generator.parameters(), lr=cfg.lr, betas=betas, device=device)
        lr_d = cfg.lr if cfg.discriminator_lr is None else cfg.discriminator_lr
        self.opt_d = adam(model.discriminator.parameters(), lr=lr_d, betas=betas, device=device)
        # Under torchrun, DDP wrappers that sync the gradients of the steps they take part in: the discriminator's
        # step runs both networks through them. The generator's step runs the bare discriminator, whose weights
        # take no gradient there.
        self.generator_net = self.world.replicate(model.generator)
        self.discriminator_net = self.world.replicate(model.discriminator)
        # The same input every epoch, from its own stream, so grids are comparable across epochs and runs. A
        # conditional GAN draws ten rows from the same noise, row k asking for digit k.
        fixed = make_generator(seed, stream=2, device=device)
        self.fixed_labels: torch.Tensor | None = None
        if cfg.conditional:
            self.fixed_noise, self.fixed_labels = digit_rows(model.sample_noise(cfg.num_fixed_samples // 10, fixed))
        else:
            self.fixed_noise = model.sample_noise(cfg.num_fixed_samples, fixed)
        self.diagnostic_noise = model.sample_noise(
            cfg.diagnostic_samples, make_generator(seed, stream=4, device=device)
        )
        self.diagnostic_labels = cycling_labels(cfg.diagnostic_samples, device) if cfg.conditional else None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def compile_targets(self) -> list[torch.nn.Module]:
        return [self.model.generator, self.model.discriminator]

    def train_epoch(self) -> dict[str, float]:
        gan, n = self.gan, self.data.shape[0]
        gan.train()
        # Sums over the epoch's samples, kept on the device: [loss_d, loss_g, D(x), D(G(z)), correct].
        sums = torch.zeros(5, device=self.device)
        for idx in self.batches(n, self.batch_size):
            real = self.data.index_select(0, idx)
            labels = None if self.labels is None else self.labels.index_select(0, idx)
            b = real.shape[0]
            with self.autocast():
                fake = self.generator_net(gan.sample_noise(b, self.rng), labels)
                loss_d, real_logits, fake_logits = gan.discriminator_loss(
                    real, fake.detach(), labels, discriminator=self.discriminator_net
                )
            self.opt_d.zero_grad(set_to_none=True)
            self.for_backward(loss_d, b).backward()
            self.opt_d.step()

            # Generator step. The discriminator's weights need no gradients here: skipping them saves a third
            # of its backward pass.
            gan.discriminator.requires_grad_(False)
            with self.autocast():
                loss_g, _ = gan.generator_loss(fake, labels)
            self.opt_g.zero_grad(set_to_none=True)
            self.for_backward(loss_g, b).backward()
            self.opt_g.step()
            gan.update_average()
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
        s = (self.epoch_totals(sums) / n).tolist()  # the one host sync of the epoch
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
        return to_uint8_images(self.gan.generate(self.fixed_noise, self.fixed_labels))

    def snapshot_extra(self) -> dict[str, Any]:
        # Conditional: rows of digits, as many images per row as there are fixed noise vectors.
        return {} if self.fixed_labels is None else {"nrow": self.fixed_noise.shape[0] // 10}

    @torch.no_grad()
    def diagnostic_images(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.gan.eval()
        return self.gan.generate(self.diagnostic_noise, self.diagnostic_labels).flatten(1), self.diagnostic_labels


TRAINER = GanTrainer
