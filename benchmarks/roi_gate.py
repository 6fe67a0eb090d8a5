"""The automatic mode's ROI gate (smallest area, smallest mean lesion probability) swept on the held-out
fold of a segmenter's split: the images it was not trained on. Each image's no-prompt lesion
probability is computed once; every gate is then scored on the same maps.

    PYTHONPATH=. python benchmarks/roi_gate.py runs/mammography-segmenter-s0/weights --modality mammography --seed 0

The folder holds the segmenter's weights and card; `--seed` names the split it was trained with (its
card's command), whose fold 0 is held out. Prints one JSON line per gate.
"""
import argparse
import json
from pathlib import Path

from scipy import ndimage
from tqdm import tqdm

from ml.cards import MODALITIES, SEGMENTER_MODELS
from ml.datasets import lesion_mask, load_gray, load_samples
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import held_out_samples
from ml.segmenter.evaluate import ImageOutcome, summary
from ml.segmenter.roi import RoiSettings, Segmenter, rois_from_probability


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights_dir", type=Path)
    parser.add_argument("--modality", choices=MODALITIES, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--min-areas", default="0.0002,0.0005,0.001,0.002")
    parser.add_argument("--confidences", default="0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--lesion-thresholds", default="0.5",
                        help="lesion probabilities above which a pixel belongs to an ROI")
    args = parser.parse_args()

    networks, card = load_carded_segmenter(args.weights_dir, SEGMENTER_MODELS[args.modality])
    segmenter = Segmenter.for_card(networks, card)
    samples = load_samples(args.data_root, args.modality)
    images = []
    for sample in tqdm(held_out_samples(samples, args.seed, [card]), desc="lesion probability"):
        gray = load_gray(sample.path)
        lesions, _ = ndimage.label(lesion_mask(sample, gray.shape) > 127)
        images.append((sample.dataset, segmenter.probability(gray), lesions))
    gates = [RoiSettings(min_area_fraction=min_area, confidence_threshold=confidence, lesion_threshold=threshold)
             for min_area in map(float, args.min_areas.split(","))
             for confidence in map(float, args.confidences.split(","))
             for threshold in map(float, args.lesion_thresholds.split(","))]
    for gate in gates:
        outcomes = {}
        for dataset, probability, lesions in images:
            predicted = [roi.mask for roi in rois_from_probability(probability, gate)]
            outcomes.setdefault(dataset, []).append(ImageOutcome.of(predicted, lesions))
        for dataset, scored in sorted(outcomes.items()):
            result = {key: value for key, value in summary(scored, []).items() if key != "ms_per_image"}
            print(json.dumps({"dataset": dataset, "min_area_fraction": gate.min_area_fraction,
                              "confidence_threshold": gate.confidence_threshold,
                              "lesion_threshold": gate.lesion_threshold, **result}))


if __name__ == "__main__":
    main()
