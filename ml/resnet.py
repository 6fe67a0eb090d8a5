"""ResNet18 for single-channel (grayscale) breast images, built without pretrained weights."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import resnet18


def resnet18_gray(num_classes: int) -> nn.Module:
    """torchvision's ResNet18 with a one-channel stem: ultrasound and mammograms are grayscale."""
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def resnet18_os16_gray(num_classes: int) -> nn.Module:
    """The same ResNet18 (same layers and weights' shapes) with output stride 16 instead of 32:
    layer4 keeps layer3's resolution (9 x 9 at 144 px instead of 5 x 5) and dilates its later
    convolutions by 2 to keep their receptive field, as DeepLab does. Grad-CAM on layer4 can then
    outline a lesion instead of a 5 x 5 blur, for about 1.6 times the computation."""
    model = resnet18_gray(num_classes)
    first, second = model.layer4
    first.conv1.stride = first.downsample[0].stride = (1, 1)
    for conv in (first.conv2, second.conv1, second.conv2):
        conv.dilation, conv.padding = (2, 2), (2, 2)
    return model


ARCHITECTURES = {"resnet18": resnet18_gray, "resnet18_os16": resnet18_os16_gray}


class Ensemble(nn.Module):
    """Networks of one architecture trained from different random starts; its logits are the
    mean of theirs. Its state dict is theirs under `members.<i>.`, in one file."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(batch) for member in self.members]).mean(dim=0)


def build_classifier(architecture: str, num_classes: int, members: int = 1) -> nn.Module:
    """One network of `architecture`, or an Ensemble of `members` of them (as a card describes)."""
    if members == 1:
        return ARCHITECTURES[architecture](num_classes)
    return Ensemble([ARCHITECTURES[architecture](num_classes) for _ in range(members)])


def member_networks(network: nn.Module) -> list[nn.Module]:
    """The single networks inside `network`: an Ensemble's members, else the network itself."""
    return list(network.members) if isinstance(network, Ensemble) else [network]


def member_states(state: dict[str, torch.Tensor], members: int) -> list[dict[str, torch.Tensor]]:
    """A weights file's state dict split into its members' (a single network's, as it is)."""
    if members == 1:
        return [state]
    return [{key.removeprefix(f"members.{i}."): value for key, value in state.items()
             if key.startswith(f"members.{i}.")} for i in range(members)]
