"""Segmentation metrics through `SamPredictor`, on folders laid out like ../shared/data/<set>."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ml.datasets import Sample, lesion_mask, load_gray
from ml.metrics import paired_mean_difference
from ml.segmenter.data import inner_point, lesion_boxes
from ml.segmenter.roi import PROMPTED_LESION_THRESHOLD, RoiSettings, Segmenter

PROMPTS = ("auto", "box", "point")
DEFAULT_SETTINGS = RoiSettings()  # frozen: one shared default


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def predicted_masks(segmenter: Segmenter, gray: np.ndarray, lesions: np.ndarray, prompt: str,
                    settings: RoiSettings = DEFAULT_SETTINGS) -> list[np.ndarray]:
    """The masks `prompt` gets on one image: every automatic ROI, or one mask per true lesion
    (`lesions`: the outline's connected components, numbered from 1) prompted by its box or its
    centre point. An image without a lesion gives a prompt nothing to point at."""
    if prompt == "auto":
        return [roi.mask for roi in segmenter.find_rois(gray, settings)]
    predicted = []
    for lesion, box in enumerate(lesion_boxes(lesions), start=1):
        if prompt == "box":
            probability = segmenter.probability(gray, box=box)
        else:
            point = inner_point(lesions == lesion)[None]
            probability = segmenter.probability(gray, points=point, labels=np.ones(1))
        predicted.append(probability > PROMPTED_LESION_THRESHOLD)
    return predicted


@dataclass(frozen=True)
class ImageOutcome:
    """What one image's predicted masks scored against its lesions (`lesions`: connected
    components numbered from 1)."""
    lesions: int
    detected: int  # lesions overlapped by a predicted mask with IoU >= 0.5
    false_rois: int  # predicted masks overlapping no lesion that well
    dice: float | None  # of the masks' union against all lesions; None without a lesion
    iou: float | None

    @classmethod
    def of(cls, predicted: list[np.ndarray], lesions: np.ndarray) -> "ImageOutcome":
        truth = lesions > 0
        count = int(lesions.max())
        union = np.logical_or.reduce(predicted) if predicted else np.zeros_like(truth)
        matched, detected = set(), 0
        for lesion in range(1, count + 1):
            hits = [k for k, mask in enumerate(predicted) if _iou(mask, lesions == lesion) >= 0.5]
            detected += bool(hits)
            matched.update(hits)
        return cls(lesions=count, detected=detected, false_rois=len(predicted) - len(matched),
                   dice=_dice(union, truth) if count else None, iou=_iou(union, truth) if count else None)

    @property
    def any_roi(self) -> bool:
        return self.detected + self.false_rois > 0


def summary(outcomes: list[ImageOutcome], seconds: list[float]) -> dict:
    """`n`, mean `dice` and `iou` over lesion images (masks unioned), `detection_rate`,
    `false_rois_per_image`, `lesion_free_with_roi` (the share of images without a lesion that get
    any ROI: there should be none) and `ms_per_image` (median)."""
    with_lesion = [o for o in outcomes if o.lesions]
    lesion_free = [o.any_roi for o in outcomes if not o.lesions]
    lesions_total = sum(o.lesions for o in outcomes)
    return {
        "n": len(outcomes),
        "lesion_images": len(with_lesion),
        "dice": round(float(np.mean([o.dice for o in with_lesion])), 4) if with_lesion else None,
        "iou": round(float(np.mean([o.iou for o in with_lesion])), 4) if with_lesion else None,
        "detection_rate": round(sum(o.detected for o in outcomes) / lesions_total, 4) if lesions_total else None,
        "false_rois_per_image": round(sum(o.false_rois for o in outcomes) / len(outcomes), 4) if outcomes else None,
        "lesion_free_images": len(lesion_free),
        "lesion_free_with_roi": round(float(np.mean(lesion_free)), 4) if lesion_free else None,
        "ms_per_image": round(1000 * float(np.median(seconds)), 1) if seconds else None,
    }


def dice_difference(baseline: list[ImageOutcome], other: list[ImageOutcome], groups: list[str]) -> dict:
    """`other`'s Dice minus `baseline`'s, two answers for the same images (`groups`: each image's
    patient/near-duplicate group), image by image over the lesion images, with a 95% interval
    from resampling whole groups."""
    lesion_images = [i for i, outcome in enumerate(baseline) if outcome.lesions]
    return paired_mean_difference(np.array(groups)[lesion_images],
                                  np.array([baseline[i].dice for i in lesion_images]),
                                  np.array([other[i].dice for i in lesion_images]))


def evaluate(segmenter: Segmenter, samples: list[Sample], prompt: str,
             settings: RoiSettings = DEFAULT_SETTINGS) -> dict:
    """`summary` of `prompt` on `samples`. Box prompts are each lesion's ground-truth box, point
    prompts each lesion's centre point; automatic mode uses no prompt at all."""
    outcomes, seconds = _scored(segmenter, samples, prompt, settings)
    return summary(outcomes, seconds)


def held_out_metrics(segmenter: Segmenter, held_out: list[Sample]) -> dict:
    """Every prompt kind's `evaluate`, on all the held-out images and on each data set's: what a
    segmenter's card records. Each image is segmented once per prompt kind; the data sets'
    summaries share those outcomes."""
    scored = {prompt: _scored(segmenter, held_out, prompt, DEFAULT_SETTINGS) for prompt in PROMPTS}

    def summaries(dataset: str | None) -> dict:
        chosen = [i for i, s in enumerate(held_out) if dataset is None or s.dataset == dataset]
        return {prompt: summary([outcomes[i] for i in chosen], [seconds[i] for i in chosen])
                for prompt, (outcomes, seconds) in scored.items()}

    return {**summaries(None),
            "per_dataset": {name: summaries(name) for name in sorted({s.dataset for s in held_out})}}


def _scored(segmenter: Segmenter, samples: list[Sample], prompt: str,
            settings: RoiSettings) -> tuple[list[ImageOutcome], list[float]]:
    """Each image's outcome under `prompt`, and the seconds its segmentation took."""
    outcomes, seconds = [], []
    for sample in tqdm(samples, desc=f"segment ({prompt})"):
        gray = load_gray(sample.path)
        lesions, _ = ndimage.label(lesion_mask(sample, gray.shape) > 127)
        started = time.perf_counter()
        predicted = predicted_masks(segmenter, gray, lesions, prompt, settings)
        seconds.append(time.perf_counter() - started)
        outcomes.append(ImageOutcome.of(predicted, lesions))
    return outcomes, seconds
