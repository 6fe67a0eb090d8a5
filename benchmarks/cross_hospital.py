"""Another hospital's ultrasound: the shipped recipe trained on one data set alone, read on the other.

    PYTHONPATH=. python benchmarks/cross_hospital.py --train-set busbra --run-dir runs/cross-busbra
    PYTHONPATH=. python benchmarks/cross_hospital.py --train-set busi --run-dir runs/cross-busi
    PYTHONPATH=. python benchmarks/cross_hospital.py --train-set busi --run-dir /tmp/try -- --epochs 1 --size 32

The shipped ultrasound model is judged on images from a hospital it never saw. BUS-BRA (Brazil,
four scanners) and BUSI (Egypt, one hospital) are two such hospitals: a network trained on one
alone and read on every image of the other sees what an unseen hospital would show it. The
estimate is pessimistic, since the network learns from one data set instead of both.

The recipe is the shipped card's own training command (architecture, size, epochs, losses, seed),
with --members networks (default 1: the second member of the shipped ensemble moved the
cross-validated AUC by 0.003); ml.train options after `--` override it. Each network checkpoints
in --run-dir, so rerunning the command resumes it. Prints one JSON object: the images read, AUC
malignant vs benign on the lesion images and malignant vs rest (and lesion vs normal where there
are normal images) on all of them, each with a 95% interval from 1000 group-bootstrap resamples;
AUC needs no calibration, so the raw logits are read. The probabilities are kept in
--run-dir/read.npz; with --paired-with OTHER_RUN_DIR (another recipe read on the same images), the
difference this - other follows, each with a 95% interval from a paired bootstrap over patient
groups.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ml.calibration import softmax
from ml.cards import MODALITY_MODELS
from ml.datasets import CLASSES, MODALITY_SETS, load_samples
from ml.decision import MALIGNANT, NORMAL
from ml.metrics import bootstrap_intervals, paired_auc_difference, report
from ml.train import input_spec, parse_args, predict_logits, scratch_training_data, trained_members


def shipped_recipe(weights_dir: Path) -> list[str]:
    """The shipped ultrasound card's training command: ml.train's arguments."""
    card = json.loads((weights_dir / f"{MODALITY_MODELS['ultrasound']}.json").read_text())
    words = shlex.split(card["training"]["command"])
    return words[words.index("ml.train") + 1 :]


def auc_with_interval(labels: np.ndarray, p_malignant: np.ndarray, groups: np.ndarray) -> dict:
    """AUC malignant vs the other images given, with its group-bootstrap 95% interval."""
    return {"auc": round(float(roc_auc_score(labels == MALIGNANT, p_malignant)), 4),
            "ci95": bootstrap_intervals(labels, p_malignant, groups, threshold=0.5)["auc_malignant"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-set", choices=MODALITY_SETS["ultrasound"], required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"), help="where the shipped card is")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--paired-with", type=Path, metavar="RUN_DIR",
                        help="another finished run of this benchmark on the same images: the paired differences")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="-- then ml.train options that replace the card's")
    options = parser.parse_args()
    if options.paired_with is not None and not (options.paired_with / "read.npz").is_file():
        parser.error(f"--paired-with {options.paired_with}: no read.npz there (not a finished run of this benchmark)")
    if options.threads:
        torch.set_num_threads(options.threads)
    options.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(options.run_dir / "train.log")])

    overrides = options.overrides[1:] if options.overrides[:1] == ["--"] else options.overrides
    recipe = [*shipped_recipe(options.weights_dir), "--members", str(options.members), *overrides]
    args = parse_args([*recipe, "--run-dir", str(options.run_dir), "--data-root", str(options.data_root)])
    samples = load_samples(options.data_root, "ultrasound")
    data = scratch_training_data(args, samples, options.run_dir)
    from_set = np.array([s.dataset == options.train_set for s in samples])
    train_idx, read_idx = np.flatnonzero(from_set), np.flatnonzero(~from_set)
    network = trained_members(args, data, train_idx, options.run_dir)
    probs = softmax(predict_logits(network, data.pixels[read_idx], input_spec(args)))
    read_images = [str(samples[i].path) for i in read_idx]
    np.savez(options.run_dir / "read.npz", images=read_images, probs=probs)

    labels, groups = data.labels[read_idx], data.groups[read_idx]
    p_malignant = probs[:, CLASSES.index(MALIGNANT)]
    lesion = labels != NORMAL
    result = {
        "trained_on": options.train_set, "trained_images": len(train_idx),
        "read": sorted({samples[i].dataset for i in read_idx}), "n": len(read_idx),
        "recipe": shlex.join(["python", "-m", "ml.train", *recipe]),
        "malignant_vs_benign": auc_with_interval(labels[lesion], p_malignant[lesion], groups[lesion]),
        "malignant_vs_rest": auc_with_interval(labels, p_malignant, groups),
        "lesion_vs_normal": report(labels, probs, CLASSES, threshold=0.5)["auc_lesion"],
    }
    if options.paired_with is not None:
        other = np.load(options.paired_with / "read.npz")
        if list(other["images"]) != read_images:
            raise SystemExit(f"--paired-with {options.paired_with}: it read other images than this run")
        result["paired_with"] = str(options.paired_with)
        result["this_minus_other"] = paired_auc_difference(labels, groups, other["probs"], probs, CLASSES)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
