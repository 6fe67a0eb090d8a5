"""Classification metrics shared by training (model cards) and `ml.evaluate`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from ml.decision import MALIGNANT, NORMAL, decide

SCREENING_SENSITIVITY = 0.95  # the shipped malignancy threshold's goal, on held-out predictions


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    if positive.all() or not positive.any():
        return None
    return round(float(roc_auc_score(positive, score)), 4)


def screening_threshold(is_malignant: np.ndarray, p_malignant: np.ndarray, sensitivity: float) -> float:
    """The highest threshold on p(malignant) whose sensitivity reaches `sensitivity`."""
    fpr, tpr, thresholds = roc_curve(is_malignant, p_malignant)
    reaching = np.flatnonzero(tpr >= sensitivity)
    return float(min(1.0, thresholds[reaching[0]]))


def balanced_threshold(is_malignant: np.ndarray, p_malignant: np.ndarray) -> float:
    """The threshold on p(malignant) maximising sensitivity + specificity (Youden's J)."""
    fpr, tpr, thresholds = roc_curve(is_malignant, p_malignant)
    return float(min(1.0, thresholds[np.argmax(tpr - fpr)]))


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
    benign_or_malignant = np.isin(labels, ["benign", MALIGNANT])
    auc_lesion = None
    if NORMAL in classes and (labels == NORMAL).any():
        auc_lesion = _auc(labels != NORMAL, 1.0 - probs[:, classes.index(NORMAL)])
    positives, negatives = int(is_malignant.sum()), int((~is_malignant).sum())
    return {
        "n": int(len(labels)),
        "auc_malignant": _auc(is_malignant, p_malignant),
        "auc_malignant_vs_benign": _auc(is_malignant[benign_or_malignant], p_malignant[benign_or_malignant]),
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


def _binary_stats(is_malignant: np.ndarray, p_malignant: np.ndarray, threshold: float) -> dict:
    flagged = p_malignant >= threshold
    positives, negatives = is_malignant.sum(), (~is_malignant).sum()
    return {
        "auc_malignant": roc_auc_score(is_malignant, p_malignant) if 0 < positives < len(is_malignant) else np.nan,
        "sensitivity": (flagged & is_malignant).sum() / positives if positives else np.nan,
        "specificity": (~flagged & ~is_malignant).sum() / negatives if negatives else np.nan,
    }


def bootstrap_intervals(
    labels: Sequence[str], p_malignant: np.ndarray, groups: Sequence[str], threshold: float,
    resamples: int = 1000, seed: int = 0,
) -> dict:
    """95% percentile intervals for AUC, sensitivity and specificity (malignant vs the rest).

    Whole groups (a woman, or near-duplicate frames) are resampled, not single images, so that
    correlated images do not narrow the interval.
    """
    is_malignant = np.asarray(labels) == MALIGNANT
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"auc_malignant": [], "sensitivity": [], "specificity": []}
    for _ in range(resamples):
        picked = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        for name, value in _binary_stats(is_malignant[picked], p_malignant[picked], threshold).items():
            draws[name].append(value)
    return {
        name: [round(float(np.nanpercentile(values, 2.5)), 4), round(float(np.nanpercentile(values, 97.5)), 4)]
        for name, values in draws.items()
    }


def _paired_aucs(labels: np.ndarray, probs: np.ndarray, classes: list[str], with_normals: bool) -> dict[str, float]:
    malignant, lesion = labels == MALIGNANT, labels != NORMAL
    p_malignant = probs[:, classes.index(MALIGNANT)]
    aucs = {"malignant_vs_benign": roc_auc_score(malignant[lesion], p_malignant[lesion]),
            "malignant_vs_rest": roc_auc_score(malignant, p_malignant)}
    if with_normals:
        aucs["lesion_vs_normal"] = roc_auc_score(lesion, 1.0 - probs[:, classes.index(NORMAL)])
    return aucs


def paired_auc_difference(labels: Sequence[str], groups: Sequence[str], probs_a: np.ndarray, probs_b: np.ndarray,
                          classes: Sequence[str], resamples: int = 1000, seed: int = 0) -> dict:
    """Two predictions (N, classes) for the same images (two models, or one model on two versions
    of each image): each one's AUC, malignant vs benign and vs the rest, and lesion vs normal when
    there are normal images, and the difference B - A with a 95% interval from a paired bootstrap
    over whole groups."""
    labels, groups, classes = np.asarray(labels), np.asarray(groups), list(classes)
    with_normals = bool((labels == NORMAL).any())
    a, b = _paired_aucs(labels, probs_a, classes, with_normals), _paired_aucs(labels, probs_b, classes, with_normals)
    unique = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in unique}
    rng = np.random.default_rng(seed)
    differences: dict[str, list[float]] = {name: [] for name in a}
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.choice(unique, len(unique))])
        drawn = set(labels[idx])
        if MALIGNANT not in drawn or len(drawn - {NORMAL}) < 2 or (with_normals and NORMAL not in drawn):
            continue
        resampled_a = _paired_aucs(labels[idx], probs_a[idx], classes, with_normals)
        resampled_b = _paired_aucs(labels[idx], probs_b[idx], classes, with_normals)
        for name, values in differences.items():
            values.append(resampled_b[name] - resampled_a[name])
    return {name: {"a": round(a[name], 4), "b": round(b[name], 4), "b_minus_a": round(b[name] - a[name], 4),
                   "ci95": [round(float(q), 4) for q in np.percentile(values, [2.5, 97.5])] if values else None}
            for name, values in differences.items()}


def paired_mean_difference(groups: np.ndarray, a: np.ndarray, b: np.ndarray,
                           resamples: int = 1000, seed: int = 0) -> dict:
    """The mean of `b` minus that of `a`, two scores of the same items (e.g. per-image Dice of two
    segmenters), with a 95% percentile interval from resampling whole `groups`."""
    unique = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in unique}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.choice(unique, len(unique))])
        draws.append(b[idx].mean() - a[idx].mean())
    return {"n": len(a), "a": round(float(a.mean()), 4), "b": round(float(b.mean()), 4),
            "b_minus_a": round(float(b.mean() - a.mean()), 4),
            "ci95": [round(float(np.percentile(draws, 2.5)), 4), round(float(np.percentile(draws, 97.5)), 4)]}
