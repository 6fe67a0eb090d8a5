"""A small convolutional image encoder that stands in for SAM's ViT on a CPU.

It has what `segment_anything` expects of an image encoder: an `img_size` attribute (the long
side `SamPredictor` resizes to) and an output of shape (B, embed_dim, img_size/16, img_size/16).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    layers = [BasicBlock(in_channels, out_channels, stride, downsample)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


ENCODER_WIDTHS = (24, 48, 96, 160)  # stem, then the three stages


class ResNetImageEncoder(nn.Module):
    """ResNet basic blocks down to stride 16, then a neck projecting to the prompt embedding size."""

    def __init__(self, img_size: int = 256, embed_dim: int = 128, widths: tuple[int, ...] = ENCODER_WIDTHS) -> None:
        super().__init__()
        self.img_size = img_size
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            _stage(widths[0], widths[1], 1, stride=2),  # stride 4
            _stage(widths[1], widths[2], 2, stride=2),  # stride 8
            _stage(widths[2], widths[3], 2, stride=2),  # stride 16
        )
        self.neck = nn.Sequential(
            nn.Conv2d(widths[3], embed_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.stages(self.stem(x)))
