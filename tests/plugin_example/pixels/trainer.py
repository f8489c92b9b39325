"""The pixels kind's trainer: Adam on the likelihood, one pass per epoch."""

from __future__ import annotations

import torch

from genlab.models.base import cycling_labels
from genlab.optim import adam
from genlab.streams import make_generator
from genlab.trainer import Trainer, to_uint8_images


class PixelsTrainer(Trainer):
    def __init__(self, model, cfg, data, **kwargs):
        super().__init__(model, cfg, data, **kwargs)
        self.data, self.batch_size = data.train_images, cfg.batch_size
        self.labels = data.train_labels if cfg.conditional else None
        self.opt = adam(model.parameters(), lr=cfg.lr, device=self.device)
        fixed = make_generator(self.seed, stream=2, device=self.device)
        self.fixed_z = model.sample_latent(20, fixed)
        self.fixed_labels = cycling_labels(20, self.device) if cfg.conditional else None
        # The per-epoch diagnostics (classifier_score, classes_present, ...): the DVC plot's y is classifier_score.
        n = cfg.diagnostic_samples
        self.diagnostic_z = model.sample_latent(n, make_generator(self.seed, stream=3, device=self.device))
        self.diagnostic_labels = cycling_labels(n, self.device) if cfg.conditional else None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"pixels": self.opt}

    def train_epoch(self) -> dict[str, float]:
        total = torch.zeros((), device=self.device)
        for idx in self.batches(self.data.shape[0], self.batch_size):
            labels = None if self.labels is None else self.labels[idx]
            loss = self.model.loss(self.data[idx], labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach() * idx.shape[0]
        return {"loss": float(total / self.data.shape[0])}

    @torch.no_grad()
    def diagnostic_images(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = self.model.generate(self.diagnostic_z, self.diagnostic_labels)  # [N, 1, 28, 28] in [0, 1]
        return images.reshape(images.shape[0], -1), self.diagnostic_labels

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        return to_uint8_images(self.model.generate(self.fixed_z, self.fixed_labels))


TRAINER = PixelsTrainer
