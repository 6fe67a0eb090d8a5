"""Self-supervised pretraining of a modality's ResNet18 on its images, labels unused (SimCLR).

    python -m ml.pretrain --modality ultrasound --sets busbra --run-dir runs/ssl-busbra \
        --weights-dir runs/ssl-busbra --epochs 30
    python -m ml.train --modality ultrasound --init runs/ssl-busbra/branet-us-ssl.pt ...

We have no ImageNet weights, but we have every image, and most of what a classifier learns first
(edges, speckle, the shape of a shadow) needs no label. Each step takes two random views of every
image of a batch (a crop, a mirror, a small rotation, scanner-like gain, contrast and speckle:
ml.augment's changes, stronger) and trains the network, through a small projection head, to pick
out each view's twin among the other 2N - 1 views (the NT-Xent loss of SimCLR, Chen et al. 2020).
The backbone it leaves (the projection head and the classifier's last layer are not kept) is a
starting point for `ml.train --init`, with a card beside it saying what it saw.

Which images it sees is the caller's choice (--sets): a benchmark that reads another data set must
leave that set out, or the network has seen the images it is judged on.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ml.augment import ROTATION_DEGREES, photometric
from ml.cards import MODALITY_MODELS, provenance
from ml.checkpoints import add_common_arguments, resume, save_checkpoint, settings_of
from ml.datasets import CLASSES, MODALITY_SETS, load_samples
from ml.preprocess import InputSpec
from ml.resnet import ARCHITECTURES
from ml.train import TrainingData

# Each view keeps between CROP_SIDE[0] and CROP_SIDE[1] of the image's side, anywhere in it.
CROP_SIDE = (0.55, 1.0)
log = logging.getLogger("ml.pretrain")


def pretrained_name(modality: str) -> str:
    """The card name of a modality's self-supervised backbone: branet-us-ssl, branet-mg-ssl."""
    return MODALITY_MODELS[modality].replace("resnet18", "ssl")


def random_views(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, S, S) images in [0, 1] -> one random view of each, (N, 1, side, side): a square
    crop of random size and place, mirrored half the time and turned a little, then given
    another scanner's gain, contrast and speckle."""
    n = images.shape[0]
    crop = CROP_SIDE[0] + (CROP_SIDE[1] - CROP_SIDE[0]) * torch.rand(n, generator=generator)
    centre = (1 - crop).unsqueeze(1) * (2 * torch.rand(n, 2, generator=generator) - 1)
    angle = (2 * torch.rand(n, generator=generator) - 1) * ROTATION_DEGREES * math.pi / 180
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * crop, torch.sin(angle) * crop
    theta = torch.stack([torch.stack([cos * flip, -sin, centre[:, 0]], dim=1),
                         torch.stack([sin * flip, cos, centre[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return photometric(views, generator)


def contrastive_loss(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2N embeddings whose rows i and i + N are two views of one image."""
    z = F.normalize(embeddings, dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own twin
    n = z.shape[0] // 2
    twins = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(similarity, twins)


class ContrastiveNetwork(nn.Module):
    """The classifier's backbone (its last layer replaced by the identity) and a projection head."""

    def __init__(self, architecture: str, classes: int, projection: int = 128) -> None:
        super().__init__()
        self.backbone = ARCHITECTURES[architecture](classes)
        features = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(features, features), nn.ReLU(inplace=True), nn.Linear(features, projection))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(batch))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's weights, named as in the classifier (no `fc.`: that layer starts anew)."""
        return {key: value.clone() for key, value in self.backbone.state_dict().items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.pretrain", description=__doc__.split("\n")[0])
    add_common_arguments(parser, epochs=30, size=144, batch_size=128, lr=1e-3)
    parser.add_argument("--sets", action="append", metavar="SET",
                        help="a data set of the modality whose images it sees (repeatable; default: all of them)")
    parser.add_argument("--view-size", type=int, default=96, help="the side of each random view in pixels")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="resnet18",
                        help="the backbone; resnet18 and resnet18_os16 share every weight's shape")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    known = MODALITY_SETS[args.modality]
    args.sets = sorted(set(args.sets or known))
    if unknown := [name for name in args.sets if name not in known]:
        parser.error(f"--sets {', '.join(unknown)}: {args.modality} has {', '.join(known)}")
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2: each view's twin is found among the others")
    return args


def pretrain(args: argparse.Namespace, data: TrainingData, run_dir: Path) -> ContrastiveNetwork:
    """Train the contrastive network on every image of `data`, resuming from run_dir/checkpoint.pt."""
    torch.manual_seed(args.seed)
    network = ContrastiveNetwork(args.architecture, len(CLASSES))
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(data.samples) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr,
                                                    total_steps=args.epochs * steps_per_epoch, pct_start=0.1)
    generator = torch.Generator().manual_seed(args.seed)
    settings = settings_of(args)
    checkpoint_path = run_dir / "checkpoint.pt"
    stateful = {"model": network, "optimizer": optimizer, "scheduler": scheduler}
    start_epoch, raw = resume(checkpoint_path, settings, stateful)
    if start_epoch:
        generator.set_state(raw["generator"])
        log.info("%s: resuming after epoch %d", run_dir, start_epoch)
    spec = InputSpec(size=args.view_size)
    for epoch in range(start_epoch, args.epochs):
        network.train()
        order = torch.randperm(len(data.samples), generator=generator)
        total = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"pretrain epoch {epoch + 1}/{args.epochs}")
        for step in bar:  # whole batches only: the loss's difficulty depends on the batch's size
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            images = data.pixels[idx].float().unsqueeze(1) / 255.0
            views = torch.cat([random_views(images, args.view_size, generator) for _ in range(2)])
            loss = contrastive_loss(network((views - spec.mean) / spec.std), args.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        log.info("%s epoch %d contrastive loss %.4f", run_dir, epoch + 1, total / steps_per_epoch)
        save_checkpoint(checkpoint_path, settings, epoch + 1, stateful, {"generator": generator.get_state()})
    return network.eval()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = args.run_dir or Path("runs") / f"pretrain-{args.modality}"
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")])
    samples = [s for s in load_samples(args.data_root, args.modality) if s.dataset in args.sets]
    data = TrainingData(samples, args.size, run_dir / f"data_{args.size}.npz")
    network = pretrain(args, data, run_dir)

    name = pretrained_name(args.modality)
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = args.weights_dir / f"{name}.pt"
    torch.save(network.backbone_state(), weights_path)
    card = {
        "name": name, "version": args.version, "modality": args.modality,
        "task": "self-supervised", "architecture": args.architecture,
        "note": "a starting point for ml.train --init, not a classifier: it has no last layer and no classes",
        "images": {dataset: sum(s.dataset == dataset for s in samples) for dataset in args.sets},
        "training": {"command": shlex.join(["python", "-m", "ml.pretrain", *(sys.argv[1:] if argv is None else argv)]),
                     "method": "SimCLR (NT-Xent), labels unused", "epochs": args.epochs,
                     "view_size": args.view_size, "stored_size": args.size, "batch_size": args.batch_size,
                     "lr": args.lr, "temperature": args.temperature, "seed": args.seed},
        **provenance(weights_path, args.sets),
    }
    (args.weights_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s and its card (%d images from %s)", weights_path, len(samples), ", ".join(args.sets))


if __name__ == "__main__":
    main()
