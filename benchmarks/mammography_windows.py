"""Whole breast or most suspicious window: two readings of one crop-trained run's folds, same images.

    PYTHONPATH=. python benchmarks/mammography_windows.py runs/mammography-crops

Each fold's network (its last checkpoint, `ml.train --crop`) reads its held-out images twice: the
whole letterboxed image through its global average pooling (what the service did before), and
window by window, the image being its most suspicious window (ml.inference, the card's
`input.window`). Prints one JSON object: for each reading, the out-of-fold AUCs malignant vs rest,
malignant vs benign and abnormal vs normal (uncalibrated logits: AUC needs no calibration), and
the difference window - whole for the first two with a 95% interval from a paired bootstrap over
patients.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ml.calibration import softmax
from ml.datasets import CLASSES, grouped_folds, load_samples
from ml.metrics import paired_auc_difference, report
from ml.preprocess import InputSpec
from ml.train import TrainingData, fold_network, predict_logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed (which images each fold held out)")
    parser.add_argument("--size", type=int, default=192, help="the run's --size")
    parser.add_argument("--window", type=int, default=64, help="the run's --crop")
    args = parser.parse_args()

    samples = load_samples(args.data_root, "mammography")
    data = TrainingData(samples, args.size, args.run_dir / f"data_{args.size}.npz")
    readings = {"whole": InputSpec(size=args.size), "window": InputSpec(size=args.size, window=args.window)}
    logits = {name: np.zeros((len(samples), len(CLASSES))) for name in readings}
    for k, (_, held_out) in enumerate(grouped_folds(samples, args.folds, args.seed)):
        network = fold_network(args.run_dir / f"fold{k}")
        for name, spec in readings.items():
            logits[name][held_out] = predict_logits(network, data.pixels[held_out], spec)

    labels, groups = data.labels, data.groups
    probs = {name: softmax(values) for name, values in logits.items()}
    result = {"n": len(samples), "run_dir": str(args.run_dir), "window_side": args.window}
    for name, p in probs.items():
        measured = report(labels, p, CLASSES, threshold=0.5)
        result[name] = {key: measured[key] for key in ("auc_malignant", "auc_malignant_vs_benign", "auc_lesion")}
    result["window_minus_whole"] = paired_auc_difference(labels, groups, probs["whole"], probs["window"], CLASSES)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
