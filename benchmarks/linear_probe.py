"""What a self-supervised backbone has learnt without labels: a linear probe across hospitals.

    PYTHONPATH=. python benchmarks/linear_probe.py --train-set busbra runs/ssl-busbra/branet-us-ssl.pt
    PYTHONPATH=. python benchmarks/linear_probe.py --train-set busbra --random-start

The backbone is frozen; its pooled features of every ultrasound image (letterboxed to --size) feed
a logistic regression (scikit-learn, standardised features) fitted on --train-set's lesion images,
malignant vs benign, and read on the other set's lesion images. Prints one JSON object: the AUC
there with its 95% interval from 1000 group-bootstrap resamples. A backbone's random start
(--random-start, seeded) is the floor: what a probe finds in features nobody trained.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ml.datasets import CLASSES, MODALITY_SETS, load_samples
from ml.decision import MALIGNANT, NORMAL
from ml.metrics import bootstrap_intervals
from ml.preprocess import InputSpec, normalise
from ml.resnet import ARCHITECTURES
from ml.train import TrainingData


def frozen_features(backbone: nn.Module, pixels: torch.Tensor, spec: InputSpec) -> np.ndarray:
    """(N, S, S) uint8 images -> (N, 512) pooled features of the backbone's last block."""
    backbone.eval()
    with torch.inference_mode():
        return torch.cat([backbone(normalise(pixels[i : i + 64], spec)) for i in range(0, len(pixels), 64)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", type=Path, nargs="?", help="a backbone written by ml.pretrain")
    parser.add_argument("--random-start", action="store_true", help="probe a backbone's random start instead")
    parser.add_argument("--train-set", choices=MODALITY_SETS["ultrasound"], required=True)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="resnet18")
    parser.add_argument("--size", type=int, default=144)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("runs/linear-probe"), help="where letterboxed images are kept")
    args = parser.parse_args()
    if (args.weights is None) == (not args.random_start):
        parser.error("give a backbone's weights or --random-start, one of them")

    torch.manual_seed(args.seed)
    backbone = ARCHITECTURES[args.architecture](len(CLASSES))
    backbone.fc = nn.Identity()
    if args.weights is not None:
        backbone.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    args.cache.mkdir(parents=True, exist_ok=True)
    samples = load_samples(args.data_root, "ultrasound")
    data = TrainingData(samples, args.size, args.cache)
    features = frozen_features(backbone, data.pixels, InputSpec(size=args.size))

    labels, groups = data.labels, data.groups
    lesion = labels != NORMAL
    from_train_set = np.array([s.dataset == args.train_set for s in samples])
    fit, read = lesion & from_train_set, lesion & ~from_train_set
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(features[fit], labels[fit] == MALIGNANT)
    p_malignant = probe.predict_proba(features[read])[:, 1]
    print(json.dumps({
        "backbone": str(args.weights) if args.weights else f"random start, seed {args.seed}",
        "fitted_on": args.train_set, "fitted_images": int(fit.sum()), "read_images": int(read.sum()),
        "auc_malignant_vs_benign": round(float(roc_auc_score(labels[read] == MALIGNANT, p_malignant)), 4),
        "ci95": bootstrap_intervals(labels[read], p_malignant, groups[read], threshold=0.5)["auc_malignant"],
    }, indent=2))


if __name__ == "__main__":
    main()
