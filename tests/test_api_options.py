"""Analysis options, saliency and ROIs through the v1 API and the app's route."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from api.config import from_environment
from ml.classifier import Classifier
from ml.roi_classification import context_box
from conftest import png_bytes, record_count, upload

WEIGHTS = from_environment()["WEIGHTS_DIR"]


def fetch_image(client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200 and response.mimetype == "image/png"
    return Image.open(io.BytesIO(response.data))


def test_gradcam_saliency_by_default(client, busbra_png):
    body = upload(client, busbra_png).get_json()
    original = fetch_image(client, body["images"]["original"])
    saliency = body["saliency"]
    assert saliency["method"] == "gradcam" and saliency["target"] == body["label"]
    assert 0 <= saliency["peak"]["x"] < original.width and 0 <= saliency["peak"]["y"] < original.height
    grid = np.array(saliency["grid"])
    assert max(grid.shape) == 32 and 0 <= grid.min() and grid.max() <= 1 and grid.max() > 0
    overlay = fetch_image(client, body["images"]["saliency"])
    assert overlay.size == original.size and overlay.mode == "RGB"


def test_integrated_gradients_on_request(client, busbra_png):
    body = upload(client, busbra_png, saliency="integrated_gradients", saliency_steps="8").get_json()
    assert body["saliency"]["method"] == "integrated_gradients"
    assert body["options"]["saliency_steps"] == 8


def test_saliency_can_be_turned_off(client, busbra_png):
    body = upload(client, busbra_png, saliency="none").get_json()
    assert body["saliency"] is None and "saliency" not in body["images"]


def test_balanced_operating_point_uses_the_cards_balanced_threshold(client, busbra_png):
    card = json.loads((WEIGHTS / "branet-us-resnet18.json").read_text())
    body = upload(client, busbra_png, operating_point="balanced").get_json()
    assert body["operating_point"] == "balanced"
    assert body["threshold"] == pytest.approx(card["threshold"]["balanced"])
    assert (body["label"] == "malignant") == (body["probabilities"]["malignant"] >= body["threshold"])


@pytest.mark.parametrize(("field", "value"), [
    ("saliency_steps", "100"), ("saliency_steps", "3"), ("saliency", "magic"), ("saliency_layer", "layer9"),
    ("roi_max", "0"), ("roi_confidence", "1.5"), ("roi_min_area", "-0.1"), ("operating_point", "aggressive"),
])
def test_out_of_range_options_are_400_naming_the_field(client, busbra_png, field, value):
    response = upload(client, busbra_png, **{field: value})
    assert response.status_code == 400
    assert field in response.get_json()["error"]["details"]["multipart"]
    assert record_count(client) == 0


def test_roi_extraction_returns_rois_with_masks_and_labels(client, shared_data):
    image = (shared_data / "busbra" / "images" / "bus_0003-l.png").read_bytes()
    body = upload(client, image, extract_roi="true", roi_confidence="0.3").get_json()
    assert body["extract_roi"] is True and body["segmenter"]["name"] == "branet-us-sam-small"
    assert len(body["rois"]) >= 1
    original = fetch_image(client, body["images"]["original"])
    classifier = Classifier.load(WEIGHTS, "branet-us-resnet18")
    for roi in body["rois"]:
        box = roi["box"]
        assert 0 <= box["x0"] <= box["x1"] < original.width and 0 <= box["y0"] <= box["y1"] < original.height
        assert sum(roi["probabilities"].values()) == pytest.approx(1.0)
        # the crop is the ROI with the context its calibration was fitted at, and labelled with that calibration
        crop = np.asarray(fetch_image(client, roi["images"][f"roi{roi['index']}"]))
        x0, y0, x1, y1 = context_box(tuple(box[k] for k in ("x0", "y0", "x1", "y1")),
                                     (original.height, original.width), classifier.roi_margin)
        assert crop.shape == (y1 - y0 + 1, x1 - x0 + 1)
        (expected,) = classifier.predict_rois([crop])
        assert roi["label"] == expected.label
        assert roi["threshold"] == pytest.approx(classifier.roi_calibration.thresholds["screening"])
        assert roi["threshold"] != pytest.approx(body["threshold"])  # not the whole image's
        assert (roi["probabilities"]["malignant"] >= roi["threshold"]) == (roi["label"] == "malignant")
        assert roi["probabilities"]["malignant"] == pytest.approx(expected.probabilities["malignant"], abs=1e-4)
        mask = np.asarray(fetch_image(client, roi["images"][f"roi{roi['index']}_mask"]))
        assert mask.shape == (original.height, original.width) and (mask > 0).sum() == roi["area"]
        assert roi["saliency"]["method"] == "gradcam"
    assert fetch_image(client, body["images"]["contours"]).size == original.size
    if any(roi["label"] == "malignant" for roi in body["rois"]):
        assert body["label"] == "malignant"


def test_app_route_with_roi_answers_ok_and_stores_the_rois(client, shared_data):
    image = (shared_data / "busbra" / "images" / "bus_0003-l.png").read_bytes()
    response = client.post("/evaluate-image/ultrasound/?extract_roi=true",
                           data={"file": (io.BytesIO(image), "image.png")}, content_type="multipart/form-data")
    body = response.get_json()
    assert response.status_code == 200 and body["result"] == "OK"
    stored = client.get(f"/v1/analyses/{body['idResult']}").get_json()
    assert stored["extract_roi"] is True and len(stored["rois"]) >= 1


def test_app_route_answers_no_roi_found_on_a_normal_breast_and_stores_nothing(client, shared_data):
    normal = (shared_data / "busi" / "normal" / "normal (100).png").read_bytes()  # no lesion, no ROI found
    response = client.post("/evaluate-image/ultrasound/?extract_roi=true",
                           data={"file": (io.BytesIO(normal), "image.png")}, content_type="multipart/form-data")
    assert response.status_code == 422
    assert response.get_json() == {"result": "ERROR", "aditionalInfo": "NO ROI FOUND", "idResult": None}
    assert record_count(client) == 0


@pytest.mark.parametrize("grey", [0, 128, 255])
def test_a_blank_image_is_refused_not_classified(client, grey):
    blank = png_bytes(np.full((300, 400), grey, dtype=np.uint8))
    response = upload(client, blank)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "no_image_content"
    legacy = client.post("/evaluate-image/mammography/", data={"file": (io.BytesIO(blank), "image.png")},
                         content_type="multipart/form-data")
    assert legacy.status_code == 422
    assert legacy.get_json() == {"result": "ERROR", "aditionalInfo": "NO IMAGE CONTENT", "idResult": None}
    assert record_count(client) == 0


def test_risk_category_matches_the_probability(client, busbra_png):
    from ml.risk import birads_category

    body = upload(client, busbra_png, saliency="none").get_json()
    assert body["risk"]["birads_category"] == birads_category(body["probabilities"]["malignant"]).category
    assert "radiologist" in body["risk"]["caution"]


def test_low_confidence_flag_comes_from_the_model_card(client, busbra_png, mias_png):
    for modality, image, name in (("ultrasound", busbra_png, "branet-us-resnet18"),
                                  ("mammography", mias_png, "branet-mg-resnet18")):
        card = json.loads((WEIGHTS / f"{name}.json").read_text())
        body = upload(client, image, modality=modality, saliency="none").get_json()
        assert body["low_confidence"] is card["reliability"]["low_confidence"]
        assert body["reliability_note"] == card["reliability"]["note"]


def test_a_box_correction_adds_a_stored_roi(client, shared_data):
    import csv

    with open(shared_data / "busbra" / "labels.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["image"].endswith("bus_0003-l.png"))
    mask = np.asarray(Image.open(shared_data / "busbra" / row["masks"])) > 0
    ys, xs = np.nonzero(mask)
    box = {"x0": int(xs.min()), "y0": int(ys.min()), "x1": int(xs.max()), "y1": int(ys.max())}
    created = upload(client, (shared_data / "busbra" / row["image"]).read_bytes(), saliency="none").get_json()
    response = client.post(f"/v1/analyses/{created['id']}/roi", json={"box": box})
    assert response.status_code == 201
    roi = response.get_json()
    assert roi["source"] == "correction" and roi["prompt"]["box"] == box
    overlap = (np.asarray(fetch_image(client, roi["images"][f"roi{roi['index']}_mask"])) > 0) & mask
    assert overlap.sum() / mask.sum() > 0.5
    stored = client.get(f"/v1/analyses/{created['id']}").get_json()
    assert stored["rois"][-1]["index"] == roi["index"] and stored["rois"][-1]["source"] == "correction"


@pytest.mark.parametrize("prompt", [{}, {"box": {"x0": 50, "y0": 10, "x1": 20, "y1": 40}},
                                    {"points": []}, {"points": [{"x": 1}]}])
def test_invalid_corrections_are_400_and_change_nothing(client, busbra_png, prompt):
    created = upload(client, busbra_png, saliency="none").get_json()
    response = client.post(f"/v1/analyses/{created['id']}/roi", json=prompt)
    assert response.status_code == 400
    assert client.get(f"/v1/analyses/{created['id']}").get_json()["rois"] is None


def test_correction_of_an_unknown_analysis_is_404(client):
    response = client.post("/v1/analyses/00000000-0000-4000-8000-000000000000/roi",
                           json={"box": {"x0": 1, "y0": 1, "x1": 9, "y1": 9}})
    assert response.status_code == 404


def test_mammography_rois_come_from_a_clinicians_prompt_only(client, mias_png):
    # The mammography segmenter's automatic mode failed its held-out validation (card:
    # automatic_rois false): asked to find ROIs it says so instead of "no ROI found".
    refused = upload(client, mias_png, modality="mammography", extract_roi="true")
    assert refused.status_code == 501 and refused.get_json()["error"]["code"] == "feature_unavailable"
    assert "without a prompt" in refused.get_json()["error"]["message"]
    assert record_count(client) == 0

    created = upload(client, mias_png, modality="mammography", saliency="none").get_json()
    x, y, r = 267.5, 299.5, 98.5  # mdb001's circled finding (mias/labels.csv)
    box = {"x0": int(x - r), "y0": int(y - r), "x1": int(x + r), "y1": int(y + r)}
    response = client.post(f"/v1/analyses/{created['id']}/roi", json={"box": box})
    assert response.status_code == 201
    roi = response.get_json()
    mask = np.asarray(fetch_image(client, roi["images"][f"roi{roi['index']}_mask"])) > 0
    rows, cols = np.indices(mask.shape)
    circle = (cols - x) ** 2 + (rows - y) ** 2 <= r ** 2
    assert (mask & circle).sum() / circle.sum() > 0.5 and (mask & ~circle).sum() < 0.5 * circle.sum()
    assert roi["label"] in ("benign", "malignant") and roi["source"] == "correction"
    assert client.get(f"/v1/analyses/{created['id']}").get_json()["rois"][-1]["index"] == roi["index"]
