"""The VAE's trainer and its per-epoch test loss, on the shared loop of genlab.trainer. A conditional VAE trains on
(image, digit) pairs and renders ten rows of generated digits; an unconditional one renders reconstructions."""

from __future__ import annotations

from typing import Any

import torch

from genlab.data import TrainingData
from genlab.models.base import cycling_labels, digit_rows
from genlab.models.vae.config import VaeConfig
from genlab.models.vae.model import VAE, evaluate_loss
from genlab.optim import adam
from genlab.streams import make_generator
from genlab.trainer import Trainer, to_uint8_images


class VaeTrainer(Trainer):
    model: VAE

    def __init__(self, model: VAE, cfg: VaeConfig, data: TrainingData, *, eval_batch_size: int = 1000, **context: Any):
        """context: the keyword arguments of genlab.trainer.Trainer (name, config, seed, device, diagnostics)."""
        super().__init__(model, cfg, data, **context)
        seed, device = self.seed, self.device
        self.vae = model
        self.data = data.train_images  # float [N, 784] in [0, 1], on device
        self.labels = data.train_labels if cfg.conditional else None
        self.test = data.test_images
        self.test_labels = data.test_labels if cfg.conditional else None
        self.batch_size = cfg.batch_size
        self.eval_batch_size = eval_batch_size
        self.opt = adam(model.parameters(), lr=cfg.lr, device=device)
        self.network = self.world.replicate(model)  # under torchrun, DDP syncs its gradients
        self.fixed_images = data.test_images[: cfg.num_reconstructions]
        # Conditional: ten rows of generated digits from the same prior draws, row k asking for digit k.
        self.fixed_z: torch.Tensor | None = None
        self.fixed_labels: torch.Tensor | None = None
        if cfg.conditional:
            fixed = make_generator(seed, stream=2, device=device)
            self.fixed_z, self.fixed_labels = digit_rows(model.sample_prior(cfg.num_fixed_samples // 10, fixed))
        self.diagnostic_z = model.sample_prior(cfg.diagnostic_samples, make_generator(seed, stream=4, device=device))
        self.diagnostic_labels = cycling_labels(cfg.diagnostic_samples, device) if cfg.conditional else None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": self.opt}

    def train_epoch(self) -> dict[str, float]:
        vae, n = self.vae, self.data.shape[0]
        vae.train()
        sums = torch.zeros(3, device=self.device)  # [loss, reconstruction, kl] summed over images
        for idx in self.batches(n, self.batch_size):
            x = self.data.index_select(0, idx)
            labels = None if self.labels is None else self.labels.index_select(0, idx)
            with self.autocast():
                out = vae.loss(x, self.rng, labels, network=self.network)
            self.opt.zero_grad(set_to_none=True)
            self.for_backward(out.loss, x.shape[0]).backward()
            self.opt.step()
            with torch.no_grad():
                sums += torch.stack([out.loss, out.reconstruction, out.kl]) * x.shape[0]
        s = (self.epoch_totals(sums) / n).tolist()
        metrics = {"loss": s[0], "reconstruction": s[1], "kl": s[2]}
        if self.world.is_main:  # only rank 0 logs
            test = evaluate_loss(vae, self.test, self.test_labels, seed=self.seed, batch_size=self.eval_batch_size)
            metrics.update(test_loss=test["loss"], test_reconstruction=test["reconstruction"], test_kl=test["kl"])
        return metrics

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        self.vae.eval()
        if self.fixed_z is not None:
            return to_uint8_images(self.vae.generate(self.fixed_z, self.fixed_labels))
        mu, _ = self.vae.encode(self.fixed_images)
        return to_uint8_images(self.vae.decode(mu))

    def snapshot_extra(self) -> dict[str, Any]:
        if self.fixed_z is not None:  # rows of digits, as many images per row as there are fixed prior draws
            return {"nrow": self.fixed_z.shape[0] // 10}
        return {"originals": to_uint8_images(self.fixed_images)}

    @torch.no_grad()
    def diagnostic_images(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.vae.eval()
        return self.vae.decode(self.diagnostic_z, self.diagnostic_labels), self.diagnostic_labels


TRAINER = VaeTrainer
