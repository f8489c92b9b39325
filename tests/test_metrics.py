"""Each sample metric moves the right way on cases built to break it, in the feature space of a classifier
trained here on the synthetic digits (class k: bars at a class-specific place)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genlab.classifier_training import train_classifier
from genlab.diagnostics import class_coverage, classifier_score, sample_diagnostics
from genlab.feature_extractor import predict_logits
from genlab.metrics import (
    RealReference,
    frechet_distance,
    precision_recall,
    sample_metrics,
    two_sample_accuracy,
)
from genlab.models.classifier import Classifier
from genlab.streams import make_generator

from .conftest import synthetic_digits

N = 600


def digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = synthetic_digits(n, seed)
    return torch.from_numpy(x).reshape(n, -1).float() / 255, torch.from_numpy(y).long()


def blur(x: torch.Tensor, passes: int = 2) -> torch.Tensor:
    img = x.reshape(-1, 1, 28, 28)
    for _ in range(passes):
        img = F.avg_pool2d(img, 5, stride=1, padding=2, count_include_pad=False)
    return img.reshape(-1, 784)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    torch.manual_seed(0)
    model = Classifier(channels=(8, 16), feature_dim=32)
    x, y = digits(2000, seed=10)
    train_classifier(model, x, y, epochs=3, batch_size=50, max_lr=0.01, rng=make_generator(0, 5))
    test_x, test_y = digits(500, seed=11)
    accuracy = float((predict_logits(model, test_x).argmax(1) == test_y).float().mean())
    assert accuracy > 0.95, f"the test classifier must work for these tests to mean anything: {accuracy}"
    return model


@pytest.fixture(scope="module")
def metrics_of(classifier):
    test, _ = digits(N, seed=2)
    reference = RealReference(classifier, test, knn_k=3, batch_size=200)

    def compute(fake: torch.Tensor) -> dict:
        return sample_metrics(reference, fake, c2st_epochs=2, c2st_lr=3e-3, seed=0)

    return compute


@pytest.fixture(scope="module")
def floor(metrics_of):
    return metrics_of(digits(N, seed=1)[0])


def test_real_against_real_is_near_the_ideal(floor):
    # FID has no absolute scale (it depends on the feature extractor); the cases below compare against this one.
    assert floor["fid"] >= 0
    assert floor["knn_precision"] > 0.8 and floor["knn_recall"] > 0.8
    assert floor["classes_present"] == 10 and floor["max_class_share"] < 0.15
    assert floor["class_kl_uniform"] < 0.05
    assert floor["classifier_score"] > 8.5
    assert 0.4 <= floor["c2st_accuracy"] <= 0.6


def test_blurred_images_score_worse(metrics_of, floor):
    blurred = metrics_of(blur(digits(N, seed=1)[0]))
    assert blurred["fid"] > 20 * floor["fid"]
    assert blurred["knn_recall"] < floor["knn_recall"] - 0.3 and blurred["knn_precision"] < floor["knn_precision"]
    assert blurred["c2st_accuracy"] > 0.9


def test_one_repeated_digit_is_caught_by_coverage_and_recall(metrics_of, floor):
    x, y = digits(N, seed=1)
    single = x[y == 3][:1].repeat(N, 1)
    m = metrics_of(single)
    assert m["classes_present"] == 1 and m["max_class_share"] == 1.0
    assert m["class_kl_uniform"] == pytest.approx(math.log(10))
    assert m["classifier_score"] == pytest.approx(1.0, abs=1e-3)
    assert m["knn_recall"] < 0.05  # the real digits of the other nine classes are far from the one sample
    assert m["fid"] > 20 * floor["fid"]
    assert m["c2st_accuracy"] > 0.9
    assert m["class_share"]["3"] == 1.0


def test_half_the_classes_dropped_shows_in_coverage_and_recall(metrics_of, floor):
    x, y = digits(2 * N, seed=1)
    half = x[y < 5][:N]
    m = metrics_of(half)
    assert m["classes_present"] == 5 and m["max_class_share"] > 0.15
    assert m["class_kl_uniform"] == pytest.approx(math.log(2), abs=0.05)
    assert m["classifier_score"] == pytest.approx(5, abs=0.5)
    assert m["knn_recall"] < floor["knn_recall"] - 0.3
    assert m["fid"] > 20 * floor["fid"] and m["c2st_accuracy"] > floor["c2st_accuracy"] + 0.05
    assert m["knn_precision"] > 0.8  # what it draws is still real-looking: precision alone cannot see the collapse


def test_diagnostics_are_the_cheap_subset(classifier):
    x, _ = digits(N, seed=1)
    d = sample_diagnostics(classifier, x)
    assert set(d) == {"classes_present", "max_class_share", "class_kl_uniform", "classifier_score"}
    assert d["classes_present"] == 10


def test_class_coverage_and_score_on_handmade_probabilities():
    confident = torch.eye(10).repeat(3, 1)  # 30 samples, 3 per class, each certain
    c = class_coverage(confident)
    assert c["classes_present"] == 10 and c["max_class_share"] == pytest.approx(0.1)
    assert c["class_kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert classifier_score(confident) == pytest.approx(10.0)
    unsure = torch.full((30, 10), 0.1)
    assert classifier_score(unsure) == pytest.approx(1.0)


def test_precision_recall_on_point_sets():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 8, generator=g)
    same = precision_recall(a, a.clone(), k=3)
    assert same == {"knn_precision": 1.0, "knn_recall": 1.0}
    far = precision_recall(a, a + 100, k=3)
    assert far == {"knn_precision": 0.0, "knn_recall": 0.0}
    # A generator that covers only half of the real set: precise, but recall about half.
    half = a[a[:, 0] > 0]
    m = precision_recall(a, half, k=3)
    assert m["knn_precision"] > 0.95 and 0.3 < m["knn_recall"] < 0.85  # k-NN balls reach a little into the missing half


def test_two_sample_test_separates_noise_from_digits():
    x, _ = digits(400, seed=1)
    noise = torch.rand(400, 784, generator=torch.Generator().manual_seed(0))
    assert two_sample_accuracy(x, noise, channels=(4, 8), epochs=2, lr=3e-3, seed=0) > 0.95


def test_frechet_distance_of_feature_sets_is_torchmetrics_fid():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 6, generator=g).double(), (torch.randn(200, 6, generator=g) * 1.5 + 0.3).double()

    class Identity(torch.nn.Module):
        num_features = 6

        def forward(self, x):
            return x

    fid = FrechetInceptionDistance(feature=Identity(), normalize=True)
    fid.update(a, real=True)
    fid.update(b, real=False)
    assert frechet_distance(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
