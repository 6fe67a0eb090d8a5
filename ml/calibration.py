"""Temperature scaling fitted on out-of-fold logits, and the calibration error it leaves."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def fit_temperature(logits: np.ndarray, targets: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T within `bounds` minimising the negative log-likelihood of softmax(logits / T).

    Bounded, because a weak model's logits can pull an unbounded fit towards 0 or infinity.
    """
    rows = np.arange(len(targets))

    def nll(log_t: float) -> float:
        return float(-np.log(softmax(logits, np.exp(log_t))[rows, targets] + 1e-12).mean())

    result = minimize_scalar(nll, bounds=np.log(bounds), method="bounded")
    return float(np.exp(result.x))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
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
