"""Calibration fitted on held-out logits, and the calibration error it leaves."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class Calibrator:
    """Probabilities softmax(logits / temperature + bias): temperature scaling with a bias per class.

    The temperature fixes a model that is over- or under-confident; the biases fix one whose
    probabilities are shifted, which a temperature cannot. A mammogram read by its most suspicious
    window looks more suspicious than it is: out of fold, temperature scaling alone left an expected
    calibration error of 0.17 for malignancy, the biases fitted on the other folds 0.03. `bias` is
    empty for temperature scaling alone (cards from before the biases, or a fit that lacked a class)."""

    temperature: float
    bias: tuple[float, ...] = ()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits / self.temperature + (np.asarray(self.bias) if self.bias else 0.0))

    def to_dict(self) -> dict:
        return {"temperature": round(self.temperature, 4),
                **({"class_bias": [round(b, 4) for b in self.bias]} if self.bias else {})}

    @classmethod
    def from_dict(cls, section: dict) -> "Calibrator":
        """From a card's `calibration` section (or a cross_validation.json's)."""
        return cls(float(section["temperature"]), tuple(float(b) for b in section.get("class_bias", ())))

    @property
    def method(self) -> str:
        return "temperature scaling with a bias per class" if self.bias else "temperature scaling"


def fit_calibrator(logits: np.ndarray, targets: np.ndarray) -> Calibrator:
    """The temperature (within TEMPERATURE_BOUNDS) and class biases minimising the negative
    log-likelihood of the targets. The biases are fitted only when every class occurs among the
    targets (an absent class would take a bias of minus infinity), else the temperature alone.

    Bounded, because a weak model's logits can pull an unbounded temperature towards 0 or infinity.
    The likelihood is convex in (1 / temperature, biases), so the fit finds its one minimum; the
    first class's bias stays 0 (a bias common to all classes changes nothing)."""
    classes = logits.shape[1]
    rows = np.arange(len(targets))
    with_bias = len(np.unique(targets)) == classes

    def nll(params: np.ndarray) -> float:
        bias = np.concatenate([[0.0], params[1:]]) if with_bias else 0.0
        return float(-np.log(softmax(logits * params[0] + bias)[rows, targets] + 1e-12).mean())

    low, high = TEMPERATURE_BOUNDS
    start = np.concatenate([[1.0], np.zeros(classes - 1 if with_bias else 0)])
    bounds = [(1 / high, 1 / low)] + [(None, None)] * (len(start) - 1)
    result = minimize(nll, start, method="L-BFGS-B", bounds=bounds)
    bias = (0.0, *map(float, result.x[1:])) if with_bias else ()
    return Calibrator(float(1 / result.x[0]), bias)


def softmax(logits: np.ndarray) -> np.ndarray:
    scaled = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def expected_calibration_error(is_positive: np.ndarray, probability: np.ndarray, bins: int = 10) -> float:
    """ECE of a binary probability over equal-width bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(probability[inside].mean() - is_positive[inside].mean())
    return round(float(error), 4)
