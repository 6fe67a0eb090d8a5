"""Compare two cross-validation runs of `python -m ml.train` on their out-of-fold predictions.

    PYTHONPATH=. python benchmarks/compare_cv_runs.py runs/ultrasound runs/ultrasound-clean
    PYTHONPATH=. python benchmarks/compare_cv_runs.py runs/ultrasound-os16 runs/ultrasound-os16 --members-b 2

Both runs must share the modality, folds and seed (so the same images are held out by the same
folds). Prints, per data set and pooled, each run's AUC (malignant vs benign, and malignant vs the
rest) and the difference B - A with a 95% interval from a paired bootstrap over patient groups.
AUC needs no calibration, so the folds' raw logits are compared; with --members-a/-b N, the mean
of the first N ensemble members' logits (`ml.train --members`), so that a run can be compared with
its own first member.
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

MALIGNANT = CLASSES.index("malignant")


def out_of_fold_p_malignant(run_dir: Path, n: int, folds: int, members: int) -> np.ndarray:
    p = np.full(n, np.nan)
    for k in range(folds):
        saved = [np.load(member_dir(run_dir / f"fold{k}", member) / "out_of_fold.npz") for member in range(members)]
        logits = np.mean([member["logits"] for member in saved], axis=0)
        p[saved[0]["held_out"]] = softmax(logits)[:, MALIGNANT]
    if np.isnan(p).any():
        raise SystemExit(f"{run_dir}: {int(np.isnan(p).sum())} images have no out-of-fold prediction yet")
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--modality", default="ultrasound")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--members-a", type=int, default=1, help="ensemble members of run A averaged")
    parser.add_argument("--members-b", type=int, default=1, help="ensemble members of run B averaged")
    args = parser.parse_args()
    samples = load_samples(args.data_root, args.modality)
    labels = np.array([s.label for s in samples])
    groups = np.array([f"{s.dataset}/{s.group}" for s in samples])
    datasets = np.array([s.dataset for s in samples])
    p_a = out_of_fold_p_malignant(args.run_a, len(samples), args.folds, args.members_a)
    p_b = out_of_fold_p_malignant(args.run_b, len(samples), args.folds, args.members_b)
    result = {"a": f"{args.run_a} ({args.members_a} members)", "b": f"{args.run_b} ({args.members_b} members)",
              "n": len(samples),
              "pooled": paired_auc_difference(labels, groups, p_a, p_b)}
    for name in sorted(set(datasets)):
        chosen = datasets == name
        result[name] = paired_auc_difference(labels[chosen], groups[chosen], p_a[chosen], p_b[chosen])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
