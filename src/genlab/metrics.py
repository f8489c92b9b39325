"""Sample-quality metrics in the feature space of an MNIST classifier (genlab.models.classifier).

Every function takes images as [N, 784] grey levels in [0, 1]. Reference values: compare a model's numbers with
those of real training images against the test images (the floor), computed by the same functions.

- Fréchet distance of classifier features ("domain FID"; Heusel et al. 2017, with the classifier in place of
  Inception): fidelity and diversity in one number, lower is better.
- Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991): fidelity (samples inside the real
  k-NN manifold) and coverage (real images inside the samples' manifold) separately.
- Class coverage and the classifier score, from genlab.diagnostics (the training stages log them per epoch).
- Classifier two-sample test (Lopez-Paz & Oquab 2017, arXiv:1610.06545): accuracy of a fresh CNN telling real from
  generated images on held-out halves; 0.5 means indistinguishable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from genlab.classifier_training import train_classifier
from genlab.diagnostics import class_coverage, class_probabilities, classifier_score
from genlab.feature_extractor import predict_logits
from genlab.models.classifier import Classifier, ClassifierFeatures
from genlab.progress import progress
from genlab.streams import make_generator


@torch.no_grad()
def features(classifier: Classifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    classifier.eval()
    return torch.cat([classifier.features(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def _kth_neighbour_radii(feats: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row, [N]."""
    radii = []
    for i in range(0, feats.shape[0], chunk):
        d = torch.cdist(feats[i : i + chunk], feats)  # [chunk, N]; includes the zero distance to itself
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _inside_manifold(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each query, whether it lies within radii[j] of some support point j, [N_queries] bool."""
    inside = []
    for i in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[i : i + chunk], support)  # [chunk, N_support]
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside)


def _precision_recall(
    real: torch.Tensor, real_radii: torch.Tensor, fake: torch.Tensor, k: int, chunk: int
) -> dict[str, float]:
    fake_radii = _kth_neighbour_radii(fake, k, chunk)
    return {
        "knn_precision": float(_inside_manifold(fake, real, real_radii, chunk).double().mean()),
        "knn_recall": float(_inside_manifold(real, fake, fake_radii, chunk).double().mean()),
    }


@torch.no_grad()
def precision_recall(
    real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3, chunk: int = 1000
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, sec. 3): each set's manifold is the union of balls
    reaching each point's k-th nearest neighbour. Precision: share of generated samples inside the real manifold.
    Recall: share of real images inside the generated manifold. Features are double precision for exact ties."""
    real = real_features.double()
    return _precision_recall(real, _kth_neighbour_radii(real, k, chunk), fake_features.double(), k, chunk)


class RealReference:
    """The real images' side of the sample metrics, computed once and shared by every set scored against them:
    their FID statistics, their features and their k-NN radii (a full classifier pass each, and a 10k x 10k
    distance matrix)."""

    def __init__(self, classifier: Classifier, images: torch.Tensor, *, knn_k: int, batch_size: int = 1000):
        from torchmetrics.image.fid import FrechetInceptionDistance  # slow import: only where it is used

        self.classifier, self.images, self.knn_k, self.batch_size = classifier, images, knn_k, batch_size
        classifier.eval()
        # FID by torchmetrics (float64 statistics). reset_real_features=False: reset() clears only the fake side.
        self.fid = FrechetInceptionDistance(feature=ClassifierFeatures(classifier), reset_real_features=False)
        self.fid = self.fid.to(images.device)
        with torch.no_grad():
            for i in range(0, images.shape[0], batch_size):
                self.fid.update(images[i : i + batch_size], real=True)
        self.features = features(classifier, images, batch_size).double()
        self.radii = _kth_neighbour_radii(self.features, knn_k, chunk=batch_size)

    @torch.no_grad()
    def frechet_distance(self, fake: torch.Tensor) -> float:
        """FID in the classifier's feature space between these real images and `fake`."""
        self.fid.reset()
        for i in range(0, fake.shape[0], self.batch_size):
            self.fid.update(fake[i : i + self.batch_size], real=False)
        return float(self.fid.compute())

    @torch.no_grad()
    def class_frechet_distance(self, real_mask: torch.Tensor, fake: torch.Tensor) -> float:
        """FID between the real images selected by real_mask (one class) and `fake`, from their features."""
        return frechet_distance(self.features[real_mask], features(self.classifier, fake, self.batch_size).double())

    @torch.no_grad()
    def precision_recall(self, fake: torch.Tensor) -> dict[str, float]:
        fake_features = features(self.classifier, fake, self.batch_size).double()
        return _precision_recall(self.features, self.radii, fake_features, self.knn_k, chunk=self.batch_size)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, d] (float64; Heusel et al. 2017, eq. 6):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the trace of the square root as the sum of the square
    roots of the eigenvalues of S_a S_b: torchmetrics' formula for the full-set FID, written out here because its
    metric object keeps one real set, and the per-class FID needs ten."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


