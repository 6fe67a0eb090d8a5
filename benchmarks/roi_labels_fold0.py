"""Automatic ROIs' labels on fold 0's held-out images, and what they do to the image's label.

The shipped segmenter's recipe validated on split 0 (`weights/split0`, trained without fold 0) finds the ROIs of each held-out image; fold 0's
classifier (calibrated as in cross-validation) labels the image and each ROI, at the screening
threshold; the image is malignant when it or any of its ROIs is, as in an analysis. ROIs are
labelled two ways:
- "before": the ROI's box grown by 15% on each side, with the whole image's calibration and threshold;
- "after": the context, calibration and thresholds of `ml.roi_classification`, fitted here on the
  held-out crops of folds 1-4 only, so that nothing is fitted on fold 0.

    PYTHONPATH=. python benchmarks/roi_labels_fold0.py   # after python -m ml.roi_classification (its fold caches)
"""
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from ml.cards import read_card
from ml.classifier import Classifier
from ml.datasets import lesion_mask, load_gray, load_samples
from ml.preprocess import InputSpec
from ml.roi_classification import fit_roi_classification, out_of_fold_crops
from ml.segmenter.build import load_carded_segmenter
from ml.segmenter.data import held_out_samples
from ml.segmenter.roi import Segmenter
from ml.train import fold_network

RUN = Path("runs/ultrasound-os16")
weights = Path("weights")
card = read_card(weights, "branet-us-resnet18")
members = card.get("members", 1)
samples = load_samples(Path("../shared/data"), "ultrasound")
cv = json.loads((RUN / "cross_validation.json").read_text())
fitted = fit_roi_classification(out_of_fold_crops(RUN, samples, InputSpec.from_dict(card["input"]), members, [1, 2, 3, 4]),
                                "folds 1-4's held-out images")
card = {**card, "calibration": cv["calibration"],
        "threshold": {"malignant": cv["threshold"], "balanced": cv["balanced_threshold"]}, "roi_classification": fitted}
network = fold_network(RUN / "fold0", members)
classifier = Classifier(card, network)
# before: the tight crop, read as a whole image
tight = Classifier({**card, "roi_classification": {"context_margin": 0.15, "calibration": card["calibration"],
                                                   "threshold": card["threshold"]}}, network)
segmenter_networks, segmenter_card = load_carded_segmenter(weights / "split0", "branet-us-sam-small")
held_out_samples(samples, 0, [segmenter_card])  # refuses a segmenter that trained on fold 0
segmenter = Segmenter.for_card(segmenter_networks, segmenter_card)
held_out = np.load(RUN / "fold0" / "out_of_fold.npz")["held_out"]

images, rois = [], []  # one row per image; one per ROI
for i in tqdm(held_out, desc="fold 0"):
    sample = samples[i]
    gray = load_gray(sample.path)
    lesions, count = ndimage.label(lesion_mask(sample, gray.shape) > 127)
    (image,) = classifier.predict([gray])
    found = segmenter.find_rois(gray)
    before = tight.predict_rois([tight.roi_crop(gray, roi.box) for roi in found])
    after = classifier.predict_rois([classifier.roi_crop(gray, roi.box) for roi in found])
    for roi, b, a in zip(found, before, after):
        overlap = max((((roi.mask & (lesions == k)).sum() / (roi.mask | (lesions == k)).sum()) for k in range(1, count + 1)),
                      default=0.0)
        rois.append({"dataset": sample.dataset, "label": sample.label, "lesion": overlap >= 0.5,
                     "p_before": b.probabilities["malignant"], "p_after": a.probabilities["malignant"],
                     "before": b.label == "malignant", "after": a.label == "malignant"})
    images.append({"dataset": sample.dataset, "label": sample.label, "image": image.label == "malignant",
                   "before": image.label == "malignant" or any(b.label == "malignant" for b in before),
                   "after": image.label == "malignant" or any(a.label == "malignant" for a in after)})


def rates(rows: list[dict], key: str) -> dict:
    malignant = np.array([r["label"] == "malignant" for r in rows])
    flagged = np.array([r[key] for r in rows])
    return {"sensitivity": round(float(flagged[malignant].mean()), 4),
            "specificity": round(float(1 - flagged[~malignant].mean()), 4)}


result = {"roi_classification_fitted_on_folds_1_4": {k: fitted[k] for k in ("context_margin", "calibration", "threshold")}}
for name in ("busbra", "busi", "pooled"):
    chosen = [r for r in images if name in ("pooled", r["dataset"])]
    chosen_rois = [r for r in rois if name in ("pooled", r["dataset"])]
    on_lesions = [r for r in chosen_rois if r["lesion"] and r["label"] != "normal"]
    malignant = [r["label"] == "malignant" for r in on_lesions]
    auc = {key: round(float(roc_auc_score(malignant, [r[key] for r in on_lesions])), 4) for key in ("p_before", "p_after")}
    result[name] = {
        "images": len(chosen), "rois": len(chosen_rois), "rois_matching_a_lesion": len(on_lesions),
        "image_alone": rates(chosen, "image"),
        "image_or_any_roi_before": rates(chosen, "before"),
        "image_or_any_roi_after": rates(chosen, "after"),
        "roi_auc_malignant_vs_benign_before": auc["p_before"],
        "roi_auc_malignant_vs_benign_after": auc["p_after"],
        "rois_on_lesions": {key: rates(on_lesions, key) for key in ("before", "after")},
    }
print(json.dumps(result, indent=2))
