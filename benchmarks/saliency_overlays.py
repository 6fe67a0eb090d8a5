"""A picture of the saliency maps to look at: held-out lesion images of one cross-validation fold,
each row one image, one column per Grad-CAM layer choice, the lesion's outline in green.

    PYTHONPATH=. python benchmarks/saliency_overlays.py [--run-dir runs/ultrasound-os16] [--fold 3]
        [--members 1] [--per-dataset 3] [--layers layer4 multiscale] [--out docs/saliency_overlays.jpg]

The images are the fold's first held-out lesion images of each data set, in labels.csv order
(no choosing); each map explains the image's true class, as `ml.evaluate saliency` scores it.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ml import overlays
from ml.datasets import CLASSES, grouped_folds, lesion_mask, load_gray, load_samples
from ml.preprocess import InputSpec
from ml.saliency import GRADCAM_LAYERS, Explainer
from ml.train import fold_network

TILE_WIDTH = 320
OUTLINE = (0, 255, 0)


def tile(gray: np.ndarray, heat: np.ndarray, lesion: np.ndarray) -> Image.Image:
    rgb = overlays.heat_overlay(gray, heat).copy()
    rgb[lesion ^ ndimage.binary_erosion(lesion, iterations=2)] = OUTLINE
    return Image.fromarray(rgb).resize((TILE_WIDTH, round(TILE_WIDTH * gray.shape[0] / gray.shape[1])))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ultrasound-os16"))
    parser.add_argument("--fold", type=int, default=3)
    parser.add_argument("--members", type=int, default=1, help="the fold's first N ensemble members together")
    parser.add_argument("--per-dataset", type=int, default=3)
    parser.add_argument("--layers", nargs="+", choices=GRADCAM_LAYERS, default=["layer4", "multiscale"])
    parser.add_argument("--out", type=Path, default=Path("docs/saliency_overlays.jpg"))
    args = parser.parse_args()
    samples = load_samples(Path("../shared/data"), "ultrasound")
    held_out = [samples[i] for i in grouped_folds(samples, 5, 0)[args.fold][1]]
    chosen = []
    for dataset in sorted({s.dataset for s in held_out}):
        lesions = [s for s in held_out if s.dataset == dataset and s.label in ("benign", "malignant") and s.masks]
        chosen += lesions[: args.per_dataset]
    explainer = Explainer(fold_network(args.run_dir / f"fold{args.fold}", args.members), InputSpec(size=144), CLASSES)
    rows = []
    for sample in chosen:
        gray = load_gray(sample.path)
        lesion = lesion_mask(sample, gray.shape) > 127
        rows.append([tile(gray, explainer.explain(gray, sample.label, "gradcam", layer).full, lesion)
                     for layer in args.layers])
    picture = Image.new("RGB", (TILE_WIDTH * len(args.layers), sum(row[0].height for row in rows)))
    top = 0
    for row in rows:
        for column, image in enumerate(row):
            picture.paste(image, (column * TILE_WIDTH, top))
        top += row[0].height
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out, quality=85)
    print(f"{args.out}: {len(rows)} images ({', '.join(s.path.name for s in chosen)}), columns {args.layers}")


if __name__ == "__main__":
    main()
