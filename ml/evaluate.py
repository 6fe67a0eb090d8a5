"""Evaluate the shipped models on a folder laid out like ../shared/data/<set>.

    python -m ml.evaluate classify --modality ultrasound ../shared/data/busi
    python -m ml.evaluate segment --modality ultrasound --prompt box ../shared/data/busbra
    python -m ml.evaluate saliency --modality ultrasound ../shared/data/busi
    python -m ml.evaluate out-of-fold --modality ultrasound --folds 0 --screen-crop both ../shared/data

Prints one JSON object: n, auc_malignant (malignant vs everything else), auc_lesion (benign or
malignant vs normal, null without normals), accuracy, sensitivity and specificity for malignancy
at the shipped threshold, and the confusion matrix. `segment` prints n, dice and iou (lesion
images), detection_rate, false_rois_per_image, lesion_free_with_roi (the share of images
without a lesion given any ROI) and ms_per_image. Nothing is fitted to the
evaluated data.

`classify --screen-crop on` first crops each image to its scan area and inpaints calipers and
text, as an analysis with `screen_crop` does. `out-of-fold` is the honest comparison: each
cross-validation fold's network (runs/<modality>/fold<k>) on the images it never saw, with
screen cropping off, on, or both, over all of them and over the images where calipers or text
were found ("annotated") and the rest; with `--as-screenshot`, each image arrives as a synthetic
scanner screenshot (ml.screenshots: the lesion measured with calipers, the scan inside a screen of
menus, rulers and text), what screen cropping is for.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.cards import MODALITIES, MODALITY_MODELS, SEGMENTER_MODELS, read_card
from ml.classifier import Classifier
from ml.datasets import CLASSES, Sample, lesion_mask, load_gray, read_folder
from ml.metrics import paired_auc_difference, report
from ml.saliency import GRADCAM_LAYERS, SALIENCY_METHODS, Explainer, localisation_metrics
from ml.screen import clean_scan
from ml.screenshots import measured_scan, scanner_screenshot
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.evaluate import PROMPTS
from ml.segmenter.evaluate import evaluate as evaluate_segmenter
from ml.segmenter.roi import Segmenter

BATCH = 32
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


SCREEN_MODES = ("off", "on", "marks")  # marks: calipers and text inpainted, no crop (an ablation)


def _seen(gray: np.ndarray, screen_crop: bool | str) -> np.ndarray:
    """An uploaded image as the classifier sees it in an analysis with or without `screen_crop`."""
    mode = {True: "on", False: "off"}.get(screen_crop, screen_crop)
    return gray if mode == "off" else clean_scan(gray, crop=mode == "on").gray


def _probabilities(classifier: Classifier, images: Sequence[Path] | Sequence[np.ndarray], screen_crop: bool | str,
                   desc: str) -> np.ndarray:
    """`images`: paths, read one batch at a time (a large folder never sits in memory whole), or
    images already decoded."""
    probs = []
    for start in tqdm(range(0, len(images), BATCH), desc=desc, file=sys.stderr):
        batch = [load_gray(image) if isinstance(image, Path) else image for image in images[start : start + BATCH]]
        probs.append(classifier.probabilities([_seen(gray, screen_crop) for gray in batch]))
    return np.concatenate(probs)


def _as_screenshot(sample: Sample) -> np.ndarray:
    """The sample's image as a sonographer's screenshot: lesion measured with calipers, the scan
    inside a screen of menus, rulers and text (ml.screenshots)."""
    gray = load_gray(sample.path)
    return scanner_screenshot(measured_scan(gray, lesion_mask(sample, gray.shape) > 127))


def _listed(folder: Path) -> list[Sample]:
    """The folder's labels.csv read, or the one line that says which row it cannot read."""
    try:
        return read_folder(folder)
    except (OSError, ValueError) as error:
        raise SystemExit(str(error)) from None


