"""Plausible augmentation for grayscale breast images, applied to whole batches.

Geometry (horizontal flips, small rotations, zoom and shifts) moves images and lesion masks
together; photometry (gain, contrast, gamma as between scanner settings, multiplicative speckle)
touches only the images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# The geometric jitter every training uses: rotation within ROTATION_DEGREES, zoom within ZOOM,
# shift within SHIFT of the image side, and a mirror half the time.
ROTATION_DEGREES = 10
ZOOM = (0.9, 1.15)
SHIFT = 0.06


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_geometry(n: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 2, 3) affine matrices for `F.affine_grid`."""
    angle = _uniform(n, -ROTATION_DEGREES, ROTATION_DEGREES, generator) * math.pi / 180
    scale = _uniform(n, *ZOOM, generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x, shift_y = _uniform(n, -SHIFT, SHIFT, generator), _uniform(n, -SHIFT, SHIFT, generator)
    return torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], dim=1), torch.stack([sin * flip, cos, shift_y], dim=1)],
        dim=1,
    )


def warp(batch: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def photometric(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = batch.shape[0]
    gamma = _uniform(n, 0.75, 1.35, generator).view(n, 1, 1, 1)
    gain = _uniform(n, 0.8, 1.2, generator).view(n, 1, 1, 1)
    offset = _uniform(n, -0.06, 0.06, generator).view(n, 1, 1, 1)
    out = batch.clamp(0, 1).pow(gamma) * gain + offset
    strength = _uniform(n, 0.0, 0.15, generator).view(n, 1, 1, 1)
    speckle = 1 + strength * torch.randn(out.shape, generator=generator)
    return (out * speckle).clamp(0, 1)


def augment(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, S, S) images in [0, 1] and lesion masks in [0, 1] -> augmented copies of both."""
    theta = random_geometry(images.shape[0], generator)
    return photometric(warp(images, theta), generator), warp(masks, theta)
