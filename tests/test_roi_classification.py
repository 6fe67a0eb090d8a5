"""ROI crops get their own context, calibration and thresholds (ml.roi_classification)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_ml import mias_subset, run_module

from api.config import from_environment
from ml.classifier import Classifier
from ml.datasets import CLASSES, load_gray, read_folder
from ml.errors import FeatureUnavailable
from ml.roi_classification import (
    MARGINS,
    LesionCrops,
    context_box,
    context_crop,
    fit_roi_classification,
)

WEIGHTS = from_environment()["WEIGHTS_DIR"]


def test_the_context_grows_the_box_by_the_margin_on_each_side_and_stays_inside_the_image():
    gray = np.arange(100 * 200, dtype=np.uint32).reshape(100, 200).astype(np.uint8)
    assert context_box((50, 40, 69, 59), gray.shape, 0.5) == (40, 30, 79, 69)
    assert context_crop(gray, (50, 40, 69, 59), 0.5).shape == (40, 40)
    assert np.array_equal(context_crop(gray, (50, 40, 69, 59), 0.5), gray[30:70, 40:80])
    assert context_box((0, 90, 9, 99), gray.shape, 1.0) == (0, 80, 19, 99)  # clipped at the edges


def synthetic_crops(rng: np.random.Generator, n: int = 400) -> LesionCrops:
    """Margin 1.0's logits tell malignant from benign; margin 0.15's are noise, and overconfident."""
    labels = np.where(rng.random(n) < 0.4, "malignant", "benign")
    signal = (labels == "malignant") * 2.0 + rng.normal(0, 1, n)
    informative = np.column_stack([np.full(n, -3.0), -signal, signal])
    noise = np.column_stack([np.full(n, -3.0), np.zeros(n), rng.normal(0, 8, n)])
    return LesionCrops(labels, np.array([f"g{i // 2}" for i in range(n)]), np.where(np.arange(n) % 3, "busbra", "busi"),
                       {0.15: noise, 1.0: informative})


def test_the_fit_keeps_the_margin_ranked_best_and_a_threshold_reaching_the_screening_sensitivity():
    crops = synthetic_crops(np.random.default_rng(0))
    fitted = fit_roi_classification(crops, "synthetic crops")
    assert fitted["context_margin"] == 1.0
    by_margin = fitted["metrics"]["auc_malignant_vs_benign_by_margin"]
    assert by_margin["1.0"] > 0.85 and by_margin["0.15"] < 0.6
    pooled = fitted["metrics"]["pooled"]
    assert pooled["sensitivity"] >= 0.95 and pooled["n"] == 400
    assert pooled["auc_malignant_vs_benign"] == by_margin["1.0"]
    assert set(fitted["metrics"]["per_dataset"]) == {"busbra", "busi"}
    assert 0 < fitted["threshold"]["malignant"] <= fitted["threshold"]["balanced"] < 1
    # the temperature is the one that fits these logits: another one predicts them worse; crops are of
    # lesions (no normal among them), so no class bias is fitted
    logits = crops.logits[1.0]
    targets = np.array([CLASSES.index(label) for label in crops.labels])
    nll = lambda t: -np.log(np.exp(logits / t)[np.arange(400), targets] / np.exp(logits / t).sum(1)).mean()
    temperature = fitted["calibration"]["temperature"]
    assert "class_bias" not in fitted["calibration"] and fitted["calibration"]["method"].startswith("temperature scaling on")
    assert nll(temperature) < nll(temperature * 1.5) and nll(temperature) < nll(temperature / 1.5)


def test_lesion_crops_survive_a_save_and_load(tmp_path):
    crops = synthetic_crops(np.random.default_rng(1), 30)
    crops.save(tmp_path / "crops.npz")
    loaded = LesionCrops.load(tmp_path / "crops.npz")
    assert list(loaded.labels) == list(crops.labels) and list(loaded.groups) == list(crops.groups)
    assert sorted(loaded.logits) == [0.15, 1.0] and np.allclose(loaded.logits[1.0], crops.logits[1.0])


@pytest.fixture(scope="module")
def shipped_card() -> dict:
    return json.loads((WEIGHTS / "branet-us-resnet18.json").read_text())


def test_rois_are_labelled_with_their_own_calibration_and_threshold(shipped_card, shared_data):
    shipped = Classifier.load(WEIGHTS, "branet-us-resnet18")
    roi_card = shipped_card["roi_classification"]
    assert roi_card["context_margin"] in MARGINS and shipped.roi_margin == roi_card["context_margin"]
    gray = load_gray(shared_data / "busbra" / "images" / "bus_0003-l.png")
    crop = shipped.roi_crop(gray, (200, 100, 279, 159))
    assert crop.shape == context_crop(gray, (200, 100, 279, 159), roi_card["context_margin"]).shape
    (roi,) = shipped.predict_rois([crop])
    expected = shipped.probabilities([crop], shipped.roi_calibration)[0]
    assert roi.probabilities["malignant"] == pytest.approx(expected[CLASSES.index("malignant")])
    assert shipped.roi_calibration.calibrator != shipped.image_calibration.calibrator  # not the whole image's
    assert not np.allclose(expected, shipped.probabilities([crop])[0])

    def with_roi_threshold(threshold: float) -> Classifier:
        roi = {**roi_card, "threshold": {"malignant": threshold, "balanced": threshold}}
        return Classifier({**shipped_card, "roi_classification": roi}, shipped.network)

    p = roi.probabilities["malignant"]
    assert with_roi_threshold(p).predict_rois([crop])[0].label == "malignant"
    assert with_roi_threshold(min(1.0, p + 1e-6)).predict_rois([crop])[0].label != "malignant"
    assert shipped.predict_rois([]) == []


def test_a_classifier_without_an_roi_calibration_labels_no_roi(shipped_card):
    card = {k: v for k, v in shipped_card.items() if k != "roi_classification"}
    bare = Classifier(card, Classifier.load(WEIGHTS, "branet-us-resnet18").network)
    with pytest.raises(FeatureUnavailable, match="roi_classification"):
        bare.roi_crop(np.zeros((64, 64), np.uint8), (10, 10, 20, 20))
    with pytest.raises(FeatureUnavailable):
        bare.predict_rois([np.zeros((64, 64), np.uint8)])


def test_the_command_fits_the_card_from_the_folds_and_fine_tuning_refits_it(tmp_path, shared_data):
    data_root = mias_subset(tmp_path, shared_data)
    weights = tmp_path / "weights"
    trained = run_module("ml.train", "--modality", "mammography", "--data-root", str(data_root), "--folds", "2",
                         "--epochs", "1", "--size", "32", "--batch-size", "8", "--run-dir", str(tmp_path / "run"),
                         "--weights-dir", str(weights))
    assert trained.returncode == 0, trained.stderr
    assert "roi_classification" not in json.loads((weights / "branet-mg-resnet18.json").read_text())

    command = ["ml.roi_classification", "--modality", "mammography", "--run-dir", str(tmp_path / "run"),
               "--data-root", str(data_root), "--weights-dir", str(weights)]
    fitted = run_module(*command)
    assert fitted.returncode == 0, fitted.stderr
    card = json.loads((weights / "branet-mg-resnet18.json").read_text())
    roi = card["roi_classification"]
    assert roi == json.loads(fitted.stdout)
    assert roi["context_margin"] in MARGINS and roi["metrics"]["pooled"]["sensitivity"] >= 0.95
    circled = sum(len(s.circles) for s in read_folder(data_root / "mias") if s.label in ("benign", "malignant"))
    assert 0 < roi["metrics"]["pooled"]["n"] <= circled
    assert all((tmp_path / "run" / f"fold{k}" / "lesion_crops_1.npz").exists() for k in (0, 1))
    again = run_module(*command)  # the folds' crops are read back, not classified again
    assert again.returncode == 0 and "lesion crops" not in again.stderr
    assert json.loads(again.stdout)["calibration"] == roi["calibration"]
    assert Classifier.load(weights, "branet-mg-resnet18").roi_margin == roi["context_margin"]

    tuned = run_module("ml.train", "--modality", "mammography", "--data-root", str(data_root),
                       "--fine-tune", str(weights / "branet-mg-resnet18.pt"), "--extra", str(data_root / "mias"),
                       "--folds", "2", "--epochs", "1", "--run-dir", str(tmp_path / "fine-tune"),
                       "--weights-dir", str(weights), "--name", "mg-ft")
    assert tuned.returncode == 0, tuned.stderr
    refitted = json.loads((weights / "mg-ft.json").read_text())["roi_classification"]
    assert refitted["context_margin"] == roi["context_margin"]  # the parent's context, its own calibration
    assert "held-out split" in refitted["calibration"]["method"] or "the parent's" in refitted["calibration"]["method"]
