"""Plausible image-level augmentation for grayscale breast images, applied to whole batches."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, S, S) images in [0, 1] -> augmented copies in [0, 1].

    Horizontal flips (left and right breasts mirror each other), small rotations, zoom and shifts,
    gain/contrast/gamma changes as between scanner settings, and multiplicative speckle.
    """
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-10, 10) * math.pi / 180
    scale = uniform(0.9, 1.15)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, uniform(-0.06, 0.06)], dim=1),
            torch.stack([sin * flip, cos, uniform(-0.06, 0.06)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    gamma = uniform(0.75, 1.35).view(n, 1, 1, 1)
    gain = uniform(0.8, 1.2).view(n, 1, 1, 1)
    offset = uniform(-0.06, 0.06).view(n, 1, 1, 1)
    out = out.clamp(0, 1).pow(gamma) * gain + offset
    speckle_strength = uniform(0.0, 0.15).view(n, 1, 1, 1)
    speckle = 1 + speckle_strength * torch.randn(out.shape, generator=generator)
    return (out * speckle).clamp(0, 1)
