"""Which saliency method points at the lesion? Each fold's network on its held-out lesion images.

    PYTHONPATH=. python benchmarks/saliency_methods.py [--run-dir RUN_DIR] [--folds 0 1 2 3 4] [--methods ...]
        [--images N] [--members N]

Needs a cross-validation run in RUN_DIR (its folds' checkpoints; default runs/ultrasound-os16, the
shipped ultrasound model's command in weights/branet-us-resnet18.json run with that --run-dir). Prints, per fold, the
pointing game and energy in mask (see ml.saliency.localisation_metrics) per data set, of Grad-CAM
on each layer choice and of integrated gradients: honest figures, since each fold's network never saw
these images. The same images' lesion masks themselves, averaged over a grid as coarse as
the network's layer4 (and layer3) map, give `resolution_bound`: the energy in mask that a perfect map of that
resolution would reach once upsampled.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ml.datasets import CLASSES, grouped_folds, lesion_mask, load_gray, load_samples
from ml.preprocess import InputSpec, letterbox, letterbox_region
from ml.resnet import member_networks
from ml.saliency import GRADCAM_LAYERS, Explainer, localisation_metrics
from ml.train import fold_network

SIZE = 144
METHODS = {**{f"gradcam/{layer}": ("gradcam", layer) for layer in GRADCAM_LAYERS},
           "integrated_gradients/16 steps": ("integrated_gradients", GRADCAM_LAYERS[0])}


def block_sides(network: torch.nn.Module) -> dict[str, int]:
    """The side of layer4's and layer3's maps at SIZE (5 and 9 for resnet18, 9 and 9 for resnet18_os16)."""
    sides = {}
    first = member_networks(network)[0]
    hooks = [getattr(first, name).register_forward_hook(
        lambda module, inputs, output, name=name: sides.update({name: output.shape[-1]}))
        for name in ("layer4", "layer3")]
    with torch.no_grad():
        first(torch.zeros(1, 1, SIZE, SIZE))
    for hook in hooks:
        hook.remove()
    return sides


def resolution_bound(samples, cells: int) -> float:
    """Mean energy in mask of each lesion mask pooled to cells x cells over the letterbox and
    upsampled back, as a Grad-CAM map of that resolution is."""
    energies = []
    for sample in samples:
        if sample.label not in ("benign", "malignant") or not (sample.masks or sample.circles):
            continue
        gray = load_gray(sample.path)
        mask = lesion_mask(sample, gray.shape) > 127
        boxed = torch.from_numpy(letterbox(mask.astype(np.uint8) * 255, SIZE)).float()[None, None] / 255
        coarse = F.interpolate(F.adaptive_avg_pool2d(boxed, cells), size=(SIZE, SIZE), mode="bilinear",
                               align_corners=False)[0, 0]
        top, left, h, w = letterbox_region(*gray.shape, SIZE)
        full = F.interpolate(coarse[top : top + h, left : left + w][None, None], size=gray.shape, mode="bilinear",
                             align_corners=False)[0, 0].numpy().clip(0)
        energies.append(float(full[mask].sum() / full.sum()))
    return round(float(np.mean(energies)), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ultrasound-os16"))
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--members", type=int, default=1, help="each fold's first N ensemble members together")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--images", type=int, help="a seeded random choice of this many held-out images per fold "
                        "(default: all of them; integrated gradients take about 0.5 s an image)")
    args = parser.parse_args()
    samples = load_samples(Path("../shared/data"), "ultrasound")
    folds = grouped_folds(samples, 5, 0)
    for fold in args.folds:
        held_out = folds[fold][1]
        chosen = [samples[i] for i in np.random.default_rng(0).permutation(held_out)[: args.images]]
        network = fold_network(args.run_dir / f"fold{fold}", args.members)
        explainer = Explainer(network, InputSpec(size=SIZE), CLASSES)
        for name in args.methods:
            method, layer = METHODS[name]
            for dataset in sorted({s.dataset for s in chosen}):
                result = localisation_metrics(explainer, [s for s in chosen if s.dataset == dataset], method, layer)
                print(json.dumps({"fold": fold, "method": name, "dataset": dataset, **result}))
        bound = {layer: resolution_bound(chosen, cells) for layer, cells in block_sides(network).items()}
        print(json.dumps({"fold": fold, "resolution_bound": bound}))


if __name__ == "__main__":
    main()
