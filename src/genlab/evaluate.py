"""Evaluation samples of any registered model, and what a conditional model adds to the sample metrics: did it
draw the digit it was asked for (conditional accuracy), and how real is each digit (per-class domain FID)."""

from __future__ import annotations

from typing import Any

import torch

from genlab.diagnostics import class_probabilities, conditional_accuracy
from genlab.metrics import RealReference
from genlab.models.base import NUM_CLASSES, GenerativeModel, cycling_labels
from genlab.streams import make_generator


@torch.no_grad()
def generated_samples(
    model: GenerativeModel, n: int, *, seed: int, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n images from a fixed stream, [n, 784] in [0, 1]; a conditional model draws balanced digits 0, 1, ..., 9,
    0, ..., returned as the second value (None for unconditional models)."""
    model.eval()
    device = model.device()
    g = make_generator(seed, stream=model.evaluation_stream, device=device)
    labels = cycling_labels(n, device) if model.conditional else None
    batches = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        batches.append(model.sample(b, g, None if labels is None else labels[start : start + b]))
    return torch.cat(batches).flatten(1), labels


def real_samples(images: torch.Tensor, n: int, *, seed: int) -> torch.Tensor:
    """n distinct images drawn at random (fixed seed): the training images that stand in for a perfect model."""
    g = make_generator(seed, stream=14, device=images.device)
    return images.index_select(0, torch.randperm(images.shape[0], generator=g, device=images.device)[:n])


@torch.no_grad()
def conditional_metrics(
    reference: RealReference, real_labels: torch.Tensor, fake: torch.Tensor, fake_labels: torch.Tensor
) -> dict[str, Any]:
    """Conditional accuracy (the classifier's accuracy at recognising the requested digit), overall and per digit,
    and the domain FID of each digit's samples against the test images of that digit (fid_by_class.<d>)."""
    probs = class_probabilities(reference.classifier, fake, reference.batch_size)
    per_class_fid = {
        str(c): reference.class_frechet_distance(real_labels == c, fake[fake_labels == c]) for c in range(NUM_CLASSES)
    }
    return {
        **conditional_accuracy(probs, fake_labels),
        "fid_by_class": per_class_fid,
        "fid_by_class_max": max(per_class_fid.values()),
    }
