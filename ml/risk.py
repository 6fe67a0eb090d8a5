"""Risk stated as radiologists read it: a BI-RADS-like category from the calibrated probability.

The ranges are the ACR BI-RADS likelihoods of malignancy for assessment categories 3 to 5. The
category is derived from a model's probability alone, so it is an aid to, never a substitute
for, a radiologist's assessment of the whole examination.
"""
from __future__ import annotations

from dataclasses import dataclass

CAUTION = ("Model-derived category for decision support, not a BI-RADS assessment: it must be "
           "confirmed by a radiologist reading the whole examination.")


@dataclass(frozen=True)
class RiskCategory:
    category: str
    likelihood: str  # the ACR range of the likelihood of malignancy
    caution: str = CAUTION


def birads_category(p_malignant: float) -> RiskCategory:
    """3: <= 2%, 4A: > 2% to <= 10%, 4B: > 10% to <= 50%, 4C: > 50% to < 95%, 5: >= 95%."""
    if p_malignant <= 0.02:
        return RiskCategory("3", "<= 2%")
    if p_malignant <= 0.10:
        return RiskCategory("4A", "> 2% to <= 10%")
    if p_malignant <= 0.50:
        return RiskCategory("4B", "> 10% to <= 50%")
    if p_malignant < 0.95:
        return RiskCategory("4C", "> 50% to < 95%")
    return RiskCategory("5", ">= 95%")
