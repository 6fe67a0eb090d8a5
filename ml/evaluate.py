"""Evaluate the shipped models on a folder laid out like ../shared/data/<set>.

    python -m ml.evaluate classify --modality ultrasound ../shared/data/busi

Prints one JSON object: n, auc_malignant (malignant vs everything else), auc_lesion (benign or
malignant vs normal, null without normals), accuracy, sensitivity and specificity for malignancy
at the shipped threshold, and the confusion matrix. Nothing is fitted to the evaluated data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.cards import MODALITIES, MODALITY_MODELS
from ml.classifier import Classifier
from ml.datasets import load_gray, read_folder
from ml.metrics import report

BATCH = 32


def classify(modality: str, folder: Path, weights_dir: Path) -> dict:
    classifier = Classifier.load(weights_dir, MODALITY_MODELS[modality])
    samples = [s for s in read_folder(folder) if s.label in classifier.classes]
    if not samples:
        raise SystemExit(f"{folder}/labels.csv lists no image labelled one of {classifier.classes}")
    probs = []
    for start in tqdm(range(0, len(samples), BATCH), desc="classify", file=sys.stderr):
        grays = [load_gray(s.path) for s in samples[start : start + BATCH]]
        probs.append(classifier.probabilities(grays))
    result = report([s.label for s in samples], np.concatenate(probs), classifier.classes,
                    classifier.threshold)
    return {"model": {"name": classifier.name, "version": classifier.version}, **result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    classify_parser = commands.add_parser("classify", help="classification metrics on a folder")
    classify_parser.add_argument("--modality", choices=MODALITIES, required=True)
    classify_parser.add_argument("--weights-dir", type=Path, default=Path(__file__).parent.parent / "weights")
    classify_parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    print(json.dumps(classify(args.modality, args.folder, args.weights_dir)))


if __name__ == "__main__":
    main()