def _require_files(folder: Path, samples: list[Sample], masks: bool) -> list[Sample]:
    """`samples`, once every image (and, with `masks`, every mask) of theirs that labels.csv names
    is found: a judge that skipped a missing file would score fewer images than it was given."""
    missing = [path for s in samples for path in (s.path, *(s.masks if masks else ())) if not path.is_file()]
    if missing:
        shown = ", ".join(path.relative_to(folder).as_posix() for path in missing[:5])
        raise SystemExit(f"{folder}/labels.csv lists {len(missing)} file(s) that are not in the folder: {shown}"
                         + (", ..." if len(missing) > 5 else ""))
    return samples


def classify(modality: str, folder: Path, weights_dir: Path, screen_crop: bool = False) -> dict:
    classifier = Classifier.load(weights_dir, MODALITY_MODELS[modality])
    samples = _require_files(folder, _listed(folder), masks=False)
    if not samples:
        raise SystemExit(f"{folder}/labels.csv lists no image")
    unknown = sorted({s.label for s in samples} - set(classifier.classes))
    if unknown:  # scored without them, the figures would be of fewer images than the folder holds
        raise SystemExit(f"{folder}/labels.csv has labels {unknown} that model {classifier.name} does not know "
                         f"(its classes: {classifier.classes})")
    probs = _probabilities(classifier, [s.path for s in samples], screen_crop, "classify")
    result = report([s.label for s in samples], probs, classifier.classes, classifier.threshold)
    return {"model": {"name": classifier.name, "version": classifier.version}, "screen_crop": screen_crop, **result}


def out_of_fold(modality: str, data_root: Path, run_dir: Path, folds: list[int], settings: list[str],
                weights_dir: Path, limit: int | None = None, seed: int = 0, as_screenshot: bool = False) -> dict:
    """Each fold's network on its own held-out images (calibrated and thresholded as in
    cross-validation), per screen-crop setting: over all images, the annotated ones (calipers or
    text found) and the clean ones. `limit`: a random subset of that many held-out images per fold.
    `as_screenshot`: each image arrives as a synthetic scanner screenshot instead (_as_screenshot).
    Each setting other than "off" also gets `paired_vs_off`: its AUCs minus those of the same
    images uncleaned, with 95% intervals from a paired bootstrap over patient groups."""
    from ml.datasets import load_samples
    from ml.train import fold_network  # training code: imported only for this command

    card = read_card(weights_dir, MODALITY_MODELS[modality])
    cv = json.loads((run_dir / "cross_validation.json").read_text())
    card = {**card, "calibration": cv["calibration"],
            "threshold": {**card["threshold"], "malignant": cv["threshold"], "balanced": cv["balanced_threshold"]}}
    samples = load_samples(data_root, modality)
    arrive = _as_screenshot if as_screenshot else lambda sample: load_gray(sample.path)
    labels, groups, annotated, probs = [], [], [], {setting: [] for setting in settings}
    for k in folds:
        held_out = np.load(run_dir / f"fold{k}" / "out_of_fold.npz")["held_out"]
        if limit:
            held_out = np.sort(np.random.default_rng(seed).permutation(held_out)[:limit])
        classifier = Classifier(card, fold_network(run_dir / f"fold{k}", card.get("members", 1)))
        grays = [arrive(samples[i]) for i in held_out]
        labels += [samples[i].label for i in held_out]
        groups += [samples[i].group for i in held_out]
        annotated += [clean_scan(gray).marked_pixels > 0 for gray in grays]
        for setting in settings:
            probs[setting].append(_probabilities(classifier, grays, setting, f"fold{k} screen_crop={setting}"))
    labels_array, groups_array, annotated_array = np.array(labels), np.array(groups), np.array(annotated)
    probabilities = {setting: np.concatenate(parts) for setting, parts in probs.items()}
    result = {"folds": folds, "n": len(labels), "n_annotated": int(annotated_array.sum()),
              "limit_per_fold": limit, "as_screenshot": as_screenshot, "threshold": cv["threshold"]}
    for setting in settings:
        p = probabilities[setting]
        result[f"screen_crop_{setting}"] = {
            "all": report(labels_array, p, CLASSES, cv["threshold"]),
            "annotated": report(labels_array[annotated_array], p[annotated_array], CLASSES, cv["threshold"]),
            "clean": report(labels_array[~annotated_array], p[~annotated_array], CLASSES, cv["threshold"]),
        }
        if setting != "off" and "off" in settings:  # the same images without cleaning: a paired comparison
            result[f"screen_crop_{setting}"]["paired_vs_off"] = {
                part: paired_auc_difference(labels_array[chosen], groups_array[chosen],
                                            probabilities["off"][chosen], p[chosen], CLASSES)
                for part, chosen in (("all", slice(None)), ("annotated", annotated_array))
            }
    return result


