"""Train a modality's ResNet18 from scratch: grouped cross-validation, then the shipped model.

    python -m ml.train --modality ultrasound
    python -m ml.train --modality mammography --size 224 --epochs 30 --batch-size 16

1. Patient-grouped, label-stratified K-fold cross-validation (a group/patient never straddles
   folds): one network per fold, its predictions on the held-out fold kept (out-of-fold).
2. Temperature scaling with a bias per class (ml.calibration) fitted on the out-of-fold logits;
   the malignancy threshold chosen on the calibrated out-of-fold probabilities for screening
   (sensitivity >= 0.95).
3. The shipped network: the same recipe on all images; its card carries the cross-validated
   metrics with group-bootstrap 95% intervals, the calibration and the threshold.

With --members N, each step trains N networks from different random starts (seed + i) on the
same folds, and the ensemble's mean logits stand for one network's throughout.

The lesion outlines supervise two more things during training (ml.multitask): a lesion-localisation
head (dropped afterwards), and the evidence-on-lesion loss, which asks the true class's evidence
map on the last block (what Grad-CAM shows) to lie on the lesion. On fold 0 it raised the held-out
AUC (malignant vs rest) from 0.864 to 0.894 and Grad-CAM's pointing game from 0.18 to 0.86.
Progress bars throughout; a checkpoint after every epoch in --run-dir, so rerunning the same
command resumes where it stopped. The log of the run is --run-dir/train.log.

Fine-tuning a shipped model on exported feedback (`python -m ml.feedback export DIR`) plus the
original data, into a new model version beside the old one (which is never overwritten):

    python -m ml.train --modality ultrasound --fine-tune weights/branet-us-resnet18.pt --extra DIR \
        --epochs 3 --replay 600

starts from the parent's weights (its card is found beside them by `weights_file`, and its sha256
checked), trains at the parent's input size with a tenth of the learning rate on the --extra rows
of the modality (repeated --extra-repeat times per epoch) and --replay original images (0: all),
holds out one patient-grouped, label-stratified fold of 1/--folds of the original images (every
feedback image trains: there are few, and they are the point) to refit the calibration and both
thresholds and to check that the new version still works on the reference data, and writes `<family>-ft-<version>.pt` and its card (`version`, `parent`, `fine_tuning` with the
feedback data set's size). With --folds 1 nothing is held out, and the card keeps the parent's
calibration and thresholds and says that the new version was not validated.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ml.augment import augment
from ml.calibration import expected_calibration_error, fit_calibrator, softmax
from ml.cards import MODALITY_MODELS, card_for_weights, provenance, verified_weights_path, write_card
from ml.checkpoints import add_common_arguments, resume, save_checkpoint, settings_of
from ml.crops import lesion_centred_crops
from ml.datasets import CLASSES, Sample, grouped_folds, lesion_mask, load_gray, load_samples, read_folder
from ml.inference import tta_logits
from ml.metrics import SCREENING_SENSITIVITY, balanced_threshold, bootstrap_intervals, report, screening_threshold
from ml.multitask import ClassifierWithLocalisation, evidence_on_lesion_loss
from ml.preprocess import InputSpec, letterbox, normalise
from ml.resnet import ARCHITECTURES, Ensemble, member_states
from ml.roi_classification import fit_roi_classification, lesion_crop_logits
from ml.saliency import GRADCAM_LAYERS, Explainer, localisation_metrics
from ml.screen import clean_scan

SCRATCH_DEFAULTS = {"epochs": 20, "size": 160, "lr": 2e-3, "crop": 0}
FINE_TUNE_EPOCHS = 3
FINE_TUNE_LR_FACTOR = 0.1  # of the parent's learning rate
FEEDBACK_DATA = ("clinicians' feedback exported from this service (python -m ml.feedback export): the "
                 "deployment's own data, under its data-protection terms")
log = logging.getLogger("ml.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.split("\n")[0])
    add_common_arguments(parser, epochs=20, size=160, batch_size=32, lr=2e-3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="resnet18",
                        help="resnet18_os16: layer4 at layer3's resolution (finer saliency); fine-tuning keeps the parent's")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--localisation-weight", type=float, default=0.5,
                        help="weight of the lesion-localisation loss (0 turns the head off)")
    parser.add_argument("--evidence-weight", type=float, default=0.5,
                        help="weight of the loss that puts the true class's evidence map (Grad-CAM on layer4) "
                        "on the outlined lesion (0: off)")
    parser.add_argument("--crop", type=int, metavar="SIDE",
                        help="train on SIDE x SIDE lesion-centred and tissue crops of the --size images "
                        "(ml.crops; for mammography), one per image per epoch; held-out and served images "
                        "are read by windows of that side, the image being its most suspicious window "
                        "(ml.inference; 0: whole images throughout; fine-tuning keeps the parent's)")
    parser.add_argument("--members", type=int, default=1,
                        help="networks per fold and shipped, each from its own random start (seed + i), "
                        "their logits averaged (an ensemble in one weights file)")
    parser.add_argument("--init", type=Path, metavar="WEIGHTS",
                        help="start every network from this model's weights (a .pt trained here, its card beside "
                        "it, e.g. the ultrasound model for mammography; an ensemble's member i starts from its "
                        "member i mod n), or from a self-supervised backbone (ml.pretrain; the last layer starts "
                        "random), instead of a random start; the localisation head still starts random")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--held-out-every", type=int, default=1, metavar="N",
                        help="log a fold network's held-out AUC every N epochs and after the last (only a log "
                        "line: it changes no weight, and reading windowed held-out images can cost more than "
                        "the epoch's training)")
    parser.add_argument("--clean-scan", action="store_true",
                        help="ultrasound: train on the scan area with calipers and burned-in text inpainted "
                        "(ml.screen.clean_scan), as the screen_crop option analyses")
    parser.add_argument("--fine-tune", type=Path, metavar="WEIGHTS",
                        help="fine-tune this model (its .pt file; its card beside it) into a new version, "
                        "instead of training from scratch")
    parser.add_argument("--extra", type=Path, action="append", default=[], metavar="DIR",
                        help="another data set folder (e.g. exported feedback), only its rows of --modality; repeatable")
    parser.add_argument("--extra-repeat", type=int, default=3, help="fine-tuning: times each --extra image is seen per epoch")
    parser.add_argument("--replay", type=int, default=0,
                        help="fine-tuning: original images mixed in, a seeded random choice (0: all)")
    parser.add_argument("--name", help="fine-tuning: the new model's card name (default: <family>-ft-<version>)")
    parser.set_defaults(epochs=None, size=None, lr=None, crop=None)  # resolved below: they depend on --fine-tune
    args = parser.parse_args(argv)
    defaults = SCRATCH_DEFAULTS
    if args.fine_tune is not None:
        parent = parent_card(args.fine_tune)
        args.architecture, args.members = parent["architecture"], parent.get("members", 1)
        defaults = {"epochs": FINE_TUNE_EPOCHS, "size": parent["input"]["size"],
                    "crop": InputSpec.from_dict(parent["input"]).window,
                    "lr": FINE_TUNE_LR_FACTOR * parent.get("training", {}).get("lr", SCRATCH_DEFAULTS["lr"])}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0 <= args.crop <= args.size:
        parser.error(f"--crop must be between 0 (off) and --size ({args.size}), not {args.crop}")
    if args.members < 1:
        parser.error(f"--members must be at least 1, not {args.members}")
    if args.held_out_every < 1:
        parser.error(f"--held-out-every must be at least 1, not {args.held_out_every}")
    if args.init is not None and args.fine_tune is not None:
        parser.error("--init and --fine-tune both say where training starts: give one of them")
    return args


def input_spec(args: argparse.Namespace) -> InputSpec:
    """The input a run's networks are trained at and read with: a network trained on --crop
    windows classifies an image by its windows of that side (ml.inference)."""
    return InputSpec(size=args.size, window=args.crop)


def parent_card(weights: Path) -> dict:
    """The card of the weights file to fine-tune, after checking the file against it."""
    card = card_for_weights(Path(weights))
    verified_weights_path(Path(weights).parent, card)
    return card


def initial_state(args: argparse.Namespace, member: int) -> dict[str, torch.Tensor] | None:
    """The starting weights of an ensemble's `member` under --init (None: a random start). The
    --init model is a classifier into the same classes, or a self-supervised backbone
    (ml.pretrain: every weight but the last layer's, which then starts random); its architecture
    may differ in stride only (resnet18 and resnet18_os16 share every weight's shape)."""
    if args.init is None:
        return None
    card = parent_card(args.init)
    state = torch.load(args.init, map_location="cpu", weights_only=True)
    if card.get("task") == "self-supervised":
        if any(key.startswith("fc.") for key in state):
            raise SystemExit(f"--init {args.init}: a self-supervised backbone with a last layer")
        return state
    if card.get("classes") != CLASSES:
        raise SystemExit(f"--init {args.init}: its classes {card.get('classes')} are not {CLASSES}")
    states = member_states(state, card.get("members", 1))
    return states[member % len(states)]


def extra_samples(folders: list[Path], modality: str) -> list[Sample]:
    """The rows of --modality (all rows when the folder has no `modality` column) of each folder."""
    samples = []
    for folder in folders:
        with open(Path(folder) / "labels.csv", newline="") as handle:
            modalities = [row.get("modality") or modality for row in csv.DictReader(handle)]
        samples += [s for s, m in zip(read_folder(folder), modalities)
                    if m == modality and not s.excluded and s.label in CLASSES]
    return samples


class TrainingData:
    """Every image and lesion mask letterboxed once to the input size, cached in the run folder.
    With `clean_scans`, each image is first cut to its scan area with its marks inpainted (and its
    mask cut alike), so that a model can neither read calipers and text nor see the screen around."""

    def __init__(self, samples: list[Sample], size: int, cache: Path, clean_scans: bool = False) -> None:
        if cache.suffix != ".npz":  # a folder: the cache file is named by the samples it holds
            digest = hashlib.sha256("\n".join(str(s.path) for s in samples).encode()).hexdigest()[:16]
            cache = cache / f"data_{size}_{digest}.npz"
        self.samples = samples
        self.targets = torch.tensor([CLASSES.index(s.label) for s in samples])
        self.has_outline = torch.tensor([s.has_outline for s in samples])
        if cache.exists():
            arrays = np.load(cache)
            self.pixels, self.masks = torch.from_numpy(arrays["pixels"]), torch.from_numpy(arrays["masks"])
            if self.pixels.shape == (len(samples), size, size):
                return
        pixels, masks = [], []
        for sample in tqdm(samples, desc="load"):
            gray = load_gray(sample.path)
            mask = lesion_mask(sample, gray.shape)
            if clean_scans:
                cleaned = clean_scan(gray)
                gray, mask = cleaned.gray, mask[cleaned.area.slices()]
            pixels.append(letterbox(gray, size))
            masks.append(letterbox(mask, size))
        np.savez(cache, pixels=np.stack(pixels), masks=np.stack(masks))
        self.pixels, self.masks = torch.from_numpy(np.stack(pixels)), torch.from_numpy(np.stack(masks))

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples])

    @property
    def groups(self) -> np.ndarray:
        return np.array([s.group for s in self.samples])


