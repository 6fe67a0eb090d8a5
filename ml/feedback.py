"""Clinicians' feedback as a training data set, laid out like ../shared/data/<set>.

    python -m ml.feedback export DIR [--data-dir DIR] [--modality ultrasound|mammography]

DIR gets `images/<group>.png` (the analysed image as stored), `masks/<group>_mask.png` (the lesions
the clinician marked as missed, as lesion masks), `ignore/<group>_ignore.png` (the regions the model
should not have used, kept apart: they are not lesions) and `labels.csv`: `image, label, masks,
group` as in the shared data sets, plus `ignore_masks`, `source` (`feedback`), `modality`,
`analysis_id`, `feedback_version`, `feedback_at`, `width` and `height`. `ml.datasets.read_folder`
reads it like any other set, so `python -m ml.train --fine-tune ... --extra DIR` trains on it.

What is exported: one row per image. An analysis and its reruns (`rerun_of`) share one image and
one `group`, the first analysis' id, so that a split never puts one image on both sides; when
several of them have feedback, the newest feedback gives the label, and each mask kind comes from
the newest feedback version that carries one (a later version that only corrects the label keeps
the masks drawn before). Soft-deleted analyses,
owners and comments (free text, which may name a patient) are never exported. The service has no
notion of a patient: an analysis is the finest grouping it can vouch for.

Layering: `FeedbackItem`, `items_from_records` and `write_dataset` work on plain data and know
nothing of Flask or of any store. Only the command line meets the HTTP layer's package: it opens the
service's configured store with `api.store.open_store` (which needs no Flask app), imported inside
`main`, so that importing this module imports no Flask, and the store's own configuration, not a
second copy of it here, decides which store and folder are read.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ml.cards import MODALITIES
from ml.images import decode

COLUMNS = ["image", "label", "masks", "group", "ignore_masks", "source", "modality", "analysis_id",
           "feedback_version", "feedback_at", "width", "height"]
SOURCE = "feedback"


@dataclass(frozen=True)
class FeedbackItem:
    """One analysis' feedback, as plain data: the image and the masks are PNG bytes."""

    analysis_id: str
    group: str  # the first analysis of the image (a rerun's `rerun_of`)
    modality: str
    label: str  # the clinician's label: normal, benign or malignant
    version: int  # the feedback version the label comes from
    created_at: str  # ISO 8601 UTC, of that version
    image_png: bytes
    lesion_png: bytes | None = None  # missed lesions
    ignore_png: bytes | None = None  # regions the model should not have used


def _newest_mask(feedback: list[dict], kind: str) -> str | None:
    for entry in reversed(feedback):
        if kind in entry.get("masks", {}):
            return entry["masks"][kind]
    return None


def items_from_records(records: Iterable[tuple[str, dict]],
                       read_image: Callable[[str, str, str], bytes | None]) -> Iterator[FeedbackItem]:
    """(owner, stored record with its `feedback`) pairs -> items; `read_image(owner, analysis id,
    name)` reads a stored image. Records without feedback, or whose image is gone, are skipped."""
    for owner, record in records:
        feedback = record.get("feedback") or []
        if not feedback:
            continue
        image = read_image(owner, record["id"], "original.png")
        if image is None:
            continue
        masks = {}
        for kind in ("missed_lesions", "ignore_regions"):
            name = _newest_mask(feedback, kind)
            masks[kind] = read_image(owner, record["id"], name) if name else None
        latest = feedback[-1]
        yield FeedbackItem(
            analysis_id=record["id"], group=record.get("rerun_of") or record["id"], modality=record["modality"],
            label=latest["label"], version=latest["version"], created_at=latest["created_at"], image_png=image,
            lesion_png=masks["missed_lesions"], ignore_png=masks["ignore_regions"],
        )


def _merged(members: list[FeedbackItem]) -> FeedbackItem:
    """One row for an image's analyses (oldest first): the newest label, the newest mask of each kind."""
    lesion = next((m.lesion_png for m in reversed(members) if m.lesion_png is not None), None)
    ignore = next((m.ignore_png for m in reversed(members) if m.ignore_png is not None), None)
    return replace(members[-1], lesion_png=lesion, ignore_png=ignore)


def write_dataset(items: Iterable[FeedbackItem], folder: Path) -> dict:
    """Write the items as a data set into `folder` (absent or empty), all at once: the files are
    written into a hidden sibling folder first and renamed into place, so that a failure leaves no
    half-written data set. Returns a summary (counts)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder; nothing was written")
    groups: dict[str, list[FeedbackItem]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    newest = {group: _merged(sorted(members, key=lambda m: m.created_at)) for group, members in groups.items()}
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for sub in ("images", "masks", "ignore"):
            (staging / sub).mkdir(parents=True)
        rows = []
        for group, item in sorted(newest.items(), key=lambda pair: pair[1].created_at):
            gray = decode(item.image_png).gray
            row = {
                "image": f"images/{group}.png", "label": item.label, "masks": "", "group": group,
                "ignore_masks": "", "source": SOURCE, "modality": item.modality, "analysis_id": item.analysis_id,
                "feedback_version": item.version, "feedback_at": item.created_at,
                "width": gray.shape[1], "height": gray.shape[0],
            }
            (staging / row["image"]).write_bytes(item.image_png)
            if item.lesion_png is not None:
                row["masks"] = f"masks/{group}_mask.png"
                (staging / row["masks"]).write_bytes(item.lesion_png)
            if item.ignore_png is not None:
                row["ignore_masks"] = f"ignore/{group}_ignore.png"
                (staging / row["ignore_masks"]).write_bytes(item.ignore_png)
            rows.append(row)
        with open(staging / "labels.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if folder.exists():
            folder.rmdir()  # empty, checked above
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "dir": str(folder), "images": len(rows),
        "lesion_masks": sum(1 for r in rows if r["masks"]), "ignore_masks": sum(1 for r in rows if r["ignore_masks"]),
        "labels": dict(Counter(r["label"] for r in rows)), "modalities": dict(Counter(r["modality"] for r in rows)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml.feedback", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write all stored feedback as a data set into DIR")
    export.add_argument("dir", type=Path, metavar="DIR", help="output folder (absent or empty)")
    export.add_argument("--data-dir", type=Path,
                        help="the service's store folder (default: BRANET_DATA_DIR, else ./instance, as the service)")
    export.add_argument("--modality", choices=MODALITIES, help="only this modality's feedback (default: all)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The composition root: the service's configuration and store, without a Flask app (see above).
    from api.config import from_environment
    from api.store import StoreError, open_store

    config = from_environment()
    if args.data_dir is not None:
        config["DATA_DIR"] = args.data_dir
    embedded = config.get("STORE", "sqlite") == "sqlite"
    if embedded and not Path(config["DATA_DIR"]).is_dir():  # rather than create an empty store there
        print(f"error: no store at {config['DATA_DIR']} (give --data-dir or set BRANET_DATA_DIR)", file=sys.stderr)
        return 2
    store = open_store(config)
    try:
        summary = write_dataset(items_from_records(store.feedback_records(args.modality), store.read_image), args.dir)
    except (FileExistsError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