def segment(modality: str, prompt: str, folder: Path, weights_dir: Path) -> dict:
    model, card = load_carded_segmenter(weights_dir, SEGMENTER_MODELS[modality])
    segmenter = Segmenter.for_card(model, card)
    samples = _require_files(folder, [s for s in _listed(folder) if s.has_outline], masks=True)
    return {"model": {"name": card["name"], "version": card["version"]}, "prompt": prompt,
            **evaluate_segmenter(segmenter, samples, prompt)}


def saliency(modality: str, method: str, layer: str, folder: Path, weights_dir: Path) -> dict:
    """Pointing game and energy in mask of the shipped model on a folder with lesion outlines."""
    classifier = Classifier.load(weights_dir, MODALITY_MODELS[modality])
    samples = _require_files(folder, _listed(folder), masks=True)
    return {"model": {"name": classifier.name, "version": classifier.version}, "method": method,
            **({"layer": layer} if method == "gradcam" else {}),
            **localisation_metrics(Explainer.for_classifier(classifier), tqdm(samples, file=sys.stderr), method, layer)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    classify_parser = commands.add_parser("classify", help="classification metrics on a folder")
    classify_parser.add_argument("--modality", choices=MODALITIES, required=True)
    classify_parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    classify_parser.add_argument("--screen-crop", choices=("on", "off"), default="off",
                                 help="crop to the scan area and inpaint calipers and text first")
    classify_parser.add_argument("folder", type=Path)
    oof_parser = commands.add_parser("out-of-fold", help="cross-validation folds' networks on their held-out images")
    oof_parser.add_argument("--modality", choices=MODALITIES, required=True)
    oof_parser.add_argument("--run-dir", type=Path, help="default runs/<modality>")
    oof_parser.add_argument("--folds", type=int, nargs="+", default=[0])
    oof_parser.add_argument("--screen-crop", choices=(*SCREEN_MODES, "both", "all"), default="both",
                            help="both: off and on; marks: inpaint calipers and text without cropping; all: the three")
    oof_parser.add_argument("--limit", type=int, help="a random subset of this many held-out images per fold")
    oof_parser.add_argument("--as-screenshot", action="store_true",
                            help="each image arrives as a synthetic scanner screenshot, its lesion measured with calipers")
    oof_parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    oof_parser.add_argument("data_root", type=Path)
    segment_parser = commands.add_parser("segment", help="segmentation and detection metrics on a folder")
    segment_parser.add_argument("--modality", choices=MODALITIES, required=True)
    segment_parser.add_argument("--prompt", choices=PROMPTS, default="auto")
    segment_parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    segment_parser.add_argument("folder", type=Path)
    saliency_parser = commands.add_parser("saliency", help="does the saliency point at the lesion?")
    saliency_parser.add_argument("--modality", choices=MODALITIES, required=True)
    saliency_parser.add_argument("--method", choices=SALIENCY_METHODS, default="gradcam")
    saliency_parser.add_argument("--layer", choices=GRADCAM_LAYERS, default=GRADCAM_LAYERS[0], help="Grad-CAM's block")
    saliency_parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    saliency_parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "classify":
        result = classify(args.modality, args.folder, args.weights_dir, args.screen_crop == "on")
    elif args.command == "out-of-fold":
        settings = {"both": ["off", "on"], "all": list(SCREEN_MODES)}.get(args.screen_crop, [args.screen_crop])
        result = out_of_fold(args.modality, args.data_root, args.run_dir or Path("runs") / args.modality,
                             args.folds, settings, args.weights_dir, args.limit, as_screenshot=args.as_screenshot)
    elif args.command == "segment":
        result = segment(args.modality, args.prompt, args.folder, args.weights_dir)
    else:
        result = saliency(args.modality, args.method, args.layer, args.folder, args.weights_dir)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