def scratch_training_data(args: argparse.Namespace, samples: list[Sample], run_dir: Path) -> TrainingData:
    """The images of a run from scratch at its --size, cleaned where --clean-scan says, cached in `run_dir`."""
    cache = run_dir / f"data_{args.size}{'_clean' if args.clean_scan else ''}.npz"
    return TrainingData(samples, args.size, cache, clean_scans=args.clean_scan)


def predict_logits(network: torch.nn.Module, pixels: torch.Tensor, spec: InputSpec) -> np.ndarray:
    network.eval()
    chunks = [tta_logits(network, normalise(pixels[i : i + 64], spec), spec) for i in range(0, len(pixels), 64)]
    return torch.cat(chunks).double().numpy()


def member_dir(run_dir: Path, member: int) -> Path:
    """Where an ensemble's member trains: the first in `run_dir` itself (so that a single network's
    run is an ensemble's first member), the others in run_dir/member<i>."""
    return run_dir if member == 0 else run_dir / f"member{member}"


def train_network(
    args: argparse.Namespace, data: TrainingData, train_idx: np.ndarray, run_dir: Path,
    held_out: np.ndarray | None = None, initial: dict[str, torch.Tensor] | None = None, member: int = 0,
) -> torch.nn.Module:
    """Train one network on `train_idx`, resuming from its checkpoint.pt when it matches;
    `initial`: the classifier's starting weights (fine-tuning), else --init's, else random;
    `member`: which of an ensemble (its random start is seed + member, its folder member_dir)."""
    run_dir = member_dir(run_dir, member)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = input_spec(args)
    seed = args.seed + member
    torch.manual_seed(seed)
    model = ClassifierWithLocalisation(ARCHITECTURES[args.architecture](num_classes=len(CLASSES)))
    initial = initial if initial is not None else initial_state(args, member)
    if initial is not None:
        # strict for every layer a backbone has; the last layer keeps its random start when
        # `initial` is a self-supervised backbone's
        last_layer = {key: value for key, value in model.classifier.state_dict().items() if key.startswith("fc.")}
        model.classifier.load_state_dict(last_layer | {key: value.float() for key, value in initial.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (len(train_idx) + args.batch_size - 1) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    counts = torch.bincount(data.targets[train_idx], minlength=len(CLASSES)).clamp(min=1).float()
    class_weights = (counts.sum() / counts) / (counts.sum() / counts).mean()
    generator = torch.Generator().manual_seed(seed)
    settings = settings_of(args) | ({"member": str(member)} if member else {})
    checkpoint_path = run_dir / "checkpoint.pt"
    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    start_epoch, raw = resume(checkpoint_path, settings, stateful)
    if start_epoch:
        generator.set_state(raw["generator"])
        log.info("%s: resuming after epoch %d", run_dir, start_epoch)

    train_tensor = torch.as_tensor(train_idx)
    for epoch in range(start_epoch, args.epochs):
        model.train()
        order = train_tensor[torch.randperm(len(train_tensor), generator=generator)]
        total = 0.0
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"{run_dir.name} epoch {epoch + 1}/{args.epochs}")
        for start in bar:
            idx = order[start : start + args.batch_size]
            if len(idx) < 2:
                continue  # batch normalisation cannot train on a batch of one
            pixels, masks, targets = data.pixels[idx], data.masks[idx], data.targets[idx]
            if args.crop:
                pixels, masks, targets = lesion_centred_crops(pixels, masks, targets, args.crop, generator)
            images, masks = augment(pixels.float().unsqueeze(1) / 255.0, masks.float().unsqueeze(1) / 255.0, generator)
            outputs = model((images - spec.mean) / spec.std)
            loss = F.cross_entropy(outputs.logits, targets, weight=class_weights, label_smoothing=0.05)
            known = data.has_outline[idx]
            if args.localisation_weight > 0 and known.any():
                target = F.adaptive_avg_pool2d(masks[known], outputs.lesion_logits.shape[-2:])
                loss = loss + args.localisation_weight * F.binary_cross_entropy_with_logits(
                    outputs.lesion_logits[known], target
                )
            if args.evidence_weight > 0 and known.any():
                loss = loss + args.evidence_weight * evidence_on_lesion_loss(
                    outputs.evidence[known], targets[known], masks[known]
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        message = f"{run_dir} epoch {epoch + 1} loss {total / len(order):.4f}"
        if held_out is not None and ((epoch + 1) % args.held_out_every == 0 or epoch + 1 == args.epochs):
            probs = softmax(predict_logits(model.classifier, data.pixels[held_out], spec))
            epoch_report = report(data.labels[held_out], probs, CLASSES, threshold=0.5)
            message += f" held-out auc_malignant {epoch_report['auc_malignant']}"
        log.info(message)
        save_checkpoint(checkpoint_path, settings, epoch + 1, stateful, {"generator": generator.get_state()})
    return model.classifier.eval()


def fold_network(fold_dir: Path, members: int = 1) -> torch.nn.Module:
    """The classifier a finished fold trained (an Ensemble of its first `members`), from their
    last checkpoints (whose settings name the architecture; runs from before the option are
    plain resnet18)."""
    networks = []
    for member in range(members):
        checkpoint = torch.load(member_dir(fold_dir, member) / "checkpoint.pt", weights_only=False)  # our own file
        architecture = checkpoint["settings"].get("architecture", "resnet18")
        model = ClassifierWithLocalisation(ARCHITECTURES[architecture](num_classes=len(CLASSES)))
        model.load_state_dict(checkpoint["model"])
        networks.append(model.classifier.eval())
    return as_one_network(networks)


def as_one_network(networks: list[torch.nn.Module]) -> torch.nn.Module:
    """A single network as it is, several as their Ensemble."""
    return networks[0] if len(networks) == 1 else Ensemble(networks).eval()


def trained_members(args: argparse.Namespace, data: TrainingData, train_idx: np.ndarray, run_dir: Path) -> torch.nn.Module:
    """The --members networks trained on `train_idx` (each resumed or trained), as one network."""
    return as_one_network([train_network(args, data, train_idx, run_dir, member=member)
                           for member in range(args.members)])


def cross_validate(args: argparse.Namespace, data: TrainingData, run_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Out-of-fold logits for every image (the mean of the members'), the fold each image was
    held out in, and each fold network's saliency localisation on its held-out lesion images."""
    spec = input_spec(args)
    logits = np.zeros((len(data.samples), len(CLASSES)))
    fold_of = np.full(len(data.samples), -1)
    localisation = []
    for k, (train_idx, held_out) in enumerate(grouped_folds(data.samples, args.folds, args.seed)):
        fold_dir = run_dir / f"fold{k}"
        localisation_path = fold_dir / ("localisation.json" if args.members == 1
                                        else f"localisation_{args.members}_members.json")
        member_logits = []
        for member in range(args.members):
            done = member_dir(fold_dir, member) / "out_of_fold.npz"
            if not done.exists() or read_with(done) != spec.to_dict():
                network = train_network(args, data, train_idx, fold_dir, held_out=held_out, member=member)
                np.savez(done, logits=predict_logits(network, data.pixels[held_out], spec), held_out=held_out,
                         spec=json.dumps(spec.to_dict()))
                localisation_path.unlink(missing_ok=True)  # the saliency of a network read otherwise
            member_logits.append(np.load(done)["logits"])
        logits[held_out], fold_of[held_out] = np.mean(member_logits, axis=0), k
        if not localisation_path.exists():
            explainer = Explainer(fold_network(fold_dir, args.members), spec, CLASSES)
            by_dataset = {}
            for dataset in sorted({data.samples[i].dataset for i in held_out}):
                chosen = [data.samples[i] for i in held_out if data.samples[i].dataset == dataset]
                by_dataset[dataset] = localisation_metrics(explainer, tqdm(chosen, desc=f"fold{k} saliency {dataset}"))
            localisation_path.write_text(json.dumps(by_dataset))
        localisation.append(json.loads(localisation_path.read_text()))
    return logits, fold_of, pooled_localisation(localisation)


def read_with(out_of_fold: Path) -> dict | None:
    """The input spec a fold's saved out-of-fold logits were computed with (None: not recorded)."""
    arrays = np.load(out_of_fold)
    return json.loads(str(arrays["spec"])) if "spec" in arrays.files else None


def pooled_localisation(per_fold: list[dict[str, dict]]) -> dict:
    """Saliency localisation over every fold's held-out lesion images, from each fold's
    {data set: localisation_metrics}: pooled, per data set and per fold."""
    def combined(parts: list[dict]) -> dict:
        total = sum(part["n"] for part in parts)
        return {"n": total, **{
            metric: round(sum(part[metric] * part["n"] for part in parts if part["n"]) / total, 4) if total else None
            for metric in ("pointing_game", "energy_in_mask")
        }}

    datasets = sorted({dataset for fold in per_fold for dataset in fold})
    folds = [combined(list(fold.values())) for fold in per_fold]
    return {
        "method": f"gradcam ({GRADCAM_LAYERS[0]}), explaining the true class, each fold's network on all of "
        "its held-out lesion images",
        **combined([part for fold in per_fold for part in fold.values()]),
        "per_dataset": {dataset: combined([fold[dataset] for fold in per_fold if dataset in fold]) for dataset in datasets},
        "per_fold": {metric: [fold[metric] for fold in folds] for metric in ("pointing_game", "energy_in_mask")},
    }


def cross_fitted_calibration(data: TrainingData, logits: np.ndarray, fold_of: np.ndarray) -> dict:
    """The AUCs and calibration error when each fold's images are calibrated by a fit on the other
    folds' alone: the class biases can reorder images by their probability of malignancy, so the
    figures with the calibration fitted on every image flatter it a little; these do not."""
    targets = data.targets.numpy()
    probs = np.zeros_like(logits)
    for k in range(fold_of.max() + 1):
        fitted_on, held_out = fold_of != k, fold_of == k
        probs[held_out] = fit_calibrator(logits[fitted_on], targets[fitted_on]).probabilities(logits[held_out])
    labels = data.labels
    measured = report(labels, probs, CLASSES, threshold=0.5)
    return {"method": "each fold calibrated by the fit on the other folds' out-of-fold logits",
            **{k: measured[k] for k in ("auc_malignant", "auc_malignant_vs_benign", "auc_lesion")},
            "ece_malignant": expected_calibration_error(labels == "malignant", probs[:, CLASSES.index("malignant")])}


def cross_validated_metrics(data: TrainingData, logits: np.ndarray, fold_of: np.ndarray) -> dict:
    """Calibration, threshold and metrics (with intervals) from the out-of-fold logits."""
    targets = data.targets.numpy()
    calibrator = fit_calibrator(logits, targets)
    probs = calibrator.probabilities(logits)
    labels, groups = data.labels, data.groups
    p_malignant = probs[:, CLASSES.index("malignant")]
    threshold = screening_threshold(labels == "malignant", p_malignant, SCREENING_SENSITIVITY)
    balanced = balanced_threshold(labels == "malignant", p_malignant)

    def summary(mask: np.ndarray) -> dict:
        result = report(labels[mask], probs[mask], CLASSES, threshold)
        result["ece_malignant"] = expected_calibration_error(labels[mask] == "malignant", p_malignant[mask])
        result["ci95"] = bootstrap_intervals(labels[mask], p_malignant[mask], groups[mask], threshold)
        return result

    datasets = sorted({s.dataset for s in data.samples})
    per_fold = [report(labels[fold_of == k], probs[fold_of == k], CLASSES, threshold)
                for k in range(fold_of.max() + 1)]
    spread = {}
    for name in ("auc_malignant", "auc_malignant_vs_benign", "auc_lesion", "sensitivity", "specificity"):
        values = [f[name] for f in per_fold if f[name] is not None]
        if values:
            spread[name] = {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4),
                            "folds": values}
    return {
        "calibration": {"method": f"{calibrator.method} on out-of-fold logits", **calibrator.to_dict()},
        "threshold": threshold,
        "balanced_threshold": balanced,
        "balanced_operating_point": report(labels, probs, CLASSES, balanced),
        "pooled": summary(np.ones(len(labels), dtype=bool)),
        "per_dataset": {name: summary(np.array([s.dataset == name for s in data.samples])) for name in datasets},
        "per_fold": spread,
        "uncalibrated_ece_malignant": expected_calibration_error(
            labels == "malignant", softmax(logits)[:, CLASSES.index("malignant")]
        ),
        "cross_fitted_calibration": cross_fitted_calibration(data, logits, fold_of),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # One fine-tuning folder per modality: an interrupted fine-tune resumes when its settings match.
    run_dir = args.run_dir or Path("runs") / (f"{args.modality}-fine-tune" if args.fine_tune else args.modality)
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")],
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fine_tune is not None:
        fine_tune(args, run_dir)
        return
    samples = load_samples(args.data_root, args.modality) + extra_samples(args.extra, args.modality)
    if args.clean_scan and args.modality != "ultrasound":
        raise SystemExit("--clean-scan is for ultrasound screenshots only")
    data = scratch_training_data(args, samples, run_dir)
    log.info("run %s: %d images", vars(args), len(samples))

    logits, fold_of, localisation = cross_validate(args, data, run_dir)
    metrics = cross_validated_metrics(data, logits, fold_of)
    metrics["saliency_localisation"] = localisation
    (run_dir / "cross_validation.json").write_text(json.dumps(metrics, indent=2))
    log.info("cross-validation: %s", json.dumps({k: metrics["pooled"][k] for k in ("auc_malignant", "sensitivity", "specificity", "ece_malignant")}))

    network = trained_members(args, data, np.arange(len(samples)), run_dir / "full")
    write_model(args, network, data, metrics)


def reliability(metrics: dict) -> dict:
    """How far the model can be trusted, from its cross-validated AUCs, for the API to pass on."""
    pooled = metrics["pooled"]
    aucs = [pooled[k] for k in ("auc_malignant_vs_benign", "auc_lesion") if pooled.get(k) is not None]
    low = min(aucs) < 0.80
    note = (f"cross-validated AUC {', '.join(f'{a:.2f}' for a in aucs)} "
            f"(malignant vs benign{', lesion vs normal' if pooled.get('auc_lesion') is not None else ''})")
    if low:
        note = "Low confidence: " + note + "; trained on few images. Treat the result as a weak hint only."
    return {"low_confidence": low, "note": note}


def compact_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in half precision, except tensors (e.g. BatchNorm variances) beyond its range."""
    fits = lambda t: t.is_floating_point() and t.abs().max() < torch.finfo(torch.float16).max / 2
    return {k: v.half() if fits(v) else v for k, v in network.state_dict().items()}


def write_model(args: argparse.Namespace, network: torch.nn.Module, data: TrainingData, metrics: dict) -> None:
    """Ship the network in half precision beside a card with the cross-validated metrics."""
    name = MODALITY_MODELS[args.modality]
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = args.weights_dir / f"{name}.pt"
    torch.save(compact_state(network), weights_path)
    datasets = sorted({s.dataset for s in data.samples})
    card = {
        "name": name,
        "version": args.version,
        "modality": args.modality,
        "architecture": args.architecture,
        **({"members": args.members} if args.members > 1 else {}),
        "classes": CLASSES,
        "input": input_spec(args).to_dict(),
        "test_time_augmentation": "mean logits of the image and its mirror image"
        + (f", each read by its most suspicious {args.crop} px window of tissue" if args.crop else "")
        + (f", over the {args.members} members" if args.members > 1 else ""),
        "calibration": metrics["calibration"],
        "threshold": {
            "malignant": metrics["threshold"],
            "chosen_for": f"sensitivity >= {SCREENING_SENSITIVITY} for malignancy on calibrated out-of-fold predictions",
            "balanced": metrics["balanced_threshold"],
            "balanced_chosen_for": "maximum sensitivity + specificity (Youden) on calibrated out-of-fold predictions",
        },
        "metrics": {
            "method": f"{args.folds}-fold cross-validation grouped by patient/near-duplicate group "
            "(stratified by data set and label); out-of-fold predictions, calibrated; 95% intervals "
            "from 1000 group-bootstrap resamples. The shipped network is trained on all images "
            "with the same recipe.",
            **{k: metrics[k] for k in ("pooled", "per_dataset", "per_fold", "uncalibrated_ece_malignant",
                                       "cross_fitted_calibration", "balanced_operating_point",
                                       "saliency_localisation")},
        },
        "training": {
            "from_scratch": True,
            "command": f"python -m ml.train --modality {args.modality} --architecture {args.architecture} "
            f"--folds {args.folds} --epochs {args.epochs} "
            f"--size {args.size} --batch-size {args.batch_size} --localisation-weight {args.localisation_weight} "
            f"--evidence-weight {args.evidence_weight}{f' --crop {args.crop}' if args.crop else ''}"
            f"{f' --members {args.members}' if args.members > 1 else ''}"
            f"{f' --init {args.init}' if args.init else ''} --seed {args.seed}",
            **({"initialised_from": initialised_from(args.init)} if args.init else {}),
            "lesion_centred_crops": args.crop or None,
            "ensemble": f"{args.members} networks, seeds {args.seed} to {args.seed + args.members - 1}, mean logits"
            if args.members > 1 else None,
            "localisation_head_weight": args.localisation_weight,
            "evidence_on_lesion_weight": args.evidence_weight,
            "images": len(data.samples),
            "excluded": "BUSI images in groups with conflicting labels (label_conflict=1)" if "busi" in datasets else None,
        },
        "reliability": reliability(metrics),
        **provenance(weights_path, datasets),
    }
    path = write_card(args.weights_dir, card)
    log.info("wrote %s and %s", weights_path, path)


def initialised_from(weights: Path) -> dict:
    """The card's record of the --init model every network started from."""
    card = card_for_weights(weights)
    if card.get("task") == "self-supervised":
        trained = f"here, self-supervised on {', '.join(card['images'])} images, labels unused"
    else:
        trained = "here, from scratch" if card.get("training", {}).get("from_scratch") else "here, fine-tuned"
    return {"name": card["name"], "version": card["version"], "sha256": card["sha256"], "trained": trained,
            "note": "a model of this project's own, trained on this project's data; no outside weights"}


def fine_tune(args: argparse.Namespace, run_dir: Path) -> Path:
    """Fine-tune the --fine-tune model on --extra plus original images into a new version; returns
    the new card's path. The parent's files are only read."""
    parent = parent_card(args.fine_tune)
    if parent.get("modality") != args.modality or "classes" not in parent:
        raise SystemExit(f"{args.fine_tune} is not a {args.modality} classifier")
    family = parent.get("family", parent["name"])
    name = args.name or f"{family}-ft-{args.version}"
    if (args.weights_dir / f"{name}.json").exists() or (args.weights_dir / f"{name}.pt").exists():
        raise SystemExit(f"model {name} exists in {args.weights_dir}; give another --version or --name")
    extras = extra_samples(args.extra, args.modality)
    if not extras:
        raise SystemExit(f"no {args.modality} rows in {[str(e) for e in args.extra]}: nothing to fine-tune on")
    originals = load_samples(args.data_root, args.modality)
    if args.replay:
        chosen = np.random.default_rng(args.seed).permutation(len(originals))[: args.replay]
        originals = [originals[i] for i in sorted(chosen)]
    samples = originals + extras
    data = TrainingData(samples, args.size, run_dir)
    is_extra = np.arange(len(samples)) >= len(originals)
    log.info("fine-tune %s: %d original and %d extra images", parent["name"], len(originals), len(extras))

    # Every feedback image trains (there are few, and they are the point); the held-out split is
    # drawn from the original images' groups: it shows whether the new version still works there.
    extra_idx = np.flatnonzero(is_extra)
    if args.folds > 1:
        train_idx, held_out = grouped_folds(originals, args.folds, args.seed)[0]
    else:
        train_idx, held_out = np.arange(len(originals)), np.array([], dtype=int)
    repeated = np.concatenate([train_idx] + [extra_idx] * max(args.extra_repeat, 1))
    state = torch.load(args.fine_tune, map_location="cpu", weights_only=True)
    network = as_one_network([
        train_network(args, data, repeated, run_dir / "fine-tune", held_out=held_out if len(held_out) else None,
                      initial=member_state, member=member)
        for member, member_state in enumerate(member_states(state, args.members))
    ])
    validation = validate_fine_tuned(network, data, held_out, parent, input_spec(args))
    roi_classification = refit_roi_classification(network, [data.samples[i] for i in held_out], parent,
                                                  input_spec(args))

    args.weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = args.weights_dir / f"{name}.pt"
    torch.save(compact_state(network), weights_path)
    feedback_labels = {label: int((data.labels[is_extra] == label).sum()) for label in CLASSES}
    card = {
        "name": name,
        "family": family,
        "version": args.version,
        "modality": args.modality,
        "architecture": parent["architecture"],
        **({"members": args.members} if args.members > 1 else {}),
        "classes": CLASSES,
        "input": input_spec(args).to_dict(),
        "test_time_augmentation": parent["test_time_augmentation"],
        "calibration": validation["calibration"],
        "threshold": validation["threshold"],
        "metrics": validation["metrics"],
        **({"roi_classification": roi_classification} if roi_classification else {}),
        "parent": {"name": parent["name"], "version": parent["version"], "sha256": parent["sha256"]},
        "fine_tuning": {
            "feedback": {"folders": [str(e) for e in args.extra], "images": int(is_extra.sum()),
                         "labels": feedback_labels,
                         "lesion_masks": int(sum(bool(s.masks) for s in extras))},
            "original_images": len(originals),
            "epochs": args.epochs, "lr": args.lr, "extra_repeat": args.extra_repeat,
            "command": f"python -m ml.train --modality {args.modality} --fine-tune {args.fine_tune} "
            + " ".join(f"--extra {e}" for e in args.extra)
            + f" --epochs {args.epochs} --size {args.size} --replay {args.replay} --folds {args.folds} "
            f"--seed {args.seed} --version {args.version}",
        },
        "training": {"from_scratch": False, "fine_tuned_from": f"{parent['name']} {parent['version']}",
                     "images": len(samples), "localisation_head_weight": args.localisation_weight},
        "reliability": validation["reliability"],
        **provenance(weights_path, sorted({s.dataset for s in originals})),
    }
    card["data"].update({name: FEEDBACK_DATA for name in sorted({s.dataset for s in extras})})
    path = write_card(args.weights_dir, card)
    log.info("wrote %s and %s (fine-tuned from %s %s)", weights_path, path, parent["name"], parent["version"])
    return path


def refit_roi_classification(network: torch.nn.Module, held_out: list[Sample], parent: dict,
                             spec: InputSpec) -> dict | None:
    """The fine-tuned network's ROI calibration (ml.roi_classification), refitted on the lesions of
    its held-out original images at the parent's context margin; the parent's when they cannot set
    it (no malignant or no benign lesion among them); None when the parent has none."""
    parent_roi = parent.get("roi_classification")
    if parent_roi is None:
        return None
    crops = lesion_crop_logits(network, spec, held_out, (parent_roi["context_margin"],))
    malignant = crops.labels == "malignant"
    if malignant.all() or not malignant.any():
        return {**parent_roi, "calibration": {**parent_roi["calibration"],
                                              "method": "the parent's (not refitted: too few held-out lesions)"}}
    return fit_roi_classification(crops, "the held-out split of the original images")


def validate_fine_tuned(network: torch.nn.Module, data: TrainingData, held_out: np.ndarray, parent: dict,
                        spec: InputSpec) -> dict:
    """Calibration, thresholds, metrics and reliability of a fine-tuned network from its held-out
    original images; the parent's calibration and thresholds when they cannot set them (nothing
    held out, or no malignant and no other image among them)."""
    labels = data.labels[held_out]
    malignant = labels == "malignant"
    if len(held_out) == 0 or malignant.all() or not malignant.any():
        return {
            "calibration": {**parent["calibration"], "method": "the parent's (not refitted: too few held-out images)"},
            "threshold": {**parent["threshold"], "chosen_for": "the parent's threshold (not re-chosen)"},
            "metrics": {"method": f"not validated: {len(held_out)} held-out images cannot set the calibration "
                        "and thresholds; the parent's metrics follow", "validated": False,
                        "parent": parent["metrics"].get("pooled")},
            "reliability": {"low_confidence": True,
                            "note": "Low confidence: this fine-tuned version was not validated. Treat the result "
                            "as a weak hint only."},
        }
    logits = predict_logits(network, data.pixels[held_out], spec)
    targets = data.targets[held_out].numpy()
    calibrator = fit_calibrator(logits, targets)
    probs = calibrator.probabilities(logits)
    p_malignant = probs[:, CLASSES.index("malignant")]
    threshold = screening_threshold(malignant, p_malignant, SCREENING_SENSITIVITY)
    balanced = balanced_threshold(malignant, p_malignant)
    pooled = report(labels, probs, CLASSES, threshold)
    pooled["ece_malignant"] = expected_calibration_error(malignant, p_malignant)
    aucs = [pooled[k] for k in ("auc_malignant_vs_benign", "auc_lesion") if pooled.get(k) is not None]
    judged = reliability({"pooled": pooled})
    judged["note"] = judged["note"].replace("cross-validated AUC", "held-out AUC")
    return {
        "calibration": {"method": f"{calibrator.method} on the held-out split's logits", **calibrator.to_dict()},
        "threshold": {
            "malignant": threshold,
            "chosen_for": f"sensitivity >= {SCREENING_SENSITIVITY} for malignancy on the calibrated held-out split",
            "balanced": balanced,
            "balanced_chosen_for": "maximum sensitivity + specificity (Youden) on the calibrated held-out split",
        },
        "metrics": {"method": "one patient-grouped, label-stratified held-out split of the original images "
                    "(1/--folds of their groups; every feedback image trains), calibrated; not cross-validated",
                    "validated": True, "pooled": pooled, "parent": parent["metrics"].get("pooled")},
        "reliability": judged if aucs else {
            "low_confidence": True, "note": "Low confidence: the held-out split has no AUC to judge by."},
    }


if __name__ == "__main__":
    main()
