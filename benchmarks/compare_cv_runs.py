"""Compare two cross-validation runs of `python -m ml.train` on their out-of-fold predictions.

    PYTHONPATH=. python benchmarks/compare_cv_runs.py runs/ultrasound runs/ultrasound-clean
    PYTHONPATH=. python benchmarks/compare_cv_runs.py runs/ultrasound-os16 runs/ultrasound-os16 --members-b 2

Both runs must share the modality, folds and seed (so the same images are held out by the same
folds). Prints, per data set and pooled, each run's AUC (malignant vs benign, and malignant vs the
rest, and lesion vs normal where there are normal images) and the difference B - A with a 95% interval from a paired bootstrap over patient groups.
AUC needs no calibration, so the folds' raw logits are compared; with --members-a/-b N, the mean
of the first N ensemble members' logits (`ml.train --members`), so that a run can be compared with
its own first member. With --finished-folds, a run still training is compared on the folds both
runs have finished (their held-out images only).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ml.calibration import softmax
from ml.datasets import CLASSES, load_samples
from ml.metrics import paired_auc_difference
from ml.train import member_dir


def out_of_fold_probabilities(run_dir: Path, n: int, folds: list[int], members: int) -> np.ndarray:
    """(n, classes) uncalibrated probabilities of the images held out by `folds`, NaN elsewhere."""
    p = np.full((n, len(CLASSES)), np.nan)
    for k in folds:
        saved = [np.load(member_dir(run_dir / f"fold{k}", member) / "out_of_fold.npz") for member in range(members)]
        logits = np.mean([member["logits"] for member in saved], axis=0)
        p[saved[0]["held_out"]] = softmax(logits)
    return p


def finished_folds(run_dir: Path, folds: int, members: int) -> list[int]:
    return [k for k in range(folds)
            if all((member_dir(run_dir / f"fold{k}", member) / "out_of_fold.npz").exists() for member in range(members))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--modality", default="ultrasound")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--members-a", type=int, default=1, help="ensemble members of run A averaged")
    parser.add_argument("--members-b", type=int, default=1, help="ensemble members of run B averaged")
    parser.add_argument("--finished-folds", action="store_true",
                        help="compare on the folds both runs have finished, not all --folds")
    args = parser.parse_args()
    folds = sorted(set(finished_folds(args.run_a, args.folds, args.members_a))
                   & set(finished_folds(args.run_b, args.folds, args.members_b)))
    if not args.finished_folds and len(folds) < args.folds:
        raise SystemExit(f"only folds {folds} of {args.folds} are finished in both runs (--finished-folds compares on those)")
    if not folds:
        raise SystemExit("no fold is finished in both runs")
    samples = load_samples(args.data_root, args.modality)
    labels = np.array([s.label for s in samples])
    groups = np.array([f"{s.dataset}/{s.group}" for s in samples])
    datasets = np.array([s.dataset for s in samples])
    p_a = out_of_fold_probabilities(args.run_a, len(samples), folds, args.members_a)
    p_b = out_of_fold_probabilities(args.run_b, len(samples), folds, args.members_b)
    held_out = ~np.isnan(p_a[:, 0])
    result = {"a": f"{args.run_a} ({args.members_a} members)", "b": f"{args.run_b} ({args.members_b} members)",
              "folds": folds, "n": int(held_out.sum()),
              "pooled": paired_auc_difference(labels[held_out], groups[held_out], p_a[held_out], p_b[held_out], CLASSES)}
    for name in sorted(set(datasets)):
        chosen = held_out & (datasets == name)
        result[name] = paired_auc_difference(labels[chosen], groups[chosen], p_a[chosen], p_b[chosen], CLASSES)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
