"""The one preprocessing function shared by training and inference."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class InputSpec:
    """How a grayscale image becomes the model's input; written into every model card.

    `window`: 0 for a network that classifies the whole letterboxed image, else the side of the
    windows it was trained on (`ml.train --crop`) and classifies the image by (ml.inference)."""

    size: int
    mean: float = 0.5
    std: float = 0.25
    window: int = 0

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": self.mean, "std": self.std, "resize": "letterbox",
                **({"window": self.window} if self.window else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        return cls(size=int(data["size"]), mean=float(data["mean"]), std=float(data["std"]),
                   window=int(data.get("window", 0)))


def letterbox_region(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Where an image of (height, width) lands in its letterbox: (top, left, new_height, new_width)."""
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def letterbox(gray: np.ndarray, size: int) -> np.ndarray:
    """Fit an (H, W) uint8 image into size x size, keeping its aspect ratio, padding with black.

    Keeping the aspect ratio keeps lesion shape (a diagnostic cue) undistorted.
    """
    top, left, new_h, new_w = letterbox_region(*gray.shape, size)
    resized = np.asarray(
        Image.fromarray(gray).resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    )
    canvas = np.zeros((size, size), dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def normalise(batch_uint8: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(N, S, S) uint8 -> (N, 1, S, S) float, scaled to [0, 1] then standardised."""
    return ((batch_uint8.float() / 255.0 - spec.mean) / spec.std).unsqueeze(1)


def to_batch(grays: Sequence[np.ndarray], spec: InputSpec) -> torch.Tensor:
    """Grayscale images of any size -> the model's input batch."""
    stacked = np.stack([letterbox(gray, spec.size) for gray in grays])
    return normalise(torch.from_numpy(stacked), spec)
