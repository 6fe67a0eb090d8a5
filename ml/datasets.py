"""Folders laid out like ../shared/data/<set>: a labels.csv whose paths are relative to it."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.model_selection import StratifiedGroupKFold

from ml.images import decode

# Which data sets train which modality's model, and the classes every model predicts.
MODALITY_SETS = {"ultrasound": ("busbra", "busi"), "mammography": ("mias",)}
CLASSES = ["normal", "benign", "malignant"]


@dataclass(frozen=True)
class Circle:
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    group: str  # one woman / near-duplicate frames; never split across folds
    dataset: str
    excluded: bool = False  # e.g. BUSI images whose group carries conflicting labels
    masks: tuple[Path, ...] = ()  # lesion outlines (ultrasound)
    circles: tuple[Circle, ...] = ()  # lesion circles (mini-MIAS)

    @property
    def has_outline(self) -> bool:
        """Whether the lesion area is known: drawn, circled, or known to be empty (normal)."""
        return bool(self.masks or self.circles) or self.label == "normal"


def _circles(field: str) -> tuple[Circle, ...]:
    """mini-MIAS `CLASS:severity:x,y,r;...`; calcification clusters without a circle are skipped."""
    circles = []
    for lesion in filter(None, (field or "").split(";")):
        parts = lesion.split(":")
        if len(parts) == 3 and parts[2]:
            x, y, radius = (float(v) for v in parts[2].split(","))
            circles.append(Circle(x, y, radius))
    return tuple(circles)


def read_folder(folder: Path) -> list[Sample]:
    """Samples listed in `folder/labels.csv` (`image`, `label`; `group` or `patient` if present).

    A spreadsheet's byte-order mark and blanks around column names and values are ignored, so a
    `group` saved once as "p7" and once as "p7 " stays one woman. A row without an image or with a
    label other than normal, benign or malignant (any case) is refused, naming its line: a folder
    read for training or judging never loses a row silently."""
    folder = Path(folder)
    samples = []
    with open(folder / "labels.csv", newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        if not {"image", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{folder / 'labels.csv'} needs the columns image and label; it has {reader.fieldnames}")
        for index, row in enumerate(reader):
            image, label = (row["image"] or "").strip(), (row["label"] or "").strip().lower()
            if not image or label not in CLASSES:
                # line numbers as a spreadsheet shows them: the header is line 1
                raise ValueError(f"{folder / 'labels.csv'} line {reader.line_num}: "
                                 + (f"label {label!r} is not one of {', '.join(CLASSES)}" if image else "no image"))
            group = (row.get("group") or "").strip() or (row.get("patient") or "").strip() or f"row{index}"
            samples.append(
                Sample(
                    path=folder / image,
                    label=label,
                    group=f"{folder.name}:{group}",
                    dataset=folder.name,
                    excluded=(row.get("label_conflict") or "0").strip() == "1",
                    masks=tuple(folder / m.strip() for m in (row.get("masks") or "").split(";") if m.strip()),
                    circles=_circles(row.get("lesions", "")),
                )
            )
    return samples


def load_gray(path: Path) -> np.ndarray:
    """Read a training image exactly as the service decodes an upload."""
    return decode(Path(path).read_bytes()).gray


def lesion_mask(sample: Sample, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 mask, 255 inside any lesion outline or circle of the sample, else 0.

    Each mask file is binarised at half its own largest value, so that masks saved as 0/1 (as many
    data sets ship them) or 0/65535 count as much as our 0/255 ones; an all-zero mask adds nothing."""
    mask = Image.new("L", (shape[1], shape[0]), 0)
    for path in sample.masks:
        with Image.open(path) as outline:
            values = np.asarray(outline.convert("L").resize(mask.size, Image.Resampling.NEAREST))
        if values.any():
            mask.paste(255, mask=Image.fromarray(np.where(values > values.max() / 2, 255, 0).astype(np.uint8)))
    draw = ImageDraw.Draw(mask)
    for c in sample.circles:
        draw.ellipse((c.x - c.radius, c.y - c.radius, c.x + c.radius, c.y + c.radius), fill=255)
    return np.asarray(mask, dtype=np.uint8)


def load_samples(data_root: Path, modality: str) -> list[Sample]:
    samples = []
    for name in MODALITY_SETS[modality]:
        samples += [s for s in read_folder(data_root / name) if not s.excluded]
    return [s for s in samples if s.label in CLASSES]


def grouped_folds(samples: list[Sample], folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) index pairs; a group never appears on both sides of one pair."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    strata = [f"{s.dataset}:{s.label}" for s in samples]
    return list(splitter.split(np.zeros(len(samples)), strata, [s.group for s in samples]))
