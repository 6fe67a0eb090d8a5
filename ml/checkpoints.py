"""Resumable training: one checkpoint per epoch, used only when the run's settings match."""
from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

import torch

from ml.cards import MODALITIES


def version_now() -> str:
    """A model version from the moment of training, UTC to the minute, so that several runs a day
    (a retrained model, a fine-tune) never share one."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y.%m.%d.%H%M")


def add_common_arguments(parser: argparse.ArgumentParser, epochs: int, size: int, batch_size: int,
                         lr: float) -> None:
    """The options every training command shares, with that command's defaults."""
    parser.add_argument("--modality", choices=MODALITIES, required=True)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"))
    parser.add_argument("--run-dir", type=Path, help="checkpoints and log")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--size", type=int, default=size, help="input side in pixels")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--version", default=version_now(), help="the model's version (default: now, UTC, YYYY.MM.DD.HHMM)")


# Options added after runs were checkpointed, with their "off" value: left out of the settings
# while off, so that those runs still resume.
LATER_OPTIONS_OFF = {"crop": 0, "init": None, "automatic_weight": 0.0, "automatic_mask_token": 0,
                     "dataset_weights": {}, "split_seed": None,
                     "all_images": False, "validated_by": None}


def settings_of(args: argparse.Namespace) -> dict[str, str]:
    """What must match for a checkpoint to be resumed: not where outputs go, the version label,
    the thread count, how often the held-out fold is logged, or the number of ensemble members
    (each member is one network's own run)."""
    ignored = ("threads", "version", "weights_dir", "run_dir", "members", "held_out_every")
    return {k: str(v) for k, v in vars(args).items()
            if k not in ignored and not (k in LATER_OPTIONS_OFF and v == LATER_OPTIONS_OFF[k])}


def save_checkpoint(path: Path, settings: dict, epoch: int, stateful: dict[str, Any], raw: dict[str, Any]) -> None:
    """`stateful`: objects with state_dict() (model, optimizer, scheduler); `raw`: plain states.
    Written beside the checkpoint, then moved over it: a run stopped while saving keeps its
    previous checkpoint whole, and resumes from it."""
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save({"settings": settings, "epoch": epoch, "raw": raw,
                    **{name: obj.state_dict() for name, obj in stateful.items()}}, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def resume(path: Path, settings: dict, stateful: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Load a matching checkpoint into `stateful`; returns (epochs done, raw states), or (0, {})."""
    if not path.exists():
        return 0, {}
    checkpoint = torch.load(path, weights_only=False)  # our own file, written by save_checkpoint
    if checkpoint["settings"] != settings:
        return 0, {}
    for name, obj in stateful.items():
        obj.load_state_dict(checkpoint[name])
    return checkpoint["epoch"], checkpoint["raw"]
