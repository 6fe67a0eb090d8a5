"""ROI crops as the classifier sees them, and the classifier's calibration on them, fitted out of fold.

The classifier trains on whole images. An ROI crop shows it one lesion at another scale, and its
probabilities there are not a whole image's: with the whole image's calibration and a tight crop,
the automatic ROIs of fold 0's held-out images were called malignant so often that an analysis with
ROIs flagged 96% of the benign and normal images (README "ROI classification"). So ROI crops get
their own context (the lesion's box grown on each side by `context_margin` of its size), their own
temperature and their own thresholds. All three are chosen on each cross-validation fold's network's
crops of the outlined lesions of the images it never saw, and written into the model card
(`roi_classification`), where `ml.classifier.Classifier` reads them.

    python -m ml.roi_classification --modality ultrasound --run-dir runs/ultrasound-os16
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from ml.calibration import expected_calibration_error, fit_calibrator
from ml.cards import MODALITIES, MODALITY_MODELS, read_card, write_card
from ml.datasets import CLASSES, Sample, lesion_mask, load_gray, load_samples
from ml.inference import tta_logits
from ml.metrics import (
    SCREENING_SENSITIVITY,
    balanced_threshold,
    bootstrap_intervals,
    report,
    screening_threshold,
)
from ml.preprocess import InputSpec, to_batch

MARGINS = (0.15, 0.5, 1.0, 1.5, 2.0)
BATCH = 32
MALIGNANT = CLASSES.index("malignant")


def context_box(box: tuple[int, int, int, int], shape: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The ROI's box (x0, y0, x1, y1 inclusive) grown by `margin` of its size on each side, inside the image."""
    x0, y0, x1, y1 = box
    dx, dy = round((x1 - x0 + 1) * margin), round((y1 - y0 + 1) * margin)
    return max(0, x0 - dx), max(0, y0 - dy), min(shape[1] - 1, x1 + dx), min(shape[0] - 1, y1 + dy)


