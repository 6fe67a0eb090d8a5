"""Ways to post-process the segmenter's automatic mode, measured on one split's held-out fold.

Each variant starts from the same model; none is served unless it beats `served` on both splits.

    PYTHONPATH=. python benchmarks/automatic_variants.py weights/split0 --seed 0
    PYTHONPATH=. python benchmarks/automatic_variants.py runs/us-segmenter-s1/weights --seed 1

`WEIGHTS_DIR` holds a segmenter card trained with `ml.segmenter.train --seed` the same seed (or
an ensemble of such runs, e.g. split 1's `runs/us-ens2-s1/weights`), so that its held-out fold is
the one scored here. Prints one JSON line per variant and data set, with the variant's Dice minus
the served one's, image by image (`dice_minus_served`, 95% interval over resampled groups).

With `--classifier-run RUN` (an `ml.train` cross-validation run of the same seed whose fold 0 is
trained, e.g. `runs/ultrasound-os16`), the variants that also ask fold 0's classifier network,
which never saw these images, are measured too: whether the image shows a lesion at all (its
uncalibrated probability of "normal" below one half), and where its Grad-CAM peak is.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from ml.cards import MODALITIES, SEGMENTER_MODELS
from ml.datasets import CLASSES, lesion_mask, load_gray, load_samples
from ml.inference import tta_logits
from ml.preprocess import InputSpec, to_batch
from ml.saliency import Explainer
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import held_out_samples, inner_point
from ml.segmenter.evaluate import ImageOutcome, dice_difference, summary
from ml.segmenter.roi import PROMPTED_LESION_THRESHOLD, RoiSettings, Segmenter, rois_from_probability
from ml.train import fold_network, read_with

BOX_GROWTH = 0.05  # of the ROI's size, on each side, for the box re-prompt
ZOOMS = (0.9, 1.12)  # within the zoom range the segmenter trained under
SENSITIVE_CONFIDENCE = 0.55  # the ROI gate where the classifier says the image shows a lesion
GRID_SIDE = 16  # points per side of the point grid, at cell centres as SAM's automatic mask generator lays its 32


@dataclass(frozen=True)
class Seen:
    """One held-out image as the variants see it."""
    segmenter: Segmenter
    gray: np.ndarray
    probability: np.ndarray  # the no-prompt answer every variant starts from
    normal_probability: float | None = None  # fold 0's classifier, uncalibrated (with --classifier-run)
    saliency_peak: tuple[int, int] | None = None  # (x, y) of its Grad-CAM for the likelier lesion class

    @property
    def shows_lesion(self) -> bool:
        return self.normal_probability < 0.5


def _zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """`image` magnified by `factor` about its centre, at its own size."""
    centre = np.array(image.shape) / 2
    return ndimage.affine_transform(image.astype(np.float32), np.eye(2) / factor,
                                    offset=centre - centre / factor, order=1, mode="nearest")


def served(seen: Seen) -> list[np.ndarray]:
    """What `Segmenter.find_rois` answers: the ROIs of the no-prompt answer."""
    return [roi.mask for roi in rois_from_probability(seen.probability, RoiSettings())]


def most_confident_only(seen: Seen) -> list[np.ndarray]:
    return served(seen)[:1]


def reprompted(seen: Seen, box_growth: float | None, click: bool) -> list[np.ndarray]:
    """Each automatic ROI replaced by the model's answer to a prompt made from it: its box grown
    by `box_growth` of its size per side (None: no box), and with `click`, one positive click at
    its centre (`inner_point`). Without a prompt the model often outlines only a lesion's core;
    a prompt there asks for the whole lesion it lies in."""
    segmenter, gray = seen.segmenter, seen.gray
    masks = []
    for roi in rois_from_probability(seen.probability, RoiSettings()):
        box = None
        if box_growth is not None:
            x0, y0, x1, y1 = roi.box
            grow_x, grow_y = box_growth * (x1 - x0 + 1), box_growth * (y1 - y0 + 1)
            box = np.array([max(0, x0 - grow_x), max(0, y0 - grow_y),
                            min(gray.shape[1] - 1, x1 + grow_x), min(gray.shape[0] - 1, y1 + grow_y)])
        points, labels = (inner_point(roi.mask)[None], np.ones(1)) if click else (None, None)
        answer = segmenter.prompted_roi(gray, box, points, labels)
        masks.append(roi.mask if answer is None else answer.mask)
    return masks


def grown(seen: Seen, low: float) -> list[np.ndarray]:
    """Each automatic ROI grown to the region of probability above `low` that holds it
    (hysteresis: confident cores found at 0.5, their outline drawn at `low`); ROIs that grow
    into one region count once."""
    regions, _ = ndimage.label(seen.probability > low)
    masks, taken = [], set()
    for roi in rois_from_probability(seen.probability, RoiSettings()):
        region = int(regions[roi.mask][0])
        if region not in taken:
            taken.add(region)
            masks.append(regions == region)
    return masks


def _clicked_lesion(probability: np.ndarray, row: int, col: int) -> np.ndarray | None:
    """The region of a click's answer (probability above SAM's 0.5) that holds the click, or its
    largest region when the click falls outside them all; None when there is none."""
    regions, count = ndimage.label(probability > PROMPTED_LESION_THRESHOLD)
    if not count:
        return None
    region = regions[row, col] or int(np.argmax(np.bincount(regions.ravel())[1:])) + 1
    return regions == region


def point_grid(seen: Seen, objectness: float, min_mean: float, max_overlap: float,
               beside_served: bool = False) -> list[np.ndarray]:
    """SAM's automatic mask generator, with the no-prompt answer as objectness: a `GRID_SIDE` x
    `GRID_SIDE` grid of points, each point where the no-prompt lesion probability reaches
    `objectness` clicked (most probable first) unless an earlier click's answer holds it; an answer
    is kept when it is at least the served minimum area, its mean no-prompt probability reaches
    `min_mean`, and it overlaps the answers kept before it by at most `max_overlap` of its area
    (in place of SAM's non-maximum suppression). With `beside_served`, the served ROIs come first
    and the grid only adds answers beside them."""
    segmenter, gray, probability = seen.segmenter, seen.gray, seen.probability
    rows = ((np.arange(GRID_SIDE) + 0.5) * gray.shape[0] / GRID_SIDE).astype(int)
    cols = ((np.arange(GRID_SIDE) + 0.5) * gray.shape[1] / GRID_SIDE).astype(int)
    points = sorted(((probability[r, c], r, c) for r in rows for c in cols if probability[r, c] >= objectness), reverse=True)
    settings = RoiSettings()
    answered = np.zeros(gray.shape, dtype=bool)
    kept = served(seen) if beside_served else []
    for _, row, col in points:
        if answered[row, col]:
            continue
        answer = _clicked_lesion(segmenter.probability(gray, None, np.array([[col, row]]), np.ones(1)), row, col)
        if answer is None:
            continue
        answered |= answer
        area = answer.sum()
        if (area >= settings.min_area_fraction * gray.size and probability[answer].mean() >= min_mean
                and all((answer & other).sum() <= max_overlap * area for other in kept)):
            kept.append(answer)
    return kept[: settings.max_rois]


def zoom_average(seen: Seen) -> list[np.ndarray]:
    """ROIs of the mean answer for the image and for it zoomed by each of `ZOOMS`, mapped back."""
    answers = [seen.probability]
    for factor in ZOOMS:
        zoomed = np.clip(_zoom(seen.gray, factor), 0, 255).astype(np.uint8)
        answers.append(_zoom(seen.segmenter.probability(zoomed), 1 / factor))
    return [roi.mask for roi in rois_from_probability(np.mean(answers, axis=0), RoiSettings())]


def classifier_gate(seen: Seen) -> list[np.ndarray]:
    """No ROI where the classifier calls the image normal; the served ROIs elsewhere."""
    return served(seen) if seen.shows_lesion else []


def saliency_fallback(seen: Seen) -> list[np.ndarray]:
    """The served ROIs; where there is none but the classifier sees a lesion, the answer to a
    click on its saliency peak."""
    masks = served(seen)
    if masks or not seen.shows_lesion:
        return masks
    x, y = seen.saliency_peak
    answer = seen.segmenter.prompted_roi(seen.gray, None, np.array([[x, y]]), np.ones(1))
    return [] if answer is None else [answer.mask]


def gated_with_fallback(seen: Seen) -> list[np.ndarray]:
    """`saliency_fallback` where the classifier sees a lesion; no ROI where it calls the image normal."""
    return saliency_fallback(seen) if seen.shows_lesion else []


def sensitive_where_lesion(seen: Seen) -> list[np.ndarray]:
    """No ROI where the classifier calls the image normal; elsewhere ROIs down to a mean lesion
    probability of `SENSITIVE_CONFIDENCE` instead of the served `RoiSettings().confidence_threshold`."""
    if not seen.shows_lesion:
        return []
    settings = RoiSettings(confidence_threshold=SENSITIVE_CONFIDENCE)
    return [roi.mask for roi in rois_from_probability(seen.probability, settings)]


VARIANTS = {
    "served": served,
    "most_confident_only": most_confident_only,
    "box_reprompt": lambda seen: reprompted(seen, BOX_GROWTH, click=False),
    "click_reprompt": lambda seen: reprompted(seen, None, click=True),
    "zoom_average": zoom_average,
    "box_0.15": lambda seen: reprompted(seen, 0.15, click=False),
    "box_0.3": lambda seen: reprompted(seen, 0.3, click=False),
    "box_0.15_click": lambda seen: reprompted(seen, 0.15, click=True),
    "box_0.3_click": lambda seen: reprompted(seen, 0.3, click=True),
    "grown_0.2": lambda seen: grown(seen, 0.2),
    "point_grid": lambda seen: point_grid(seen, objectness=0.5, min_mean=0.3, max_overlap=0.2),
    "point_grid_every_answer": lambda seen: point_grid(seen, objectness=0.5, min_mean=0.0, max_overlap=1.0),
    "point_grid_beside_served": lambda seen: point_grid(seen, objectness=0.5, min_mean=0.3, max_overlap=0.2,
                                                       beside_served=True),
    "point_grid_objectness_0.7": lambda seen: point_grid(seen, objectness=0.7, min_mean=0.3, max_overlap=0.2),
}
CLASSIFIER_VARIANTS = {
    "classifier_gate": classifier_gate,
    "saliency_fallback": saliency_fallback,
    "gated_with_fallback": gated_with_fallback,
    "sensitive_where_lesion": sensitive_where_lesion,
}


class FoldClassifier:
    """Fold 0's network of a cross-validation run, read as the served model reads images."""

    def __init__(self, run_dir: Path) -> None:
        finished = run_dir / "fold0" / "out_of_fold.npz"
        spec = read_with(finished) if finished.is_file() else None
        if spec is None:
            raise SystemExit(f"--classifier-run {run_dir}: fold 0 has not finished (no {finished} with its input spec)")
        self.spec = InputSpec.from_dict(spec)  # the input the run trained and read its held-out images at
        self.network = fold_network(run_dir / "fold0")
        self.explainer = Explainer(self.network, self.spec, CLASSES)

    def seen(self, segmenter: Segmenter, gray: np.ndarray, probability: np.ndarray) -> Seen:
        logits = tta_logits(self.network, to_batch([gray], self.spec), self.spec)[0]
        normal, benign, malignant = torch.softmax(logits.double(), 0).tolist()
        peak = self.explainer.explain(gray, "malignant" if malignant > benign else "benign").peak
        return Seen(segmenter, gray, probability, normal_probability=normal, saliency_peak=peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights_dir", type=Path)
    parser.add_argument("--modality", choices=MODALITIES, default="ultrasound")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--img-size", type=int, metavar="PX",
                        help="run the segmenter at this input size instead of its card's (it is convolutional)")
    parser.add_argument("--classifier-run", type=Path, metavar="RUN",
                        help="an ml.train run of the same --seed with fold 0 trained: adds the variants that ask it")
    parser.add_argument("--variants", type=lambda text: text.split(","), metavar="NAME,...",
                        help="measure only these variants (default: all) and `served`, which each is compared with")
    args = parser.parse_args()
    networks, card = load_carded_segmenter(args.weights_dir, SEGMENTER_MODELS[args.modality], args.img_size)
    segmenter = Segmenter.for_card(networks, card)
    classifier = FoldClassifier(args.classifier_run) if args.classifier_run else None
    variants = VARIANTS | (CLASSIFIER_VARIANTS if classifier else {})
    if args.variants:
        unknown = sorted(set(args.variants) - set(variants))
        if unknown:
            parser.error(f"unknown variants {unknown}; choose from {sorted(variants)}")
        variants = {"served": served} | {name: variants[name] for name in args.variants}
    outcomes: dict[tuple[str, str], list[ImageOutcome]] = {}
    normal_probabilities: dict[str, list[tuple[bool, float]]] = {}  # with a classifier: (lesion?, P(normal))
    groups: dict[str, list[str]] = {}  # each data set's images' patient/near-duplicate groups, in order
    for sample in tqdm(held_out_samples(load_samples(args.data_root, args.modality), args.seed, [card])):
        gray = load_gray(sample.path)
        lesions, _ = ndimage.label(lesion_mask(sample, gray.shape) > 127)
        groups.setdefault(sample.dataset, []).append(sample.group)
        probability = segmenter.probability(gray)
        seen = classifier.seen(segmenter, gray, probability) if classifier else Seen(segmenter, gray, probability)
        for name, variant in variants.items():
            outcomes.setdefault((name, sample.dataset), []).append(ImageOutcome.of(variant(seen), lesions))
        if classifier:
            normal_probabilities.setdefault(sample.dataset, []).append((bool(lesions.max()), seen.normal_probability))
    for (name, dataset), results in outcomes.items():
        print(json.dumps({"variant": name, "dataset": dataset, "seed": args.seed, "img_size": segmenter.members[0].image_encoder.img_size,
                          **summary(results, []), "dice_minus_served": dice_difference(outcomes["served", dataset], results, groups[dataset])}))
    for dataset, rows in normal_probabilities.items():
        print(json.dumps({"classifier": str(args.classifier_run / "fold0"), "dataset": dataset, "seed": args.seed,
                          **lesion_vs_normal(rows)}))


def lesion_vs_normal(rows: list[tuple[bool, float]]) -> dict:
    """How well the classifier's P(normal) tells the lesion images from the others: AUC (None
    without both kinds) and the share of lesion images it calls normal."""
    lesion = np.array([has_lesion for has_lesion, _ in rows])
    normal = np.array([p for _, p in rows])
    return {"auc_lesion_vs_normal": round(float(roc_auc_score(lesion, -normal)), 4) if 0 < lesion.sum() < len(rows) else None,
            "lesion_images_called_normal": round(float((normal[lesion] >= 0.5).mean()), 4) if lesion.any() else None}


if __name__ == "__main__":
    main()
