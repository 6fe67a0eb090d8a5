"""Lesion ROIs from any `Sam` model through `SamPredictor`: automatic, or from a user's prompts."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from segment_anything import SamPredictor
from segment_anything.modeling import Sam


# The mask decoder's output tokens that may answer without a prompt: 0, the single-mask output that
# every prompt uses, or 1, SAM's first multimask output (`ml.segmenter.train --automatic-mask-token`).
AUTOMATIC_MASK_TOKENS = (0, 1)
EMBEDDING_CACHE_SIZE = 32  # images whose embeddings a Segmenter keeps for prompt corrections


def decoder_request(mask_token: int) -> tuple[bool, int]:
    """How to ask SAM's `MaskDecoder` (or `SamPredictor.predict`) for one output token's mask:
    the `multimask_output` flag, and the answer's index among the masks it returns. Token 0 is the
    single-mask output; tokens 1-3 come back, as indices 0-2, only with multimask_output=True."""
    return mask_token > 0, max(mask_token - 1, 0)


# A prompted answer's mask: where the lesion probability passes SAM's own 0.5.
PROMPTED_LESION_THRESHOLD = 0.5


@dataclass(frozen=True)
class RoiSettings:
    """The automatic mode's gate. The shipped ultrasound segmenter, a two-network ensemble, is less
    sure than one network where its members disagree; its confidence and lesion thresholds were
    chosen on split 0's held-out fold and confirmed on split 1's (README "Lesion segmenter")."""
    min_area_fraction: float = 0.002  # of the image area; smaller blobs are noise
    confidence_threshold: float = 0.6  # mean lesion probability inside the ROI
    max_rois: int = 5
    lesion_threshold: float = 0.45  # lesion probability above which a pixel belongs to an ROI


@dataclass(frozen=True)
class Roi:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive, image pixels
    mask: np.ndarray  # (H, W) bool
    area: int
    confidence: float


@dataclass(frozen=True)
class _Embedding:
    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class Segmenter:
    """Runs one `Sam` model, or the mean answer of an ensemble's members (`ml.segmenter.ensemble`).
    A fresh `SamPredictor` per call keeps concurrent calls independent; image embeddings are kept
    in a bounded cache keyed by image content, so that a clinician's prompt correction on an image
    just analysed reuses them (recomputed when evicted)."""

    def __init__(self, members: Sam | Sequence[Sam], automatic_mask_token: int = 0,
                 cache_size: int = EMBEDDING_CACHE_SIZE) -> None:
        if automatic_mask_token not in AUTOMATIC_MASK_TOKENS:
            raise ValueError(f"automatic_mask_token must be one of {AUTOMATIC_MASK_TOKENS}, not {automatic_mask_token!r}")
        self.members = [members.eval()] if isinstance(members, Sam) else [member.eval() for member in members]
        if not self.members:
            raise ValueError("a Segmenter needs at least one Sam model")
        self.automatic_mask_token = automatic_mask_token
        self.cache_size = cache_size
        self._cache: OrderedDict[str, list[_Embedding]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_card(cls, members: Sam | Sequence[Sam], card: dict, cache_size: int = EMBEDDING_CACHE_SIZE) -> "Segmenter":
        """The segmenter its card describes: the card says which mask token answers without a prompt."""
        return cls(members, card.get("automatic_mask_token", 0), cache_size)

    def _predictors(self, gray: np.ndarray) -> list[SamPredictor]:
        """One predictor per member, each holding its embedding of `gray`."""
        key = hashlib.sha256(gray.tobytes() + str(gray.shape).encode()).hexdigest()
        predictors = [SamPredictor(member) for member in self.members]
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is None:
            with torch.inference_mode():
                for predictor in predictors:
                    predictor.set_image(np.repeat(gray[:, :, None], 3, axis=2))
            cached = [_Embedding(p.features, p.original_size, p.input_size) for p in predictors]
            with self._lock:
                self._cache[key] = cached
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        else:  # the state `SamPredictor.set_image` leaves behind
            for predictor, embedding in zip(predictors, cached):
                predictor.features, predictor.original_size = embedding.features, embedding.original_size
                predictor.input_size, predictor.is_image_set = embedding.input_size, True
        return predictors

    def cached_images(self) -> int:
        return len(self._cache)

    def probability(self, gray: np.ndarray, box: np.ndarray | None = None,
                    points: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
        """(H, W) lesion probability; no prompt asks for every lesion in the image.

        The mean of the model's answers for the image and for its mirror image (the prompt mirrored
        with it, the answer mapped back): the model learnt under random mirroring, yet its two
        answers differ where it is unsure, and their mean is steadier (fold-0 validation, README
        "Lesion segmenter"). Costs one more image encoding, cached like the first."""
        last_column = gray.shape[1] - 1
        mirrored_box = None if box is None else np.array([last_column - box[2], box[1], last_column - box[0], box[3]])
        mirrored_points = None if points is None else np.column_stack([last_column - points[:, 0], points[:, 1]])
        direct = self._answer(gray, box, points, labels)
        mirrored = self._answer(np.ascontiguousarray(gray[:, ::-1]), mirrored_box, mirrored_points, labels)
        return (direct + mirrored[:, ::-1]) / 2

    def _answer(self, gray: np.ndarray, box: np.ndarray | None, points: np.ndarray | None,
                labels: np.ndarray | None) -> np.ndarray:
        """The members' mean lesion probability for one image."""
        multimask, answer = decoder_request(self.automatic_mask_token if box is None and points is None else 0)
        probabilities = []
        for predictor in self._predictors(gray):
            with torch.inference_mode():
                logits, _, _ = predictor.predict(point_coords=points, point_labels=labels, box=box,
                                                 multimask_output=multimask, return_logits=True)
            probabilities.append(1 / (1 + np.exp(-logits[answer])))
        return np.mean(probabilities, axis=0)

    def find_rois(self, gray: np.ndarray, settings: RoiSettings = RoiSettings()) -> list[Roi]:
        """Lesions found without any prompt, most confident first."""
        return rois_from_probability(self.probability(gray), settings)

    def prompted_roi(self, gray: np.ndarray, box: np.ndarray | None, points: np.ndarray | None,
                     labels: np.ndarray | None) -> Roi | None:
        """The lesion a user's box and/or clicks point at: the largest confident region, or None."""
        rois = rois_from_probability(self.probability(gray, box, points, labels),
                                     RoiSettings(min_area_fraction=0.0, confidence_threshold=0.0, max_rois=20,
                                                 lesion_threshold=PROMPTED_LESION_THRESHOLD))
        return max(rois, key=lambda roi: roi.area, default=None)


def rois_from_probability(probability: np.ndarray, settings: RoiSettings) -> list[Roi]:
    components, _ = ndimage.label(probability > settings.lesion_threshold)
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
