"""Folders laid out like ../shared/data/<set>: a labels.csv whose paths are relative to it."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.images import decode

# Which data sets train which modality's model.
MODALITY_SETS = {"ultrasound": ("busbra", "busi"), "mammography": ("mias",)}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    group: str  # one woman / near-duplicate frames; never split across folds
    dataset: str
    excluded: bool = False  # e.g. BUSI images whose group carries conflicting labels


def read_folder(folder: Path) -> list[Sample]:
    """Samples listed in `folder/labels.csv` (`image`, `label`; `group` or `patient` if present)."""
    folder = Path(folder)
    samples = []
    with open(folder / "labels.csv", newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            group = row.get("group") or row.get("patient") or f"row{index}"
            samples.append(
                Sample(
                    path=folder / row["image"],
                    label=row["label"].strip().lower(),
                    group=f"{folder.name}:{group}",
                    dataset=folder.name,
                    excluded=row.get("label_conflict", "0") == "1",
                )
            )
    return samples


def load_gray(path: Path) -> np.ndarray:
    """Read a training image exactly as the service decodes an upload."""
    return decode(Path(path).read_bytes()).gray
