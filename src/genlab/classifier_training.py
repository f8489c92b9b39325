"""The classifier's training: the pipeline's feature extractor, and the evaluation's fresh two-sample
discriminator."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genlab.models.classifier import Classifier
from genlab.optim import adam
from genlab.streams import batch_indices


def train_classifier(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    max_lr: float,
    rng: torch.Generator,
    on_epoch: Callable[[int, float], None] | None = None,
) -> None:
    """Train a classifier (or, with one output, a binary discriminator) with Adam and a one-cycle schedule.

    images: [N, 784] in [0, 1] on the model's device; labels: [N] class indices (0/1 for one output).
    on_epoch(epoch, mean training loss) is called after each epoch.
    """
    device = images.device
    n = images.shape[0]
    opt = adam(model.parameters(), lr=max_lr, device=device)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=epochs * math.ceil(n / batch_size))
    for epoch in range(1, epochs + 1):
        model.train()
        total = torch.zeros((), device=device)
        for idx in batch_indices(n, batch_size, rng, device):
            loss = model.loss(images.index_select(0, idx), labels.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * idx.shape[0]
        if on_epoch is not None:
            on_epoch(epoch, float(total) / n)
