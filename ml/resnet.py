"""ResNet18 for single-channel (grayscale) breast images, built without pretrained weights."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18


def resnet18_gray(num_classes: int) -> nn.Module:
    """torchvision's ResNet18 with a one-channel stem: ultrasound and mammograms are grayscale."""
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


ARCHITECTURES = {"resnet18": resnet18_gray}
