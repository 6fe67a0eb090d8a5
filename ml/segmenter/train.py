"""Train the promptable lesion segmenter (`branet_sam_small`) on the lesion outlines.

    python -m ml.segmenter.train --modality ultrasound

Each step prompts every image the way users will: no prompt (find every lesion), a box around
one lesion, positive and negative clicks, or a box with clicks. The held-out fold of the same
patient-grouped split as the classifier's (fold 0) measures Dice and detection through
`SamPredictor`; the card records them. Progress bars, a checkpoint per epoch, resume on rerun.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from ml.augment import ROTATION_DEGREES, SHIFT, ZOOM, photometric
from ml.cards import SEGMENTER_MODELS, card_for_weights, provenance, write_card
from ml.checkpoints import add_common_arguments, resume, save_checkpoint, settings_of
from ml.datasets import load_samples
from ml.errors import ModelUnavailable
from ml.segmenter.build import build_branet_sam_small, load_carded_segmenter
from ml.segmenter.data import ALL_IMAGES, PreparedImage, held_out_split, lesion_boxes, prepare, segmenter_split
from ml.segmenter.encoder import ENCODER_WIDTHS
from ml.segmenter.evaluate import held_out_metrics
from ml.segmenter.roi import AUTOMATIC_MASK_TOKENS, Segmenter, decoder_request
from ml.train import compact_state, initialised_from

log = logging.getLogger("ml.segmenter.train")

# A segmenter that finds fewer of the held-out lesions than this without a prompt would answer "no
# ROI found" for most images with a finding: its card says so, and it serves prompts only.
MIN_AUTOMATIC_DETECTION = 0.5


def finds_lesions_without_prompt(metrics: dict) -> bool:
    """What a card's `automatic_rois` says, from its held-out metrics."""
    return (metrics["auto"]["detection_rate"] or 0) >= MIN_AUTOMATIC_DETECTION


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.segmenter.train", description=__doc__.split("\n")[0])
    add_common_arguments(parser, epochs=12, size=256, batch_size=16, lr=1e-3)
    parser.add_argument("--encoder-widths", type=_widths, default=ENCODER_WIDTHS,
                        help="channels of the image encoder's stem and three stages, comma-separated "
                        f"(default {','.join(map(str, ENCODER_WIDTHS))})")
    parser.add_argument("--init", type=Path, metavar="WEIGHTS",
                        help="start from another segmenter trained here (e.g. the ultrasound one), checked "
                        "against its card; its encoder widths must be these")
    parser.add_argument("--automatic-weight", type=_weight, default=0.0,
                        help="weight of a second, no-prompt answer for every image whose random prompt was "
                        "a box or clicks: the automatic mode then learns from every image, not one in four")
    parser.add_argument("--automatic-mask-token", type=int, choices=AUTOMATIC_MASK_TOKENS, default=0,
                        help="the mask decoder's output token that answers without a prompt: 0, the one "
                        "prompts use, or 1, SAM's first multimask token, so the two answers do not share it")
    parser.add_argument("--split-seed", type=int, metavar="SEED",
                        help="the seed of the patient-grouped split whose fold 0 is held out (default: --seed); "
                        "with another --seed, a second network on the same images, e.g. an ensemble's member")
    parser.add_argument("--dataset-weights", type=_dataset_weights, default={}, metavar="SET=K[,SET=K]",
                        help="draw each image of SET K times as often as the others (e.g. busi=2); an epoch "
                        "keeps its number of steps, so the run costs the same")
    parser.add_argument("--all-images", action="store_true",
                        help="train on every image, holding none out, as the shipped classifier's last network "
                        "does: nothing is left to measure it, so --validated-by names the run of the same recipe "
                        "on a split whose held-out figures (and automatic_rois) its card carries")
    parser.add_argument("--validated-by", type=Path, metavar="DIR",
                        help="with --all-images: the folder of that validated run (weights and card)")
    args = parser.parse_args(argv)
    if args.all_images != (args.validated_by is not None):
        parser.error("--all-images and --validated-by go together: a network that held nothing out is "
                     "described by the held-out figures of its recipe's validated run")
    if args.all_images and args.split_seed is not None:
        parser.error("--split-seed names the split whose fold is held out; --all-images holds none out")
    return args


