"""Clinicians' edited masks (a PNG, or polygons) -> a binary mask of the analysed image's size."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ml.errors import InvalidImage
from ml.images import PNG_MAGIC, decode


def mask_from_png(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """A PNG whose non-zero pixels mark the region; it must have the analysed image's size."""
    if not data.startswith(PNG_MAGIC):
        raise InvalidImage("an edited mask must be a PNG")
    gray = decode(data).gray
    if gray.shape != tuple(shape):
        raise InvalidImage(f"the mask is {gray.shape[1]}x{gray.shape[0]}, the image {shape[1]}x{shape[0]}")
    return gray > 0


def mask_from_polygons(polygons: Sequence[Sequence[Sequence[float]]], shape: tuple[int, int]) -> np.ndarray:
    """Filled polygons given as [[x, y], ...] in image pixels."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon([(float(x), float(y)) for x, y in polygon], fill=255)
    return np.asarray(canvas) > 0


def mask_png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((mask * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
