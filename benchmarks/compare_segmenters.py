"""Two ultrasound segmenters on the same fold-0 images (the images neither was trained on), image by
image: mean Dice over lesion images per prompt kind and data set, each model's, and the difference
B - A with a 95% interval from a paired bootstrap over patient groups.

    PYTHONPATH=. python benchmarks/compare_segmenters.py weights/split0 runs/ultrasound-segmenter-wide/weights

Each argument is a folder holding `branet-us-sam-small.pt` and its card. The automatic mode runs
each model through the served ROI gate unless `--gate-a`/`--gate-b` give it another one
(`CONFIDENCE/LESION`, e.g. `0.65/0.4`: the smallest mean lesion probability of an ROI, and the
lesion probability above which a pixel belongs to one), as `benchmarks/roi_gate.py` sweeps them.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ml.cards import SEGMENTER_MODELS
from ml.datasets import lesion_mask, load_gray, load_samples
from ml.metrics import paired_mean_difference
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import held_out_samples
from ml.segmenter.evaluate import DEFAULT_SETTINGS, PROMPTS, _dice, predicted_masks
from ml.segmenter.roi import RoiSettings, Segmenter


def gate(text: str) -> RoiSettings:
    """`CONFIDENCE/LESION` -> the served gate with those two thresholds."""
    try:
        confidence, lesion = (float(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CONFIDENCE/LESION, e.g. 0.65/0.4, not {text!r}") from None
    if not (0 < confidence < 1 and 0 < lesion < 1):
        raise argparse.ArgumentTypeError(f"both thresholds must lie between 0 and 1, not {text!r}")
    return RoiSettings(confidence_threshold=confidence, lesion_threshold=lesion)


def load(weights_dir: Path) -> tuple[Segmenter, dict]:
    networks, card = load_carded_segmenter(weights_dir, SEGMENTER_MODELS["ultrasound"])
    return Segmenter.for_card(networks, card), card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights_a", type=Path)
    parser.add_argument("weights_b", type=Path)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seed", type=int, default=0,
                        help="the split's seed: both models trained with `ml.segmenter.train --seed` this value")
    parser.add_argument("--gate-a", type=gate, default=DEFAULT_SETTINGS, metavar="CONFIDENCE/LESION")
    parser.add_argument("--gate-b", type=gate, default=DEFAULT_SETTINGS, metavar="CONFIDENCE/LESION")
    args = parser.parse_args()
    loaded = {"a": load(args.weights_a), "b": load(args.weights_b)}
    segmenters = {name: segmenter for name, (segmenter, _) in loaded.items()}
    gates = {"a": args.gate_a, "b": args.gate_b}
    samples = load_samples(args.data_root, "ultrasound")
    lesion_images = []
    dice = {(name, prompt): [] for name in segmenters for prompt in PROMPTS}
    for sample in tqdm(held_out_samples(samples, args.seed, [card for _, card in loaded.values()]), desc="fold 0"):
        gray = load_gray(sample.path)
        truth = lesion_mask(sample, gray.shape) > 127
        lesions, count = ndimage.label(truth)
        if not count:  # a normal image's mask is empty; Dice is over lesion images
            continue
        lesion_images.append(sample)
        for name, segmenter in segmenters.items():
            for prompt in PROMPTS:
                predicted = predicted_masks(segmenter, gray, lesions, prompt, gates[name])
                union = np.logical_or.reduce(predicted) if predicted else np.zeros_like(truth)
                dice[name, prompt].append(_dice(union, truth))
    groups = np.array([f"{s.dataset}/{s.group}" for s in lesion_images])
    datasets = np.array([s.dataset for s in lesion_images])
    result: dict = {"a": str(args.weights_a), "b": str(args.weights_b),
                    "gates": {name: {"confidence": g.confidence_threshold, "lesion": g.lesion_threshold}
                              for name, g in gates.items()}}
    for subset in ("pooled", *sorted(set(datasets))):
        chosen = np.ones(len(datasets), bool) if subset == "pooled" else datasets == subset
        result[subset] = {
            prompt: paired_mean_difference(groups[chosen], np.array(dice["a", prompt])[chosen],
                                           np.array(dice["b", prompt])[chosen])
            for prompt in PROMPTS
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