def validation_record(directory: Path, name: str) -> dict:
    """The card of a validated run (checked against its weights) that a network trained on every
    image is described by; SystemExit when it is missing, tampered with, or held nothing out itself."""
    try:
        _, card = load_carded_segmenter(directory, name)
    except ModelUnavailable as error:
        raise SystemExit(f"--validated-by {directory}: {error}") from None
    if held_out_split(card) == ALL_IMAGES:
        raise SystemExit(f"--validated-by {directory}: that run held nothing out either")
    return card


def measured_fields(metrics: dict, split: str) -> dict:
    """What a segmenter's card says of the held-out fold it was measured on (`split` says which)."""
    return {"automatic_rois": finds_lesions_without_prompt(metrics), "metrics": {"split": split, **metrics}}


def validated_fields(validated: dict) -> dict:
    """What a card of a network trained on every image takes from its recipe's validated run."""
    record = {key: validated[key] for key in ("name", "version", "sha256")}
    return {
        "automatic_rois": validated["automatic_rois"],
        "metrics": {
            **validated["metrics"],
            "split": "none held out: trained on every image. These are the held-out figures of the same "
            f"recipe validated by {validated['name']} {validated['version']} ({validated['metrics']['split']})",
            "validated_by": record | {"command": validated["training"]["command"]},
        },
    }


def _widths(text: str) -> tuple[int, ...]:
    widths = tuple(int(part) for part in text.split(","))
    if len(widths) != len(ENCODER_WIDTHS) or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"{len(ENCODER_WIDTHS)} positive integers, e.g. 32,64,128,256")
    return widths


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"a finite number >= 0, e.g. 1 (not {text!r})")
    return value


def _dataset_weights(text: str) -> dict[str, int]:
    weights = {}
    for part in text.split(","):
        name, _, count = part.partition("=")
        if not (name and count.isdigit() and int(count) >= 1):
            raise argparse.ArgumentTypeError(f"SET=K with a whole K >= 1, e.g. busi=2 (not {part!r})")
        weights[name] = int(count)
    return weights


def split_seed(args: argparse.Namespace) -> int:
    return args.seed if args.split_seed is None else args.split_seed


def _weights_text(weights: dict[str, int]) -> str:
    return ",".join(f"{name}={count}" for name, count in weights.items())


def epoch_order(datasets: list[str], weights: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """The image indices of one epoch. Each image of a weighted set enters the draw K times; the
    shuffled draw is cut to the number of images, so the sets' shares change, not the epoch's cost."""
    if not weights:
        return rng.permutation(len(datasets))
    pool = np.concatenate([np.full(weights.get(name, 1), i) for i, name in enumerate(datasets)])
    return rng.permutation(pool)[: len(datasets)]


def sample_prompt(lesions: np.ndarray, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """A random prompt of the kinds users give, and the mask it asks for."""
    count = int(lesions.max())
    kind = "none" if count == 0 else rng.choice(["none", "box", "points", "box+points"])
    if kind == "none":
        return {}, lesions > 0
    target = lesions == rng.integers(1, count + 1)
    prompt: dict = {}
    if "box" in kind:
        box = lesion_boxes(target.astype(np.int32))[0]
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2) + 1
        prompt["box"] = box + rng.normal(0, 0.05, 4).astype(np.float32) * size
    if "points" in kind or rng.random() < 0.3:
        inside, outside = np.argwhere(target), np.argwhere(lesions == 0)
        positives = inside[rng.integers(0, len(inside), rng.integers(1, 4))]
        negatives = outside[rng.integers(0, len(outside), rng.integers(0, 3))]
        coords = np.concatenate([positives, negatives])[:, ::-1].astype(np.float32)
        labels = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.float32)
        prompt["points"] = (coords, labels)
    return prompt, target


