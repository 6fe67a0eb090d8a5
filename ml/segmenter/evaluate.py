"""Segmentation metrics through `SamPredictor`, on folders laid out like ../shared/data/<set>."""
from __future__ import annotations

import time

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ml.datasets import Sample, lesion_mask, load_gray
from ml.segmenter.data import inner_point, lesion_boxes
from ml.segmenter.roi import RoiSettings, Segmenter

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
        predicted.append(probability > 0.5)
    return predicted


def evaluate(segmenter: Segmenter, samples: list[Sample], prompt: str,
             settings: RoiSettings = DEFAULT_SETTINGS) -> dict:
    """`n`, mean `dice` and `iou` over lesion images (masks unioned), `detection_rate`,
    `false_rois_per_image`, `lesion_free_with_roi` (the share of images without a lesion that get
    any ROI: there should be none) and `ms_per_image`. Box prompts are each lesion's ground-truth box,
    point prompts each lesion's centre point; automatic mode uses no prompt at all."""
    dice, iou, detected, lesions_total, false_rois, elapsed = [], [], 0, 0, 0, []
    lesion_free_with_roi = []
    for sample in tqdm(samples, desc=f"segment ({prompt})"):
        gray = load_gray(sample.path)
        truth = lesion_mask(sample, gray.shape) > 127
        labelled, count = ndimage.label(truth)
        started = time.perf_counter()
        predicted = predicted_masks(segmenter, gray, labelled, prompt, settings)
        elapsed.append(time.perf_counter() - started)
        union = np.logical_or.reduce(predicted) if predicted else np.zeros_like(truth)
        matched = set()
        for lesion in range(1, count + 1):
            hits = [k for k, mask in enumerate(predicted) if _iou(mask, labelled == lesion) >= 0.5]
            detected += bool(hits)
            matched.update(hits)
        lesions_total += count
        false_rois += len(predicted) - len(matched)
        if count:
            dice.append(_dice(union, truth))
            iou.append(_iou(union, truth))
        else:
            lesion_free_with_roi.append(bool(predicted))
    return {
        "n": len(samples),
        "lesion_images": len(dice),
        "dice": round(float(np.mean(dice)), 4) if dice else None,
        "iou": round(float(np.mean(iou)), 4) if iou else None,
        "detection_rate": round(detected / lesions_total, 4) if lesions_total else None,
        "false_rois_per_image": round(false_rois / len(samples), 4) if samples else None,
        "lesion_free_images": len(lesion_free_with_roi),
        "lesion_free_with_roi": round(float(np.mean(lesion_free_with_roi)), 4) if lesion_free_with_roi else None,
        "ms_per_image": round(1000 * float(np.median(elapsed)), 1) if elapsed else None,
    }
