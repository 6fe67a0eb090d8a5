"""Images and lesion label maps prepared exactly as `SamPredictor` prepares an image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm import tqdm

from ml.datasets import Sample, grouped_folds, lesion_mask, load_gray


@dataclass
class PreparedImage:
    pixels: np.ndarray  # (h, w) uint8, long side == img_size, as SamPredictor resizes
    lesions: np.ndarray  # (h, w) int32 connected-component labels of the lesion mask, 0 = none


def segmenter_split(samples: list[Sample], seed: int) -> tuple[list[Sample], list[Sample]]:
    """The images a segmenter trains on and those it is validated on: fold 0 of the patient-grouped
    5-fold split with this seed held out. Both keep only images whose lesion area is known: a few
    mini-MIAS calcifications have none, and can neither teach nor score an outline."""
    train, held_out = grouped_folds(samples, 5, seed)[0]
    return ([samples[i] for i in train if samples[i].has_outline],
            [samples[i] for i in held_out if samples[i].has_outline])


ALL_IMAGES = "all images"


def held_out_split(card: dict) -> int | str | None:
    """The seed of the split whose fold 0 a segmenter's card says it held out, ALL_IMAGES when it
    held nothing out (`ml.segmenter.train --all-images`), None when the card does not say."""
    training = card.get("training", {})
    return ALL_IMAGES if training.get("all_images") else training.get("split_seed")


def held_out_samples(samples: list[Sample], seed: int, cards: list[dict]) -> list[Sample]:
    """Fold 0 of the split with this seed, for measuring the segmenters these cards describe;
    SystemExit when one of them trained on those images (it held nothing out, or another split's fold)."""
    for card in cards:
        held = held_out_split(card)
        if held not in (seed, None):
            what = "nothing" if held == ALL_IMAGES else f"fold 0 of split {held}"
            raise SystemExit(f"{card['name']} {card['version']} held out {what}, so it trained on fold 0 of "
                             f"split {seed}: measure a run that held that fold out (e.g. weights/split0 for seed 0)")
    return segmenter_split(samples, seed)[1]


def resize_for_sam(gray: np.ndarray, img_size: int) -> np.ndarray:
    """The grayscale image resized by segment_anything's own transform (long side = img_size)."""
    return ResizeLongestSide(img_size).apply_image(np.repeat(gray[:, :, None], 3, axis=2))[:, :, 0]


def prepare(samples: list[Sample], img_size: int) -> list[PreparedImage]:
    prepared = []
    for sample in tqdm(samples, desc="prepare"):
        gray = load_gray(sample.path)
        pixels = resize_for_sam(gray, img_size)
        mask = np.asarray(
            torch.nn.functional.interpolate(
                torch.from_numpy(lesion_mask(sample, gray.shape)[None, None].copy()).float(),
                size=pixels.shape, mode="nearest",
            )[0, 0] > 127
        )
        lesions, _ = ndimage.label(mask)
        prepared.append(PreparedImage(pixels=pixels, lesions=lesions.astype(np.int32)))
    return prepared


def lesion_boxes(lesions: np.ndarray) -> list[np.ndarray]:
    """XYXY boxes (pixel edges) of each labelled lesion."""
    boxes = []
    for rows, cols in ndimage.find_objects(lesions):
        boxes.append(np.array([cols.start, rows.start, cols.stop - 1, rows.stop - 1], dtype=np.float32))
    return boxes


def inner_point(mask: np.ndarray) -> np.ndarray:
    """The point of the mask farthest from its border (its 'centre', inside even if not convex)."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(distance), distance.shape)
    return np.array([x, y], dtype=np.float32)
