"""A modality's classifier at serving time: loaded once, verified, thread-safe, batch-ready."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ml.calibration import Calibrator
from ml.cards import read_card, verified_weights_path
from ml.decision import decide
from ml.errors import FeatureUnavailable, ModelUnavailable
from ml.inference import tta_logits
from ml.preprocess import InputSpec, to_batch
from ml.resnet import build_classifier
from ml.roi_classification import context_crop


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


@dataclass(frozen=True)
class Calibration:
    """The probabilities' calibration and the malignancy threshold of each operating point, from a
    card (or its `roi_classification` section)."""

    calibrator: Calibrator
    thresholds: dict[str, float]  # "screening" (sensitivity >= 0.95) and "balanced"

    @classmethod
    def from_card(cls, section: dict) -> Calibration:
        return cls(Calibrator.from_dict(section["calibration"]),
                   {"screening": float(section["threshold"]["malignant"]),
                    "balanced": float(section["threshold"]["balanced"])})


class Classifier:
    """Wraps one trained network (or an ensemble of them, `members` in the card) and its card.
    Whole images and ROI crops each have their own calibration (ml.roi_classification).
    `predict` may be called from many threads."""

    def __init__(self, card: dict, network: torch.nn.Module) -> None:
        self.card = card
        self.classes: list[str] = list(card["classes"])
        self.spec = InputSpec.from_dict(card["input"])
        self.image_calibration = Calibration.from_card(card)
        self.thresholds = self.image_calibration.thresholds
        self.threshold = self.thresholds["screening"]
        roi = card.get("roi_classification")
        self.roi_calibration = Calibration.from_card(roi) if roi else None
        self.roi_margin: float | None = float(roi["context_margin"]) if roi else None
        self.reliability: dict = card["reliability"]
        self.network = network.eval()

    @classmethod
    def load(cls, weights_dir: Path, name: str) -> "Classifier":
        card = read_card(weights_dir, name)
        path = verified_weights_path(weights_dir, card)
        network = build_classifier(card["architecture"], len(card["classes"]), card.get("members", 1))
        # weights_only: the file is read as tensors alone, never as arbitrary pickled objects.
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict({key: value.float() for key, value in state.items()})
        return cls(card, network)

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def version(self) -> str:
        return self.card["version"]

    def probabilities(self, grays: Sequence[np.ndarray], calibration: Calibration | None = None) -> np.ndarray:
        """(N, classes) calibrated probabilities for grayscale images of any size (whole images
        unless another `calibration` is given)."""
        calibration = calibration or self.image_calibration
        logits = tta_logits(self.network, to_batch(grays, self.spec), self.spec)
        probs = calibration.calibrator.probabilities(logits.double().numpy())
        if not np.isfinite(probs).all():
            raise ModelUnavailable(f"model {self.name} produced non-finite output")
        return probs

    def predict(self, grays: Sequence[np.ndarray], operating_point: str = "screening") -> list[Prediction]:
        """Labels of whole images at the operating point's threshold: "screening" (sensitivity
        >= 0.95) or "balanced"."""
        return self._predictions(self.probabilities(grays), self.thresholds[operating_point])

    def roi_crop(self, gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """What the classifier sees of an ROI: its box with the context the card's calibration was fitted at."""
        if self.roi_margin is None:
            raise FeatureUnavailable(f"model {self.name} has no ROI calibration (its card lacks roi_classification; "
                                     "python -m ml.roi_classification fits it)")
        return context_crop(gray, box, self.roi_margin)

    def predict_rois(self, crops: Sequence[np.ndarray], operating_point: str = "screening") -> list[Prediction]:
        """Labels of ROI crops (`roi_crop`), with the calibration and thresholds fitted on crops."""
        if self.roi_calibration is None:
            raise FeatureUnavailable(f"model {self.name} has no ROI calibration")
        if not crops:
            return []
        return self._predictions(self.probabilities(crops, self.roi_calibration),
                                 self.roi_calibration.thresholds[operating_point])

    def _predictions(self, rows: np.ndarray, threshold: float) -> list[Prediction]:
        predictions = []
        for row in rows:
            probs = {name: float(p) for name, p in zip(self.classes, row)}
            predictions.append(Prediction(label=decide(probs, threshold), probabilities=probs))
        return predictions
