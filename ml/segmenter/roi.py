"""Lesion ROIs from any `Sam` model through `SamPredictor`: automatic, or from a user's prompts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from segment_anything import SamPredictor
from segment_anything.modeling import Sam


@dataclass(frozen=True)
class RoiSettings:
    min_area_fraction: float = 0.002  # of the image area; smaller blobs are noise
    confidence_threshold: float = 0.5  # mean lesion probability inside the ROI
    max_rois: int = 5


@dataclass(frozen=True)
class Roi:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive, image pixels
    mask: np.ndarray  # (H, W) bool
    area: int
    confidence: float


class Segmenter:
    """Runs one `Sam` model. A fresh `SamPredictor` per image keeps concurrent calls independent."""

    def __init__(self, model: Sam) -> None:
        self.model = model.eval()

    def _predictor(self, gray: np.ndarray) -> SamPredictor:
        predictor = SamPredictor(self.model)
        with torch.inference_mode():
            predictor.set_image(np.repeat(gray[:, :, None], 3, axis=2))
        return predictor

    def probability(self, gray: np.ndarray, box: np.ndarray | None = None,
                    points: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
        """(H, W) lesion probability; no prompt asks for every lesion in the image."""
        predictor = self._predictor(gray)
        with torch.inference_mode():
            logits, _, _ = predictor.predict(point_coords=points, point_labels=labels, box=box,
                                             multimask_output=False, return_logits=True)
        return 1 / (1 + np.exp(-logits[0]))

    def find_rois(self, gray: np.ndarray, settings: RoiSettings = RoiSettings()) -> list[Roi]:
        """Lesions found without any prompt, most confident first."""
        return rois_from_probability(self.probability(gray), settings)


def rois_from_probability(probability: np.ndarray, settings: RoiSettings) -> list[Roi]:
    components, count = ndimage.label(probability > 0.5)
    min_area = settings.min_area_fraction * probability.size
    rois = []
    for index, slices in enumerate(ndimage.find_objects(components), start=1):
        mask = components == index
        area = int(mask.sum())
        confidence = float(probability[mask].mean())
        if area < min_area or confidence < settings.confidence_threshold:
            continue
        rows, cols = slices
        rois.append(Roi(box=(cols.start, rows.start, cols.stop - 1, rows.stop - 1), mask=mask,
                        area=area, confidence=round(confidence, 4)))
    return sorted(rois, key=lambda roi: roi.confidence, reverse=True)[: settings.max_rois]
