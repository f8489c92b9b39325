from __future__ import annotations

import pytest
import torch

from genlab.io import weights_sha256
from genlab.models.classifier import Classifier, ClassifierFeatures


def test_shapes_and_feature_module():
    model = Classifier(channels=(4, 8), feature_dim=16)
    x = torch.rand(5, 784)
    assert model(x).shape == (5, 10)
    assert model.features(x).shape == (5, 16)
    assert torch.equal(model(x), model(x.reshape(5, 1, 28, 28)))
    assert ClassifierFeatures(model).num_features == 16


def test_binary_critic_uses_bce():
    critic = Classifier(channels=(4, 8), feature_dim=8, num_classes=1)
    x = torch.rand(6, 784)
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(critic(x).squeeze(1), labels.float())
    assert critic.loss(x, labels).item() == pytest.approx(expected.item())


def test_weights_hash_follows_the_weights():
    torch.manual_seed(0)
    a = Classifier(channels=(4, 8), feature_dim=8)
    b = Classifier(channels=(4, 8), feature_dim=8)
    b.load_state_dict(a.state_dict())
    assert weights_sha256(a) == weights_sha256(b)
    with torch.no_grad():
        b.head.bias[0] += 1e-6
    assert weights_sha256(a) != weights_sha256(b)
