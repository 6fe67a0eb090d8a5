"""Join segmenters trained on the same images into one ensemble: one weights file and its card.

    python -m ml.segmenter.ensemble --modality ultrasound --weights-dir runs/us-ensemble/weights \
        weights runs/us-segmenter-s0-m1/weights

Each member is a finished `ml.segmenter.train` run (a folder holding the modality's segmenter
weights and card) from another random start (`--seed`) on the same split (`--split-seed`): the
same held-out fold, which no member saw, measures the ensemble, whose answer is the mean of the
members' lesion probabilities (`Segmenter`). A member may be an ensemble already: its networks join
one by one, so that one more run extends a shipped ensemble without retraining its networks
(`... --weights-dir OUT weights runs/another-start/weights`). The members' files are only read.

Members trained on every image (`ml.segmenter.train --all-images`) leave no fold to measure them:
their ensemble takes its figures from `--validated-by`, the ensemble of the same recipe on a split.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from ml.cards import SEGMENTER_MODELS, MODALITIES, provenance, write_card
from ml.checkpoints import version_now
from ml.datasets import load_samples
from ml.errors import ModelUnavailable
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import ALL_IMAGES, held_out_split, segmenter_split
from ml.segmenter.evaluate import held_out_metrics
from ml.segmenter.roi import Segmenter
from ml.segmenter.train import measured_fields, validated_fields, validation_record
from ml.train import compact_state

log = logging.getLogger("ml.segmenter.ensemble")

# What every member's card must share: an ensemble answers one way, at one input size, and is
# measured on the one fold that none of its members trained on. Their `build` may spell its
# defaults or not: the networks' weight shapes are compared instead.
SHARED_FIELDS = ("modality", "architecture", "input", "automatic_mask_token")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.segmenter.ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("members", type=Path, nargs="+", metavar="MEMBER_DIR",
                        help="folders of finished segmenter runs (weights and card), at least two")
    parser.add_argument("--modality", choices=MODALITIES, required=True)
    parser.add_argument("--weights-dir", type=Path, required=True, help="where the ensemble's weights and card go")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--version", default=version_now(), help="the ensemble's version (default: now, UTC)")
    parser.add_argument("--validated-by", type=Path, metavar="DIR",
                        help="members trained on every image: the folder of the same recipe's ensemble on a "
                        "split, whose held-out figures (and automatic_rois) the card carries")
    args = parser.parse_args(argv)
    if len(args.members) < 2:
        parser.error("an ensemble needs at least two members")
    return args


def check_members(networks: list[Sam], cards: list[dict]) -> int | str:
    """The split seed all members share (ALL_IMAGES when none held a fold out); SystemExit
    naming what differs otherwise."""
    shapes = [{key: value.shape for key, value in network.state_dict().items()} for network in networks]
    if any(shape != shapes[0] for shape in shapes[1:]):
        raise SystemExit("members differ in their networks' weight shapes (e.g. --encoder-widths)")
    first = cards[0]
    for card in cards[1:]:
        for field in SHARED_FIELDS:
            if card.get(field) != first.get(field):
                raise SystemExit(f"members differ in {field}: {first.get(field)!r} and {card.get(field)!r}")
    seeds = {held_out_split(card) for card in cards}
    if None in seeds:
        raise SystemExit("a member's card does not say which split it trained on (training.split_seed)")
    if len(seeds) > 1:
        raise SystemExit(f"members trained on different splits (split seeds {sorted(seeds, key=str)}): "
                         "one held out what another trained on")
    hashes = [record["sha256"] for card in cards for record in member_records(card)]
    twice = sorted({sha256 for sha256 in hashes if hashes.count(sha256) > 1})
    if twice:
        raise SystemExit(f"a network would join twice (sha256 {', '.join(twice)}): each member must be another run")
    return seeds.pop()


def member_records(card: dict) -> list[dict]:
    """What an ensemble's card records of each network a member folder brings: the networks an
    ensemble member records itself, or the one a training run's card describes."""
    if card.get("members", 1) > 1:
        return card["training"]["members"]
    return [{"version": card["version"], "sha256": card["sha256"], "command": card["training"]["command"]}]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    name = SEGMENTER_MODELS[args.modality]
    loaded = []
    for directory in args.members:
        try:
            loaded.append(load_carded_segmenter(directory, name))
        except ModelUnavailable as error:  # a missing or tampered member: nothing is written
            raise SystemExit(f"member {directory}: {error}") from None
    cards = [card for _, card in loaded]
    networks = [network for models, _ in loaded for network in models]
    split_seed = check_members(networks, cards)
    samples = load_samples(args.data_root, args.modality)
    all_images = split_seed == ALL_IMAGES
    if all_images != (args.validated_by is not None):
        raise SystemExit("members trained on every image need --validated-by (their recipe's ensemble on a "
                         "split), and only they take it: members that held a fold out are measured on it")
    if all_images:
        validated = validation_record(args.validated_by, name)
        if validated.get("members", 1) != len(networks):
            raise SystemExit(f"--validated-by {args.validated_by} holds {validated.get('members', 1)} networks, "
                             f"these members {len(networks)}: it must validate the same ensemble's recipe")
        measured = validated_fields(validated)
    else:
        segmenter = Segmenter.for_card(networks, cards[0])
        measured = measured_fields(
            held_out_metrics(segmenter, segmenter_split(samples, split_seed)[1]),
            f"validation on fold 0 of the 5-fold split of seed {split_seed} grouped by patient/near-duplicate "
            "group, which no member trained on; each member is trained on the other four folds")

    args.weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = args.weights_dir / f"{name}.pt"
    torch.save({f"members.{i}.{key}": value for i, network in enumerate(networks)
                for key, value in compact_state(network).items()}, weights_path)
    first = cards[0]
    card = {
        "name": name,
        "version": args.version,
        **{field: first[field] for field in ("build", *SHARED_FIELDS) if field in first},
        "members": len(networks),
        **measured,
        "training": {
            "from_scratch": all(card["training"].get("from_scratch") for card in cards),
            "command": f"python -m ml.segmenter.ensemble --modality {args.modality} "
            + " ".join(str(directory) for directory in args.members)
            + (f" --validated-by {args.validated_by}" if all_images else ""),
            "ensemble": f"{len(networks)} networks from different random starts on the same images; "
            "the answer is the mean of their lesion probabilities",
            **({"all_images": True} if all_images else {"split_seed": split_seed}),
            "members": [record for card in cards for record in member_records(card)],
        },
        **provenance(weights_path, sorted({s.dataset for s in samples})),
    }
    write_card(args.weights_dir, card)
    log.info("wrote %s: auto dice %s, box dice %s", weights_path, measured["metrics"]["auto"]["dice"],
             measured["metrics"]["box"]["dice"])


if __name__ == "__main__":
    main()
