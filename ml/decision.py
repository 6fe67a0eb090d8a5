"""The decision rule that turns class probabilities into a label, shared by serving and metrics."""
from __future__ import annotations

MALIGNANT = "malignant"
NORMAL = "normal"


def decide(probabilities: dict[str, float], threshold: float) -> str:
    """Malignant when its probability reaches the shipped threshold, else the likelier other class.

    The threshold is set for screening (high sensitivity), so it is usually well below 0.5.
    """
    if probabilities[MALIGNANT] >= threshold:
        return MALIGNANT
    others = {name: p for name, p in probabilities.items() if name != MALIGNANT}
    return max(others, key=others.get)
