"""A segmenter ensemble joined by a network whose no-prompt answer comes from a mask token of its
own (`ml.segmenter.train --automatic-mask-token 1`), measured on their split's held-out fold.

    PYTHONPATH=. python benchmarks/mixed_ensemble.py weights/split0 runs/us-segmenter-tok1-s0/weights --seed 0
    PYTHONPATH=. python benchmarks/mixed_ensemble.py runs/us-ens2-s1/weights runs/us-segmenter-tok1-s1/weights --seed 1

`ml.segmenter.ensemble` joins only networks that answer from the same token, so the mixture is
taken here on the answers: each way of weighting the two segmenters' lesion probabilities is one
variant, for the automatic mode and with the ground-truth box. Prints one JSON line per variant,
prompt and data set, with its Dice minus the first segmenter's alone, image by image
(`dice_minus_first`, 95% interval over resampled groups).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from ml.cards import SEGMENTER_MODELS
from ml.datasets import lesion_mask, load_gray, load_samples
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import held_out_samples
from ml.segmenter.evaluate import ImageOutcome, dice_difference, predicted_masks, summary
from ml.segmenter.roi import RoiSettings, Roi, Segmenter, rois_from_probability


class WeightedMean:
    """Two segmenters' lesion probabilities averaged with one pair of weights without a prompt
    and another with one; `predicted_masks` asks it as it asks a `Segmenter`."""

    def __init__(self, segmenters: tuple[Segmenter, Segmenter], automatic: tuple[float, float],
                 prompted: tuple[float, float]) -> None:
        self.segmenters, self.automatic, self.prompted = segmenters, automatic, prompted

    def probability(self, gray: np.ndarray, box: np.ndarray | None = None,
                    points: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
        weights = self.automatic if box is None and points is None else self.prompted
        answers = [weight * segmenter.probability(gray, box, points, labels)
                   for segmenter, weight in zip(self.segmenters, weights) if weight]
        return sum(answers) / sum(weights)

    def find_rois(self, gray: np.ndarray, settings: RoiSettings = RoiSettings()) -> list[Roi]:
        return rois_from_probability(self.probability(gray), settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path, help="the ensemble (or network) as served")
    parser.add_argument("second", type=Path, help="a network trained with --automatic-mask-token 1 on the same split")
    parser.add_argument("--seed", type=int, default=0, help="the split's seed, shared by both")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    loaded = [load_carded_segmenter(d, SEGMENTER_MODELS["ultrasound"]) for d in (args.first, args.second)]
    first, second = (Segmenter.for_card(networks, card) for networks, card in loaded)
    networks = len(first.members)
    both = (first, second)
    variants = {  # name: (weights without a prompt, weights with one, prompts measured)
        "first_alone": (WeightedMean(both, (1, 0), (1, 0)), ("auto", "box")),
        "second_alone": (WeightedMean(both, (0, 1), (0, 1)), ("auto", "box")),
        "every_network_equal": (WeightedMean(both, (networks, 1), (networks, 1)), ("auto", "box")),
        "halves_without_prompt_first_with_one": (WeightedMean(both, (1, 1), (1, 0)), ("auto",)),
    }
    outcomes: dict[tuple[str, str, str], list[ImageOutcome]] = {}
    groups: dict[str, list[str]] = {}
    for sample in tqdm(held_out_samples(load_samples(args.data_root, "ultrasound"), args.seed, [card for _, card in loaded])):
        gray = load_gray(sample.path)
        lesions, _ = ndimage.label(lesion_mask(sample, gray.shape) > 127)
        groups.setdefault(sample.dataset, []).append(sample.group)
        for name, (mixture, prompts) in variants.items():
            for prompt in prompts:
                outcomes.setdefault((name, prompt, sample.dataset), []).append(
                    ImageOutcome.of(predicted_masks(mixture, gray, lesions, prompt), lesions))
    for (name, prompt, dataset), results in outcomes.items():
        print(json.dumps({"variant": name, "prompt": prompt, "dataset": dataset, "seed": args.seed,
                          **summary(results, []),
                          "dice_minus_first": dice_difference(outcomes["first_alone", prompt, dataset], results,
                                                              groups[dataset])}))


if __name__ == "__main__":
    main()
