"""Train a modality's ResNet18 from scratch and write its weights and model card.

    python -m ml.train --modality ultrasound
    python -m ml.train --modality mammography --epochs 40 --size 224

A patient-grouped, label-stratified split holds one fold out for validation. Progress is shown
with tqdm; a checkpoint is written after every epoch to --run-dir and a rerun of the same command
resumes from it. The final epoch's weights are shipped (no epoch is picked on the validation fold),
the malignancy threshold is set for screening on the validation fold, and the card records it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from ml.augment import augment
from ml.cards import MODALITIES, MODALITY_MODELS, sha256_of, write_card
from ml.datasets import MODALITY_SETS, Sample, load_gray, read_folder
from ml.metrics import report, screening_threshold
from ml.preprocess import InputSpec, letterbox, normalise
from ml.resnet import ARCHITECTURES

CLASSES = ["normal", "benign", "malignant"]
SCREENING_SENSITIVITY = 0.95
LICENCES = {
    "busbra": "BUS-BRA dataset licence (permissive, MIT-style); cite Gomez-Flores et al., "
    "Medical Physics 2023",
    "busi": "CC0 1.0; cite Al-Dhabyani et al., Data in Brief 28 (2020) 104863",
    "mias": "MIAS licence: research use only, no rent, lease or sale; cite Suckling et al., "
    "The Mammographic Image Analysis Society digital mammogram database, 1994",
}
INTENDED_USE = (
    "Decision support for clinicians reading breast images, not a diagnosis. Every result must be "
    "reviewed by a qualified clinician."
)
log = logging.getLogger("ml.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.split("\n")[0])
    parser.add_argument("--modality", choices=MODALITIES, required=True)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"))
    parser.add_argument("--run-dir", type=Path, help="checkpoints and log (default runs/<modality>)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--size", type=int, default=160, help="input side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--val-fold", type=int, default=0, help="which of 5 grouped folds validates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", default=dt.date.today().strftime("%Y.%m.%d"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser.parse_args(argv)


def load_samples(args: argparse.Namespace) -> list[Sample]:
    samples = []
    for name in MODALITY_SETS[args.modality]:
        samples += [s for s in read_folder(args.data_root / name) if not s.excluded]
    return [s for s in samples if s.label in CLASSES]


def grouped_split(samples: list[Sample], fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices; a group never appears on both sides."""
    splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    labels = [f"{s.dataset}:{s.label}" for s in samples]
    groups = [s.group for s in samples]
    return list(splitter.split(np.zeros(len(samples)), labels, groups))[fold]


def cached_pixels(samples: list[Sample], size: int, cache: Path) -> torch.Tensor:
    """All images letterboxed to size x size as one uint8 tensor, cached in the run folder."""
    if cache.exists():
        pixels = np.load(cache)
        if pixels.shape == (len(samples), size, size):
            return torch.from_numpy(pixels)
    pixels = np.stack([letterbox(load_gray(s.path), size) for s in tqdm(samples, desc="load")])
    np.save(cache, pixels)
    return torch.from_numpy(pixels)


