"""Ways to post-process the segmenter's automatic mode, measured on one split's held-out fold.

Each variant starts from the same model; none is served unless it beats `served` on both splits.

    PYTHONPATH=. python benchmarks/automatic_variants.py weights --seed 0
    PYTHONPATH=. python benchmarks/automatic_variants.py runs/us-segmenter-s1/weights --seed 1

`WEIGHTS_DIR` holds a segmenter card trained with `ml.segmenter.train --seed` the same seed, so
that its held-out fold is the one scored here. Prints one JSON line per variant and data set.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ml.cards import MODALITIES, SEGMENTER_MODELS
from ml.datasets import lesion_mask, load_gray, load_samples
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import segmenter_split
from ml.segmenter.evaluate import ImageOutcome, summary
from ml.segmenter.roi import RoiSettings, Segmenter, rois_from_probability

BOX_GROWTH = 0.05  # of the ROI's size, on each side, for the box re-prompt
ZOOMS = (0.9, 1.12)  # within the zoom range the segmenter trained under


def _zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """`image` magnified by `factor` about its centre, at its own size."""
    centre = np.array(image.shape) / 2
    return ndimage.affine_transform(image.astype(np.float32), np.eye(2) / factor,
                                    offset=centre - centre / factor, order=1, mode="nearest")


def served(segmenter: Segmenter, gray: np.ndarray, probability: np.ndarray) -> list[np.ndarray]:
    """What `Segmenter.find_rois` answers: the ROIs of the no-prompt answer `probability`."""
    return [roi.mask for roi in rois_from_probability(probability, RoiSettings())]


def most_confident_only(segmenter: Segmenter, gray: np.ndarray, probability: np.ndarray) -> list[np.ndarray]:
    return served(segmenter, gray, probability)[:1]


def box_reprompt(segmenter: Segmenter, gray: np.ndarray, probability: np.ndarray) -> list[np.ndarray]:
    """Each automatic ROI replaced by the answer to its box, grown by `BOX_GROWTH` per side."""
    masks = []
    for roi in rois_from_probability(probability, RoiSettings()):
        x0, y0, x1, y1 = roi.box
        grow_x, grow_y = BOX_GROWTH * (x1 - x0 + 1), BOX_GROWTH * (y1 - y0 + 1)
        box = np.array([max(0, x0 - grow_x), max(0, y0 - grow_y),
                        min(gray.shape[1] - 1, x1 + grow_x), min(gray.shape[0] - 1, y1 + grow_y)])
        answer = segmenter.prompted_roi(gray, box, None, None)
        masks.append(roi.mask if answer is None else answer.mask)
    return masks


def zoom_average(segmenter: Segmenter, gray: np.ndarray, probability: np.ndarray) -> list[np.ndarray]:
    """ROIs of the mean answer for the image and for it zoomed by each of `ZOOMS`, mapped back."""
    answers = [probability]
    for factor in ZOOMS:
        zoomed = np.clip(_zoom(gray, factor), 0, 255).astype(np.uint8)
        answers.append(_zoom(segmenter.probability(zoomed), 1 / factor))
    return [roi.mask for roi in rois_from_probability(np.mean(answers, axis=0), RoiSettings())]


VARIANTS = {
    "served": served,
    "most_confident_only": most_confident_only,
    "box_reprompt": box_reprompt,
    "zoom_average": zoom_average,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights_dir", type=Path)
    parser.add_argument("--modality", choices=MODALITIES, default="ultrasound")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    segmenter = Segmenter.for_card(*load_carded_segmenter(args.weights_dir, SEGMENTER_MODELS[args.modality]))
    outcomes: dict[tuple[str, str], list[ImageOutcome]] = {}
    for sample in tqdm(segmenter_split(load_samples(args.data_root, args.modality), args.seed)[1]):
        gray = load_gray(sample.path)
        lesions, _ = ndimage.label(lesion_mask(sample, gray.shape) > 127)
        probability = segmenter.probability(gray)  # the no-prompt answer every variant starts from
        for name, variant in VARIANTS.items():
            outcomes.setdefault((name, sample.dataset), []).append(
                ImageOutcome.of(variant(segmenter, gray, probability), lesions))
    for (name, dataset), results in outcomes.items():
        print(json.dumps({"variant": name, "dataset": dataset, "seed": args.seed, **summary(results, [])}))


if __name__ == "__main__":
    main()
