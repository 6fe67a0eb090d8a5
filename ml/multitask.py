"""Training-time wrapper: the served ResNet18 plus what the lesion outlines teach it.

Two outline-supervised signals, both only in training (the shipped model is the plain ResNet18):
* a lesion-localisation head predicts a coarse lesion mask from the stride-16 features (layer3);
* the class evidence map: the per-location class logits of the last block (layer4), whose
  average over locations is the network's own logits (global average pooling, then a linear
  layer). Grad-CAM on layer4 is that map's positive part for the explained class, so asking the
  evidence for the true class to lie on the lesion makes the network decide from the lesion,
  not from the burned-in text, calipers or the tissue around it, and makes its saliency honest.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
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


class TrainingOutputs(NamedTuple):
    logits: torch.Tensor  # (N, classes)
    lesion_logits: torch.Tensor  # (N, 1, H/16, W/16)
    evidence: torch.Tensor  # (N, classes, H/32, W/32): per-location class logits, without the bias


class ClassifierWithLocalisation(nn.Module):
    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.localisation = LesionLocalisationHead()

    def forward(self, x: torch.Tensor) -> TrainingOutputs:
        c = self.classifier
        x = c.maxpool(c.relu(c.bn1(c.conv1(x))))
        stride16 = c.layer3(c.layer2(c.layer1(x)))
        stride32 = c.layer4(stride16)
        logits = c.fc(torch.flatten(c.avgpool(stride32), 1))
        evidence = F.conv2d(stride32, c.fc.weight[:, :, None, None])
        return TrainingOutputs(logits, self.localisation(stride16), evidence)


def evidence_on_lesion_loss(evidence: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between where the true class's evidence is (a softmax over locations) and
    where the lesion is (the outline's share of each location). `masks`: (N, 1, H, W) in [0, 1];
    images whose outline vanished (e.g. cropped away by augmentation) are left out."""
    true_class = evidence[torch.arange(len(targets)), targets].flatten(1)  # (N, locations)
    lesion = F.adaptive_avg_pool2d(masks, evidence.shape[-2:]).flatten(1)
    present = lesion.sum(1) > 0
    if not present.any():
        return evidence.sum() * 0.0
    lesion = lesion[present] / lesion[present].sum(1, keepdim=True)
    return -(lesion * F.log_softmax(true_class[present], dim=1)).sum(1).mean()