def predict(network: torch.nn.Module, pixels: torch.Tensor, spec: InputSpec) -> np.ndarray:
    network.eval()
    with torch.inference_mode():
        chunks = [
            torch.softmax(network(normalise(pixels[i : i + 64], spec)), dim=1)
            for i in range(0, len(pixels), 64)
        ]
    return torch.cat(chunks).double().numpy()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_dir = args.run_dir or Path("runs") / args.modality
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")],
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = InputSpec(size=args.size)

    samples = load_samples(args)
    train_idx, val_idx = grouped_split(samples, args.val_fold, args.seed)
    pixels = cached_pixels(samples, args.size, run_dir / f"pixels_{args.size}.npy")
    targets = torch.tensor([CLASSES.index(s.label) for s in samples])
    log.info("run %s: %d train, %d validation images", vars(args), len(train_idx), len(val_idx))

    network = ARCHITECTURES["resnet18"](num_classes=len(CLASSES))
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (len(train_idx) + args.batch_size - 1) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    counts = torch.bincount(targets[train_idx], minlength=len(CLASSES)).clamp(min=1).float()
    class_weights = (counts.sum() / counts) / (counts.sum() / counts).mean()
    generator = torch.Generator().manual_seed(args.seed)

    checkpoint_path = run_dir / "checkpoint.pt"
    start_epoch = 0
    if checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        if checkpoint["args"] == {k: str(v) for k, v in vars(args).items()}:
            network.load_state_dict(checkpoint["network"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            generator.set_state(checkpoint["generator"])
            start_epoch = checkpoint["epoch"]
            log.info("resuming after epoch %d", start_epoch)
        else:
            log.info("checkpoint in %s is from other settings; starting afresh", run_dir)

    train_tensor = torch.as_tensor(train_idx)
    for epoch in range(start_epoch, args.epochs):
        network.train()
        order = train_tensor[torch.randperm(len(train_tensor), generator=generator)]
        total = 0.0
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}")
        for start in bar:
            batch_idx = order[start : start + args.batch_size]
            images = augment(pixels[batch_idx].float().unsqueeze(1) / 255.0, generator)
            logits = network((images - spec.mean) / spec.std)
            loss = F.cross_entropy(logits, targets[batch_idx], weight=class_weights, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch_idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        val_probs = predict(network, pixels[val_idx], spec)
        val_labels = [samples[i].label for i in val_idx]
        epoch_report = report(val_labels, val_probs, CLASSES, threshold=0.5)
        log.info(
            "epoch %d loss %.4f val auc_malignant %s auc_lesion %s",
            epoch + 1, total / len(order), epoch_report["auc_malignant"], epoch_report["auc_lesion"],
        )
        torch.save(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "epoch": epoch + 1,
            },
            checkpoint_path,
        )

    write_model(args, spec, network, samples, pixels, val_idx, train_idx)


def write_model(args, spec, network, samples, pixels, val_idx, train_idx) -> None:
    """Ship the final weights in half precision beside a card carrying validation metrics."""
    val_probs = predict(network, pixels[val_idx], spec)
    val_labels = np.array([samples[i].label for i in val_idx])
    threshold = screening_threshold(
        val_labels == "malignant", val_probs[:, CLASSES.index("malignant")], SCREENING_SENSITIVITY
    )
    datasets = sorted({s.dataset for s in samples})
    per_set = {}
    for name in datasets:
        mask = np.array([samples[i].dataset == name for i in val_idx])
        per_set[name] = report(val_labels[mask], val_probs[mask], CLASSES, threshold)
    name = MODALITY_MODELS[args.modality]
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = args.weights_dir / f"{name}.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in network.state_dict().items()},
               weights_path)
    card = {
        "name": name,
        "version": args.version,
        "modality": args.modality,
        "architecture": "resnet18",
        "classes": CLASSES,
        "input": spec.to_dict(),
        "threshold": {
            "malignant": threshold,
            "chosen_for": f"sensitivity >= {SCREENING_SENSITIVITY} for malignancy on the validation fold",
        },
        "metrics": {
            "split": "validation fold of a 5-fold split grouped by patient/near-duplicate group, "
            "stratified by data set and label; the threshold was set on this fold",
            "pooled": report(val_labels, val_probs, CLASSES, threshold),
            "per_dataset": per_set,
        },
        "training": {
            "from_scratch": True,
            "command": f"python -m ml.train --modality {args.modality} --epochs {args.epochs} "
            f"--size {args.size} --seed {args.seed}",
            "epochs": args.epochs,
            "seed": args.seed,
            "train_images": int(len(train_idx)),
            "validation_images": int(len(val_idx)),
            "excluded": "BUSI images in groups with conflicting labels (label_conflict=1)",
        },
        "data": {name: LICENCES[name] for name in datasets},
        "intended_use": INTENDED_USE,
        "weights_file": weights_path.name,
        "sha256": sha256_of(weights_path),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = write_card(args.weights_dir, card)
    log.info("wrote %s and %s: %s", weights_path, path, json.dumps(card["metrics"]["pooled"]))


if __name__ == "__main__":
    main()
