"""Per-epoch sample diagnostics: what an MNIST classifier (genlab.models.classifier) says about a batch of
generated images. Cheap enough to run after every training epoch; genlab.metrics reuses them in the evaluation.

Kept apart from genlab.metrics so that the training stages depend only on this module: an edit to the
evaluation's FID, precision/recall or two-sample test does not mark 100 epochs of training as changed in DVC.

Images are [N, 784] grey levels in [0, 1].
- Class coverage of the predicted digits: the cheapest detector of mode collapse.
- Classifier score (the Inception score of Salimans et al. 2016 with the MNIST classifier): exp E[KL(p(y|x)||p(y))],
  at most the number of classes; high when samples are confidently classified and all classes appear.
"""

from __future__ import annotations

from typing import Any

import torch

from genlab.feature_extractor import predict_logits
from genlab.models.classifier import Classifier

# A class "is present" when it holds more than this share of the samples.
PRESENT_SHARE = 0.02


def class_probabilities(classifier: Classifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """[N, num_classes] softmax of the classifier."""
    return predict_logits(classifier, images, batch_size).softmax(dim=1)


def class_coverage(probs: torch.Tensor) -> dict[str, Any]:
    """Histogram of the predicted classes and three summaries of it.

    classes_present: classes holding more than 2% of the samples; max_class_share: the largest class's share;
    class_kl_uniform: KL(histogram || uniform) in nats, 0 for perfectly balanced classes, log(C) for one class.
    """
    num_classes = probs.shape[1]
    counts = torch.bincount(probs.argmax(dim=1), minlength=num_classes).double()
    share = counts / counts.sum()
    nonzero = share[share > 0]
    return {
        "classes_present": int((share > PRESENT_SHARE).sum()),
        "max_class_share": float(share.max()),
        "class_kl_uniform": float((nonzero * (nonzero * num_classes).log()).sum()),
        "class_share": {str(c): float(share[c]) for c in range(num_classes)},
    }


def classifier_score(probs: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over all samples (one split), in [1, num_classes]."""
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(dim=0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(dim=1).mean()))


def conditional_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """How often the classifier sees the digit that was asked for: overall, and per requested digit
    (conditional_accuracy.<d>), with the lowest of those."""
    hit = (probs.argmax(dim=1) == labels).double()
    per_class = {str(c): float(hit[labels == c].mean()) for c in range(probs.shape[1]) if bool((labels == c).any())}
    return {
        "conditional_accuracy": float(hit.mean()),
        "conditional_accuracy_min": min(per_class.values()),
        "conditional_accuracy_by_class": per_class,
    }


def sample_diagnostics(
    classifier: Classifier, images: torch.Tensor, labels: torch.Tensor | None = None
) -> dict[str, float]:
    """The cheap per-epoch subset: class coverage summaries and the classifier score; for a conditional model's
    samples (`labels`: the digits asked for), also its conditional accuracy, overall and for its worst digit."""
    probs = class_probabilities(classifier, images)
    coverage = class_coverage(probs)
    out = {
        "classes_present": float(coverage["classes_present"]),
        "max_class_share": coverage["max_class_share"],
        "class_kl_uniform": coverage["class_kl_uniform"],
        "classifier_score": classifier_score(probs),
    }
    if labels is not None:
        accuracy = conditional_accuracy(probs, labels)
        out["conditional_accuracy"] = accuracy["conditional_accuracy"]
        out["conditional_accuracy_min"] = accuracy["conditional_accuracy_min"]
    return out
