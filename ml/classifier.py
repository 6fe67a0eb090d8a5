"""A modality's classifier at serving time: loaded once, verified, thread-safe, batch-ready."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ml.cards import read_card, verified_weights_path
from ml.decision import decide
from ml.errors import ModelUnavailable
from ml.inference import tta_logits
from ml.preprocess import InputSpec, to_batch
from ml.resnet import build_classifier


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


class Classifier:
    """Wraps one trained network (or an ensemble of them, `members` in the card) and its card.
    `predict` may be called from many threads."""

    def __init__(self, card: dict, network: torch.nn.Module) -> None:
        self.card = card
        self.classes: list[str] = list(card["classes"])
        self.spec = InputSpec.from_dict(card["input"])
        self.thresholds = {
            "screening": float(card["threshold"]["malignant"]),
            "balanced": float(card["threshold"]["balanced"]),
        }
        self.threshold = self.thresholds["screening"]
        self.reliability: dict = card["reliability"]
        self.temperature = float(card["calibration"]["temperature"])
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

    def probabilities(self, grays: Sequence[np.ndarray]) -> np.ndarray:
        """(N, classes) calibrated probabilities for grayscale images of any size."""
        logits = tta_logits(self.network, to_batch(grays, self.spec))
        probs = torch.softmax(logits.double() / self.temperature, dim=1).numpy()
        if not np.isfinite(probs).all():
            raise ModelUnavailable(f"model {self.name} produced non-finite output")
        return probs

    def predict(self, grays: Sequence[np.ndarray], operating_point: str = "screening") -> list[Prediction]:
        """Labels at the operating point's threshold: "screening" (sensitivity >= 0.95) or "balanced"."""
        threshold = self.thresholds[operating_point]
        predictions = []
        for row in self.probabilities(grays):
            probs = {name: float(p) for name, p in zip(self.classes, row)}
            predictions.append(Prediction(label=decide(probs, threshold), probabilities=probs))
        return predictions