def context_crop(gray: np.ndarray, box: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """The part of the image the classifier sees for an ROI."""
    x0, y0, x1, y1 = context_box(box, gray.shape, margin)
    return gray[y0 : y1 + 1, x0 : x1 + 1]


def lesion_boxes(sample: Sample, shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The box of each outlined lesion (connected piece of the sample's mask or circles)."""
    labelled, _ = ndimage.label(lesion_mask(sample, shape) > 127)
    return [(cols.start, rows.start, cols.stop - 1, rows.stop - 1) for rows, cols in ndimage.find_objects(labelled)]


@dataclass
class LesionCrops:
    """One row per outlined lesion: its image's label, group and data set, and the network's
    logits for its crop at each margin."""

    labels: np.ndarray
    groups: np.ndarray
    datasets: np.ndarray
    logits: dict[float, np.ndarray]

    def save(self, path: Path) -> None:
        margins = sorted(self.logits)
        np.savez(path, labels=self.labels, groups=self.groups, datasets=self.datasets, margins=np.array(margins),
                 logits=np.stack([self.logits[m] for m in margins]))

    @staticmethod
    def load(path: Path) -> LesionCrops:
        saved = np.load(path)
        return LesionCrops(saved["labels"], saved["groups"], saved["datasets"],
                           {float(m): logits for m, logits in zip(saved["margins"], saved["logits"])})

    @staticmethod
    def concatenate(parts: list[LesionCrops]) -> LesionCrops:
        return LesionCrops(
            labels=np.concatenate([p.labels for p in parts]), groups=np.concatenate([p.groups for p in parts]),
            datasets=np.concatenate([p.datasets for p in parts]),
            logits={m: np.concatenate([p.logits[m] for p in parts]) for m in parts[0].logits},
        )


def lesion_crop_logits(network: torch.nn.Module, spec: InputSpec, samples: list[Sample],
                       margins: tuple[float, ...] = MARGINS, desc: str = "lesion crops") -> LesionCrops:
    """The network's logits (with its test-time mirror) for a crop of every outlined lesion of
    `samples` at each margin. Images are read one at a time, crops classified a batch at a time."""
    labels, groups, datasets, crops = [], [], [], {m: [] for m in margins}
    for sample in tqdm(samples, desc=desc):
        if not (sample.masks or sample.circles):
            continue
        gray = load_gray(sample.path)
        for box in lesion_boxes(sample, gray.shape):
            labels.append(sample.label)
            groups.append(sample.group)
            datasets.append(sample.dataset)
            for margin in margins:
                crops[margin].append(context_crop(gray, box, margin))
    logits = {}
    for margin, pictures in crops.items():
        parts = [tta_logits(network, to_batch(pictures[start : start + BATCH], spec), spec).numpy()
                 for start in tqdm(range(0, len(pictures), BATCH), desc=f"{desc}, margin {margin}")]
        logits[margin] = np.concatenate(parts) if parts else np.zeros((0, len(CLASSES)))
    return LesionCrops(np.array(labels), np.array(groups), np.array(datasets), logits)


def _summary(crops: LesionCrops, probs: np.ndarray, threshold: float, chosen: np.ndarray) -> dict:
    labels, p_malignant = crops.labels[chosen], probs[chosen, MALIGNANT]
    result = report(labels, probs[chosen], CLASSES, threshold)
    result["ece_malignant"] = expected_calibration_error(labels == "malignant", p_malignant)
    result["ci95"] = bootstrap_intervals(labels, p_malignant, crops.groups[chosen], threshold)
    return result


def fit_roi_classification(crops: LesionCrops, source: str) -> dict:
    """The card's `roi_classification` from held-out lesion crops: the margin whose crops the
    network ranks best (AUC malignant vs benign), the calibration fitted on that margin's logits
    (a temperature: crops are of lesions, and ml.calibration fits class biases only with every class),
    the screening and balanced thresholds on the calibrated probabilities, and the metrics there.
    `source` says which held-out images the crops came from."""
    is_malignant = crops.labels == "malignant"
    targets = np.array([CLASSES.index(label) for label in crops.labels])
    calibrators = {margin: fit_calibrator(logits, targets) for margin, logits in crops.logits.items()}
    by_margin = {margin: report(crops.labels, calibrators[margin].probabilities(logits), CLASSES, 0.5)["auc_malignant_vs_benign"]
                 for margin, logits in crops.logits.items()}
    margin = max(by_margin, key=lambda m: (by_margin[m], -m))  # a tie goes to the tighter crop
    calibrator = calibrators[margin]
    probs = calibrator.probabilities(crops.logits[margin])
    threshold = screening_threshold(is_malignant, probs[:, MALIGNANT], SCREENING_SENSITIVITY)
    balanced = balanced_threshold(is_malignant, probs[:, MALIGNANT])
    return {
        "context_margin": margin,
        "calibration": {"method": f"{calibrator.method} on {source}", **calibrator.to_dict()},
        "threshold": {
            "malignant": threshold,
            "chosen_for": f"sensitivity >= {SCREENING_SENSITIVITY} for malignancy on the calibrated crops of {source}",
            "balanced": balanced,
            "balanced_chosen_for": f"maximum sensitivity + specificity (Youden) on the calibrated crops of {source}",
        },
        "metrics": {
            "method": f"one crop per outlined lesion of {source}, labelled with its image's label; "
            "95% intervals from 1000 group-bootstrap resamples",
            "auc_malignant_vs_benign_by_margin": {str(m): auc for m, auc in by_margin.items()},
            "pooled": _summary(crops, probs, threshold, np.ones(len(crops.labels), dtype=bool)),
            "per_dataset": {name: _summary(crops, probs, threshold, crops.datasets == name)
                            for name in sorted(set(crops.datasets))},
        },
    }


def out_of_fold_crops(run_dir: Path, samples: list[Sample], spec: InputSpec, members: int,
                      folds: list[int], margins: tuple[float, ...] = MARGINS) -> LesionCrops:
    """Each cross-validation fold's network (runs/<modality>/fold<k>) on the lesions of its own
    held-out images; kept in fold<k>/lesion_crops_<members>[_window<side>].npz (by how the network
    reads images) and read from there when its margins match."""
    from ml.train import fold_network  # training code: imported only for this command

    parts = []
    for k in folds:
        fold_dir = run_dir / f"fold{k}"
        cache = fold_dir / f"lesion_crops_{members}{f'_window{spec.window}' if spec.window else ''}.npz"
        cached = LesionCrops.load(cache) if cache.exists() else None
        if cached is not None and sorted(cached.logits) == sorted(margins):
            parts.append(cached)
            continue
        held_out = np.load(fold_dir / "out_of_fold.npz")["held_out"]
        crops = lesion_crop_logits(fold_network(fold_dir, members), spec, [samples[i] for i in held_out], margins,
                                   f"fold{k} lesion crops")
        crops.save(cache)
        parts.append(crops)
    return LesionCrops.concatenate(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", choices=MODALITIES, required=True)
    parser.add_argument("--run-dir", type=Path, required=True, help="the cross-validation run of the shipped model")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights-dir", type=Path, default=Path(__file__).resolve().parent.parent / "weights")
    args = parser.parse_args(argv)

    card = read_card(args.weights_dir, MODALITY_MODELS[args.modality])
    members = card.get("members", 1)
    folds = sorted(int(path.name[4:]) for path in args.run_dir.glob("fold[0-9]*"))
    if not folds:
        raise SystemExit(f"{args.run_dir} holds no cross-validation folds (fold<k>/)")
    crops = out_of_fold_crops(args.run_dir, load_samples(args.data_root, args.modality),
                              InputSpec.from_dict(card["input"]), members, folds)
    fitted = fit_roi_classification(crops, f"the {len(folds)} cross-validation folds' held-out images")
    fitted["command"] = (f"python -m ml.roi_classification --modality {args.modality} --run-dir {args.run_dir}")
    card["roi_classification"] = fitted
    write_card(args.weights_dir, card)
    print(json.dumps(fitted, indent=2))


if __name__ == "__main__":
    main()
