"""Which saliency method points at the lesion? Fold 0's network on 100 of its held-out images.

    PYTHONPATH=. python benchmarks/saliency_methods.py [RUN_DIR]

Needs a cross-validation run of `python -m ml.train --modality ultrasound --folds 5 --epochs 14
--size 144` in RUN_DIR (default runs/ultrasound; fold 0's checkpoint). Prints the pointing game and energy in mask
(see ml.saliency.localisation_metrics) for Grad-CAM on layer4 and layer3 and for integrated
gradients: honest figures, since fold 0's network never saw these images.
"""
import json
import sys
from pathlib import Path

import numpy as np

from ml.datasets import CLASSES, grouped_folds, load_samples
from ml.preprocess import InputSpec
from ml.saliency import Explainer, localisation_metrics
from ml.train import fold_network


class LayerExplainer(Explainer):
    """Grad-CAM on a chosen block."""

    def __init__(self, network, spec, classes, layer: str) -> None:
        super().__init__(network, spec, classes)
        self.layer = layer

    def explain(self, gray, target, method="gradcam", layer="layer4", steps=16):
        return super().explain(gray, target, method, self.layer, steps)


def main() -> None:
    samples = load_samples(Path("../shared/data"), "ultrasound")
    _, held_out = grouped_folds(samples, 5, 0)[0]
    chosen = [samples[i] for i in np.random.default_rng(0).permutation(held_out)[:100]]
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/ultrasound")
    network, spec = fold_network(run_dir / "fold0"), InputSpec(size=144)
    for layer in ("layer4", "layer3"):
        result = localisation_metrics(LayerExplainer(network, spec, CLASSES, layer), chosen, "gradcam")
        print(json.dumps({"method": f"gradcam/{layer}", **result}))
    result = localisation_metrics(Explainer(network, spec, CLASSES), chosen, "integrated_gradients")
    print(json.dumps({"method": "integrated_gradients/16 steps", **result}))


if __name__ == "__main__":
    main()