def two_sample_accuracy(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    channels: tuple[int, int],
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 128,
) -> float:
    """Classifier two-sample test: train a fresh CNN on a random half of each set, report its accuracy on the other
    halves. 0.5: the sets cannot be told apart; 1.0: always can.

    The halves are drawn at random, not sliced: the MNIST test set's first 5,000 images come from a different
    writer population than its last 5,000, and a critic trained on one and tested on the other scores well
    below 0.5 on two samples of the same distribution."""
    n = min(real.shape[0], fake.shape[0])
    half = n // 2
    g = make_generator(seed, stream=20, device=real.device)
    real = real.index_select(0, torch.randperm(real.shape[0], generator=g, device=real.device)[:n])
    fake = fake.index_select(0, torch.randperm(fake.shape[0], generator=g, device=fake.device)[:n])
    torch.manual_seed(seed)  # the fresh discriminator's initial weights
    critic = Classifier(channels=channels, num_classes=1).to(real.device)
    train_x = torch.cat([real[:half], fake[:half]])
    train_y = torch.cat([torch.ones(half), torch.zeros(half)]).to(real.device)
    train_classifier(critic, train_x, train_y, epochs=epochs, batch_size=batch_size, max_lr=lr, rng=g)
    test_x = torch.cat([real[half:n], fake[half:n]])
    test_y = torch.cat([torch.ones(n - half), torch.zeros(n - half)]).to(real.device)
    predicted = (predict_logits(critic, test_x).squeeze(1) > 0).float()
    return float((predicted == test_y).double().mean())


def sample_metrics(
    reference: RealReference, fake: torch.Tensor, *, c2st_epochs: int, c2st_lr: float, seed: int
) -> dict[str, Any]:
    """All sample metrics of `fake` ([N, 784] in [0, 1]) against the reference's real images, one step at a time
    (a progress bar on a terminal names the step running)."""
    classifier = reference.classifier
    channels = (classifier.conv1.out_channels, classifier.conv2.out_channels)

    def class_scores() -> dict[str, Any]:
        probs = class_probabilities(classifier, fake, reference.batch_size)
        return {"classifier_score": classifier_score(probs), **class_coverage(probs)}

    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("FID", lambda: {"fid": reference.frechet_distance(fake)}),
        ("precision/recall", lambda: reference.precision_recall(fake)),
        ("class scores", class_scores),
        ("C2ST", lambda: {"c2st_accuracy": two_sample_accuracy(
            reference.images, fake, channels=channels, epochs=c2st_epochs, lr=c2st_lr, seed=seed)}),
    ]  # fmt: skip
    results: dict[str, Any] = {}
    bar = progress(steps, total=len(steps), desc="sample metrics", unit="step")
    for _, step in bar:
        results.update(step())
    return {**results, "num_samples": int(fake.shape[0])}
