"""Training-time wrapper: the served ResNet18 plus a lesion-localisation head.

The head predicts a coarse lesion mask from the stride-16 features (layer3), supervised by the
radiologists' outlines. It steers the network towards the lesion rather than the burned-in
text and calipers, and it is dropped after training: the shipped model is the plain ResNet18.
"""
from __future__ import annotations

import torch
from torch import nn


class LesionLocalisationHead(nn.Module):
    def __init__(self, in_channels: int = 256, hidden: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ClassifierWithLocalisation(nn.Module):
    """Returns (class logits, mask logits at 1/16 of the input size)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.localisation = LesionLocalisationHead()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.classifier
        x = c.maxpool(c.relu(c.bn1(c.conv1(x))))
        stride16 = c.layer3(c.layer2(c.layer1(x)))
        pooled = torch.flatten(c.avgpool(c.layer4(stride16)), 1)
        return c.fc(pooled), self.localisation(stride16)
