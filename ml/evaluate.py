"""Evaluate the shipped models on a folder laid out like ../shared/data/<set>.

    python -m ml.evaluate classify --modality ultrasound ../shared/data/busi
    python -m ml.evaluate segment --modality ultrasound --prompt box ../shared/data/busbra
    python -m ml.evaluate saliency --modality ultrasound ../shared/data/busi

Prints one JSON object: n, auc_malignant (malignant vs everything else), auc_lesion (benign or
malignant vs normal, null without normals), accuracy, sensitivity and specificity for malignancy
at the shipped threshold, and the confusion matrix. `segment` prints n, dice and iou (lesion
images), detection_rate, false_rois_per_image and ms_per_image. Nothing is fitted to the
evaluated data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.cards import MODALITIES, MODALITY_MODELS, SEGMENTER_MODELS, read_card, verified_weights_path
from ml.classifier import Classifier
from ml.datasets import load_gray, read_folder
from ml.metrics import report
from ml.saliency import SALIENCY_METHODS, Explainer, localisation_metrics
from ml.segmenter.build import load_segmenter
from ml.segmenter.evaluate import PROMPTS
from ml.segmenter.evaluate import evaluate as evaluate_segmenter
from ml.segmenter.roi import Segmenter

BATCH = 32
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


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


def segment(modality: str, prompt: str, folder: Path, weights_dir: Path) -> dict:
    card = read_card(weights_dir, SEGMENTER_MODELS[modality])
    segmenter = Segmenter(load_segmenter(card["architecture"], verified_weights_path(weights_dir, card), card["build"]))
    samples = [s for s in read_folder(folder) if s.has_outline]
    return {"model": {"name": card["name"], "version": card["version"]}, "prompt": prompt,
            **evaluate_segmenter(segmenter, samples, prompt)}


def saliency(modality: str, method: str, folder: Path, weights_dir: Path) -> dict:
    """Pointing game and energy in mask of the shipped model on a folder with lesion outlines."""
    classifier = Classifier.load(weights_dir, MODALITY_MODELS[modality])
    samples = read_folder(folder)
    return {"model": {"name": classifier.name, "version": classifier.version}, "method": method,
            **localisation_metrics(Explainer.for_classifier(classifier), tqdm(samples, file=sys.stderr), method)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    classify_parser = commands.add_parser("classify", help="classification metrics on a folder")
    classify_parser.add_argument("--modality", choices=MODALITIES, required=True)
    classify_parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    classify_parser.add_argument("folder", type=Path)
    segment_parser = commands.add_parser("segment", help="segmentation and detection metrics on a folder")
    segment_parser.add_argument("--modality", choices=MODALITIES, required=True)
    segment_parser.add_argument("--prompt", choices=PROMPTS, default="auto")
    segment_parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    segment_parser.add_argument("folder", type=Path)
    saliency_parser = commands.add_parser("saliency", help="does the saliency point at the lesion?")
    saliency_parser.add_argument("--modality", choices=MODALITIES, required=True)
    saliency_parser.add_argument("--method", choices=SALIENCY_METHODS, default="gradcam")
    saliency_parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    saliency_parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "classify":
        result = classify(args.modality, args.folder, args.weights_dir)
    elif args.command == "segment":
        result = segment(args.modality, args.prompt, args.folder, args.weights_dir)
    else:
        result = saliency(args.modality, args.method, args.folder, args.weights_dir)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
