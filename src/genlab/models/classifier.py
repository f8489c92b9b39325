"""A small CNN for 28x28 digits: the feature space of the sample metrics, and the fresh two-sample discriminator.

Inception-v3 features (the usual FID space) cannot be downloaded here and describe 299x299 photographs, not
digits. A classifier trained on the dataset itself gives a feature space in which distances mean "looks like a
different digit" (the domain-specific FID of e.g. Bińkowski et al. 2018 and the MNIST score of many GAN papers).

Architecture (LeNet-style): conv5x5 -> ReLU -> maxpool2 -> conv5x5 -> ReLU -> maxpool2 -> linear -> ReLU ->
linear. `features` is the penultimate activation, [N, feature_dim].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# MNIST training-set pixel mean and standard deviation, for input standardisation. A fixed constant rather than a
# parameter so that checkpoints of any dataset read the same inputs; BatchNorm-free training only needs the scale
# to be roughly right.
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081


class Classifier(nn.Module):
    def __init__(
        self,
        channels: tuple[int, int] = (32, 64),
        feature_dim: int = 128,
        num_classes: int = 10,
        side: int = 28,
    ):
        super().__init__()
        self.side = side
        self.num_features = feature_dim  # torchmetrics' FID reads this instead of probing with a 299x299 image
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=2)
        self.fc = nn.Linear(c2 * (side // 4) ** 2, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, side*side] or [N, 1, side, side], grey levels in [0, 1] -> [N, feature_dim]."""
        x = (x.reshape(-1, 1, self.side, self.side) - PIXEL_MEAN) / PIXEL_STD
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [N, c1, 14, 14]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [N, c2, 7, 7]
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes]."""
        return self.head(self.features(x))

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self(x)
        if logits.shape[1] == 1:  # a binary discriminator: labels are 0./1.
            return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
        return F.cross_entropy(logits, labels)


class ClassifierFeatures(nn.Module):
    """The classifier's feature map as a module, in the form torchmetrics' FrechetInceptionDistance expects."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)