def randomly_warped(pixels: np.ndarray, lesions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image and its lesion labels under ml.augment's geometric jitter (mirror, rotation, zoom,
    shift about the image centre), drawn from a numpy generator: the images have different shapes,
    so they are warped one by one, the labels by nearest neighbour, then relabelled."""
    angle, zoom = np.deg2rad(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES)), rng.uniform(*ZOOM)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.diag([1.0, mirror])  # output (row, col) -> input
    centre = (np.array(pixels.shape) - 1) / 2
    shift = rng.uniform(-SHIFT, SHIFT, 2) * np.array(pixels.shape)
    offset = centre - matrix @ (centre + shift)
    warped = ndimage.affine_transform(pixels, matrix, offset, order=1, mode="constant")
    inside = ndimage.affine_transform((lesions > 0).astype(np.uint8), matrix, offset, order=0, mode="constant")
    relabelled, _ = ndimage.label(inside)
    return warped, relabelled.astype(np.int32)


def batch_tensor(images: list[np.ndarray], size: int, model) -> torch.Tensor:
    """Normalised, zero-padded (after normalising, as `Sam.preprocess` pads) 3-channel batch."""
    batch = torch.zeros(len(images), 3, size, size)
    for i, pixels in enumerate(images):
        x = torch.from_numpy(pixels).float()[None].expand(3, -1, -1)
        batch[i, :, : pixels.shape[0], : pixels.shape[1]] = (x - model.pixel_mean) / model.pixel_std
    return batch


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE + soft Dice on the low-resolution logits, and the IoU the mask actually reached."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    predicted, truth = prob > 0.5, target > 0.5
    union = (predicted | truth).sum()
    iou = (predicted & truth).sum() / union if union > 0 else torch.tensor(1.0)
    return bce + (dice if truth.any() else 0), iou.float()


def prompt_loss(model, embedding: torch.Tensor, dense_pe: torch.Tensor, prompt: dict, target: np.ndarray,
                size: int, mask_token: int = 0) -> torch.Tensor:
    """Mask loss plus the IoU head's error for one image's embedding answering one prompt with
    the decoder's output `mask_token` (0: the single-mask output; 1-3: SAM's multimask outputs)."""
    points = None
    if "points" in prompt:
        coords, labels = prompt["points"]
        points = (torch.from_numpy(coords)[None], torch.from_numpy(labels)[None])
    box = torch.from_numpy(prompt["box"])[None] if "box" in prompt else None
    sparse, dense = model.prompt_encoder(points=points, boxes=box, masks=None)
    multimask, answer = decoder_request(mask_token)
    logits, iou_pred = model.mask_decoder(
        image_embeddings=embedding, image_pe=dense_pe,
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
    )
    logits, iou_pred = logits[:, answer : answer + 1], iou_pred[:, answer : answer + 1]
    padded = np.zeros((size, size), dtype=np.float32)
    padded[: target.shape[0], : target.shape[1]] = target
    small = F.adaptive_avg_pool2d(torch.from_numpy(padded)[None, None], size // 4)
    segmentation, iou = mask_loss(logits, small)
    return segmentation + F.mse_loss(iou_pred[0, 0], iou)


def train(args: argparse.Namespace, images: list[PreparedImage], datasets: list[str], run_dir: Path):
    """`datasets[i]` names the set of `images[i]`, for --dataset-weights."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build_branet_sam_small(img_size=args.size, encoder_widths=args.encoder_widths)
    if args.init is not None:
        # No weight's shape depends on the input size: a model trained at another size loads.
        # Checked against its card (a tampered file stops here); an ensemble starts us from its first member.
        (first, *_), _ = load_carded_segmenter(args.init.parent, card_for_weights(args.init)["name"])
        try:
            model.load_state_dict(first.state_dict())
        except RuntimeError as error:
            raise SystemExit(f"--init {args.init} is not a segmenter of these encoder widths: {error}") from None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(images) + args.batch_size - 1) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(args.seed)
    checkpoint_path = run_dir / "checkpoint.pt"
    settings = settings_of(args)
    stateful = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    start_epoch, raw = resume(checkpoint_path, settings, stateful)
    if start_epoch:
        rng.bit_generator.state = raw["rng"]
        generator.set_state(raw["generator"])
        log.info("resuming after epoch %d", start_epoch)
    for epoch in range(start_epoch, args.epochs):
        model.train()
        order = epoch_order(datasets, args.dataset_weights, rng)
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}")
        total = 0.0
        for start in bar:
            chosen = [images[i] for i in order[start : start + args.batch_size]]
            pixels, lesions = zip(*(randomly_warped(c.pixels, c.lesions, rng) for c in chosen))
            jittered = [
                (photometric(torch.from_numpy(p).float()[None, None] / 255, generator)[0, 0] * 255).numpy()
                for p in pixels
            ]
            embeddings = model.image_encoder(batch_tensor(jittered, args.size, model))
            dense_pe = model.prompt_encoder.get_dense_pe()
            loss = torch.zeros(())
            for i, lesion_map in enumerate(lesions):
                prompt, target = sample_prompt(lesion_map, rng)
                token = 0 if prompt else args.automatic_mask_token
                loss = loss + prompt_loss(model, embeddings[i : i + 1], dense_pe, prompt, target, args.size, token)
                if prompt and args.automatic_weight:
                    loss = loss + args.automatic_weight * prompt_loss(
                        model, embeddings[i : i + 1], dense_pe, {}, lesion_map > 0, args.size,
                        args.automatic_mask_token)
            loss = loss / len(chosen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(chosen)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        log.info("epoch %d loss %.4f", epoch + 1, total / len(images))
        save_checkpoint(checkpoint_path, settings, epoch + 1, stateful,
                        {"rng": rng.bit_generator.state, "generator": generator.get_state()})
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    samples = load_samples(args.data_root, args.modality)
    name = SEGMENTER_MODELS[args.modality]
    if args.all_images:
        validated = validation_record(args.validated_by, name)
        training, validation = [s for s in samples if s.has_outline], []
    else:
        validated = None
        training, validation = segmenter_split(samples, split_seed(args))
    unknown = sorted(set(args.dataset_weights) - {s.dataset for s in training})
    if unknown:
        raise SystemExit(f"--dataset-weights names {', '.join(unknown)}: the {args.modality} images come from "
                         f"{', '.join(sorted({s.dataset for s in training}))}")
    run_dir = args.run_dir or Path("runs") / f"{args.modality}-segmenter"
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")])
    images = prepare(training, args.size)
    model = train(args, images, [s.dataset for s in training], run_dir)
    segmenter = Segmenter(model, args.automatic_mask_token)
    if validated is None:
        metrics = held_out_metrics(segmenter, validation)
        log.info("validation: %s", json.dumps(metrics))
        measured = measured_fields(
            metrics, f"validation on fold 0 of the 5-fold split of seed {split_seed(args)} grouped by "
            "patient/near-duplicate group (the classifier's fold 0 for that seed); the shipped network is "
            "trained on the other four folds")
    else:
        measured = validated_fields(validated)

    args.weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = args.weights_dir / f"{name}.pt"
    torch.save(compact_state(model), weights_path)
    datasets = sorted({s.dataset for s in samples})
    card = {
        "name": name,
        "version": args.version,
        "modality": args.modality,
        "architecture": "branet_sam_small",
        "build": {"img_size": args.size, "encoder_widths": list(args.encoder_widths)},
        "input": {"img_size": args.size, "channels": "grayscale replicated to 3"},
        **({"automatic_mask_token": args.automatic_mask_token} if args.automatic_mask_token else {}),
        **measured,
        "training": {
            "from_scratch": True,
            "command": f"python -m ml.segmenter.train --modality {args.modality} --epochs {args.epochs} "
            f"--size {args.size} --batch-size {args.batch_size} --seed {args.seed} "
            f"--lr {args.lr} --encoder-widths {','.join(map(str, args.encoder_widths))}"
            f"{f' --split-seed {args.split_seed}' if args.split_seed is not None else ''}"
            f"{f' --init {args.init}' if args.init else ''}"
            f"{f' --automatic-weight {args.automatic_weight:g}' if args.automatic_weight else ''}"
            f"{f' --automatic-mask-token {args.automatic_mask_token}' if args.automatic_mask_token else ''}"
            f"{' --dataset-weights ' + _weights_text(args.dataset_weights) if args.dataset_weights else ''}"
            f"{f' --all-images --validated-by {args.validated_by}' if args.all_images else ''}",
            **({"initialised_from": initialised_from(args.init)} if args.init else {}),
            "prompts": "none (all lesions), box around one lesion (jittered), 1-3 positive and 0-2 negative clicks"
            + (f"; and the no-prompt answer for every image, weight {args.automatic_weight:g}" if args.automatic_weight else "")
            + (f"; the no-prompt answer from mask token {args.automatic_mask_token}, not the prompts' token 0"
               if args.automatic_mask_token else ""),
            **({"dataset_weights": args.dataset_weights} if args.dataset_weights else {}),
            "augmentation": f"mirror, rotation within {ROTATION_DEGREES} degrees, zoom {ZOOM[0]}-{ZOOM[1]}, shift "
            f"within {SHIFT:.0%}; gain, contrast, gamma and speckle",
            "images": len(images),
            **({"all_images": True} if args.all_images else {"split_seed": split_seed(args)}),
        },
        **provenance(weights_path, datasets),
    }
    write_card(args.weights_dir, card)
    log.info("wrote %s", weights_path)


if __name__ == "__main__":
    main()
