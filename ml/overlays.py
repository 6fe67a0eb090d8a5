"""Pictures for clinicians: saliency heat over the image, ROI contours, ROI crops and masks."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

ROI_COLOURS = {"malignant": (230, 40, 40), "benign": (40, 200, 80), "normal": (60, 140, 255)}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def heat_overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """RGB image with the heat map (0..1) blended in from transparent through red to yellow."""
    base = np.repeat(gray[:, :, None].astype(np.float32), 3, axis=2)
    colour = np.stack([np.full_like(heat, 255.0), 255.0 * np.clip(2 * heat - 1, 0, 1), np.zeros_like(heat)], axis=2)
    alpha = (opacity * heat)[:, :, None]
    return (base * (1 - alpha) + colour * alpha).round().astype(np.uint8)


def contours(gray: np.ndarray, masks: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """RGB image with each ROI's outline drawn in its label's colour."""
    image = np.repeat(gray[:, :, None], 3, axis=2).copy()
    thickness = max(1, round(max(gray.shape) / 256))
    for mask, label in zip(masks, labels):
        edge = mask & ~ndimage.binary_erosion(mask, iterations=thickness)
        image[edge] = ROI_COLOURS.get(label, (255, 255, 0))
    return image
