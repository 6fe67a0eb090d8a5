"""Classification metrics shared by training (model cards) and `ml.evaluate`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from ml.decision import MALIGNANT, NORMAL, decide



def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    if positive.all() or not positive.any():
        return None
    return round(float(roc_auc_score(positive, score)), 4)


def screening_threshold(is_malignant: np.ndarray, p_malignant: np.ndarray, sensitivity: float) -> float:
    """The highest threshold on p(malignant) whose sensitivity reaches `sensitivity`."""
    fpr, tpr, thresholds = roc_curve(is_malignant, p_malignant)
    reaching = np.flatnonzero(tpr >= sensitivity)
    return float(min(1.0, thresholds[reaching[0]]))


def report(labels: Sequence[str], probs: np.ndarray, classes: Sequence[str], threshold: float) -> dict:
    """`n`, AUCs, and accuracy/sensitivity/specificity for malignancy at `threshold`."""
    classes = list(classes)
    labels = np.asarray(labels)
    is_malignant = labels == MALIGNANT
    p_malignant = probs[:, classes.index(MALIGNANT)]
    predicted = np.array(
        [decide(dict(zip(classes, row)), threshold) for row in probs], dtype=object
    )
    flagged = predicted == MALIGNANT
    auc_lesion = None
    if NORMAL in classes and (labels == NORMAL).any():
        auc_lesion = _auc(labels != NORMAL, 1.0 - probs[:, classes.index(NORMAL)])
    positives, negatives = int(is_malignant.sum()), int((~is_malignant).sum())
    return {
        "n": int(len(labels)),
        "auc_malignant": _auc(is_malignant, p_malignant),
        "auc_lesion": auc_lesion,
        "accuracy": round(float((predicted == labels).mean()), 4),
        "sensitivity": round(float((flagged & is_malignant).sum() / positives), 4) if positives else None,
        "specificity": round(float((~flagged & ~is_malignant).sum() / negatives), 4) if negatives else None,
        "threshold": round(float(threshold), 6),
        "confusion": {
            "classes": classes,
            "matrix": confusion_matrix(labels, predicted.astype(str), labels=classes).tolist(),
        },
    }
