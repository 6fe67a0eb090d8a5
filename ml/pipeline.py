"""One upload, start to end: bytes -> checked image -> classification -> a plain `Analysis`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ml.cards import MODALITY_MODELS
from ml.classifier import Classifier
from ml.errors import FeatureUnavailable, ModelUnavailable, UnsupportedModality
from ml.images import DecodedImage, decode


@dataclass(frozen=True)
class Analysis:
    """What the pipeline found, as plain Python values; the HTTP layer stores and renders it."""

    modality: str
    label: str
    probabilities: dict[str, float]
    threshold: float
    model_name: str
    model_version: str
    image: DecodedImage
    stage_ms: dict[str, float]


class Analyzer:
    """Holds one classifier per modality, loaded once per process."""

    def __init__(self, classifiers: dict[str, Classifier]) -> None:
        self.classifiers = classifiers

    @classmethod
    def from_weights(cls, weights_dir: Path) -> "Analyzer":
        return cls({m: Classifier.load(weights_dir, name) for m, name in MODALITY_MODELS.items()})

    def model_cards(self) -> list[dict]:
        return [classifier.card for classifier in self.classifiers.values()]

    def analyse(self, data: bytes, modality: str, extract_roi: bool = False) -> Analysis:
        """Decode and classify one image. Raises an `MLError`; a failure is never a result."""
        if modality not in self.classifiers:
            raise UnsupportedModality(
                f"modality must be one of {sorted(self.classifiers)}, not {modality!r}"
            )
        if extract_roi:
            raise FeatureUnavailable("ROI extraction is not available in this version of the service")
        classifier = self.classifiers[modality]
        started = time.perf_counter()
        image = decode(data)
        decoded = time.perf_counter()
        try:
            (prediction,) = classifier.predict([image.gray])
        except ModelUnavailable:
            raise
        except Exception as error:  # a model failure must surface as an error, never a label
            raise ModelUnavailable(f"model {classifier.name} failed: {error}") from error
        classified = time.perf_counter()
        return Analysis(
            modality=modality,
            label=prediction.label,
            probabilities=prediction.probabilities,
            threshold=classifier.threshold,
            model_name=classifier.name,
            model_version=classifier.version,
            image=image,
            stage_ms={
                "decode": round((decoded - started) * 1000, 2),
                "classify": round((classified - decoded) * 1000, 2),
            },
        )
