"""The v1 analyses API through Flask's test client, with the real models."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import png_bytes, record_count, upload


def test_upload_answers_201_with_a_classification_summing_to_one(client, busbra_png):
    response = upload(client, busbra_png)
    assert response.status_code == 201
    body = response.get_json()
    assert body["modality"] == "ultrasound"
    assert set(body["probabilities"]) == {"normal", "benign", "malignant"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert body["label"] in body["probabilities"]
    assert body["model"]["name"] == "branet-us-resnet18" and body["model"]["version"]
    assert body["created_at"].endswith("+00:00")
    assert body["duration_ms"] > 0
    assert body["extract_roi"] is False


def test_label_follows_the_shipped_threshold(client, busbra_png):
    body = upload(client, busbra_png).get_json()
    malignant = body["probabilities"]["malignant"] >= body["threshold"]
    assert (body["label"] == "malignant") == malignant


def test_result_can_be_read_back_and_its_image_fetched(client, busbra_png):
    created = upload(client, busbra_png).get_json()
    fetched = client.get(f"/v1/analyses/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.get_json()["probabilities"] == created["probabilities"]
    image = client.get(created["images"]["original"])
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert "no-store" in image.headers["Cache-Control"]
    with Image.open(io.BytesIO(image.data)) as stored, Image.open(io.BytesIO(busbra_png)) as sent:
        assert stored.size == sent.size
        assert np.array_equal(np.asarray(stored.convert("L")), np.asarray(sent.convert("L")))


def test_mammography_uses_its_own_model(client, mias_png):
    body = upload(client, mias_png, modality="mammography").get_json()
    assert body["model"]["name"] == "branet-mg-resnet18"


def test_history_is_newest_first_and_paginated(client, busbra_png):
    ids = [upload(client, busbra_png).get_json()["id"] for _ in range(3)]
    page = client.get("/v1/analyses?limit=2").get_json()
    assert page["total"] == 3 and [item["id"] for item in page["items"]] == ids[::-1][:2]
    rest = client.get("/v1/analyses?limit=2&offset=2").get_json()
    assert [item["id"] for item in rest["items"]] == ids[:1]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=abc"])
def test_bad_pagination_is_400(client, query):
    response = client.get(f"/v1/analyses?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"


def test_soft_delete_hides_the_analysis_and_its_images(client, busbra_png):
    created = upload(client, busbra_png).get_json()
    assert client.delete(f"/v1/analyses/{created['id']}").status_code == 204
    assert client.get(f"/v1/analyses/{created['id']}").status_code == 404
    assert client.get(created["images"]["original"]).status_code == 404
    assert record_count(client) == 0
    assert client.delete(f"/v1/analyses/{created['id']}").status_code == 404


def test_feedback_is_appended_never_overwritten(client, busbra_png):
    created = upload(client, busbra_png).get_json()
    url = f"/v1/analyses/{created['id']}/feedback"
    first = client.post(url, json={"label": "benign", "comment": "fibroadenoma on biopsy"})
    second = client.post(url, json={"label": "malignant"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert (first.get_json()["version"], second.get_json()["version"]) == (1, 2)
    feedback = client.get(f"/v1/analyses/{created['id']}").get_json()["feedback"]
    assert [(f["label"], f["comment"]) for f in feedback] == [
        ("benign", "fibroadenoma on biopsy"), ("malignant", "")
    ]


@pytest.mark.parametrize("body", [{"label": "cancer"}, {"comment": "no label"}, {"label": "benign", "x": 1}])
def test_invalid_feedback_is_400_and_not_stored(client, busbra_png, body):
    created = upload(client, busbra_png).get_json()
    response = client.post(f"/v1/analyses/{created['id']}/feedback", json=body)
    assert response.status_code == 400
    assert client.get(f"/v1/analyses/{created['id']}").get_json()["feedback"] == []


def test_feedback_on_unknown_analysis_is_404(client):
    response = client.post("/v1/analyses/00000000-0000-4000-8000-000000000000/feedback", json={"label": "benign"})
    assert response.status_code == 404


def test_unknown_ids_and_image_names_are_404(client, busbra_png):
    created = upload(client, busbra_png).get_json()
    assert client.get("/v1/analyses/not-an-id").status_code == 404
    assert client.get(f"/v1/analyses/{created['id']}/images/other.png").status_code == 404
    assert client.get(f"/v1/analyses/{created['id']}/images/..%2F..%2Fbranet.sqlite3").status_code == 404


# Input rules: each refusal is JSON with the right status and stores nothing.

def test_eleven_megabytes_is_413(client, busbra_png):
    response = upload(client, busbra_png + os.urandom(11 * 1024 * 1024))
    assert response.status_code == 413
    assert "error" in response.get_json()
    assert record_count(client) == 0


def test_file_just_over_the_limit_inside_the_body_limit_is_413(client, busbra_png):
    padding = 10 * 1024 * 1024 + 1 - len(busbra_png)
    response = upload(client, busbra_png + b"\0" * padding)
    assert response.status_code == 413
    assert record_count(client) == 0


def test_random_bytes_are_415(client):
    response = upload(client, os.urandom(4096))
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert record_count(client) == 0


def test_text_named_png_is_415(client):
    response = upload(client, b"this is not an image\n" * 50, filename="scan.png")
    assert response.status_code == 415
    assert record_count(client) == 0


def test_truncated_png_is_400(client, busbra_png):
    response = upload(client, busbra_png[: len(busbra_png) // 2])
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_image"
    assert record_count(client) == 0


def test_unknown_modality_is_400(client, busbra_png):
    response = upload(client, busbra_png, modality="xray")
    assert response.status_code == 400
    assert "modality" in response.get_json()["error"]["details"]["multipart"]
    assert record_count(client) == 0


def test_missing_file_is_400(client):
    response = client.post("/v1/analyses", data={"modality": "ultrasound"}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "file" in response.get_json()["error"]["details"]["multipart"]


def test_roi_extraction_without_an_installed_segmenter_is_501(tmp_path, busbra_png):
    import shutil

    from api import create_app
    from api.config import from_environment

    weights = tmp_path / "weights"
    shutil.copytree(from_environment()["WEIGHTS_DIR"], weights,
                    ignore=shutil.ignore_patterns("*sam*"))  # classifiers only
    client = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "WEIGHTS_DIR": weights}).test_client()
    response = upload(client, busbra_png, extract_roi="true")
    assert response.status_code == 501
    assert response.get_json()["error"]["code"] == "feature_unavailable"
    assert record_count(client) == 0


def _mask_b64(shape, box) -> str:
    import base64
    mask = np.zeros(shape, dtype=np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = 255
    return base64.b64encode(png_bytes(mask)).decode()


def test_feedback_with_edited_masks_is_stored_and_fetchable(client, busbra_png):
    created = upload(client, busbra_png, saliency="none").get_json()
    height, width = created["image"]["height"], created["image"]["width"]
    body = {
        "label": "malignant",
        "comment": "missed the lower lesion; ignore the caliper text",
        "missed_lesions": {"png": _mask_b64((height, width), (100, 150, 80, 140))},
        "ignore_regions": {"polygons": [[[0, 0], [60, 0], [60, 20], [0, 20]]]},
    }
    response = client.post(f"/v1/analyses/{created['id']}/feedback", json=body)
    assert response.status_code == 201
    masks = response.get_json()["masks"]
    missed = np.asarray(Image.open(io.BytesIO(client.get(masks["missed_lesions"]).data)))
    assert missed.shape == (height, width) and (missed > 0).sum() == 50 * 60
    ignored = np.asarray(Image.open(io.BytesIO(client.get(masks["ignore_regions"]).data)))
    assert ignored[10, 30] > 0 and ignored[100, 100] == 0
    stored = client.get(f"/v1/analyses/{created['id']}").get_json()["feedback"]
    assert stored[0]["masks"] == masks


@pytest.mark.parametrize("edit", [
    {"png": "not base64!"},
    {"polygons": [[[0, 0], [1, 1]]]},  # two points are no polygon
    {},  # neither
])
def test_invalid_mask_edits_are_400_and_store_nothing(client, busbra_png, edit):
    created = upload(client, busbra_png, saliency="none").get_json()
    response = client.post(f"/v1/analyses/{created['id']}/feedback", json={"label": "benign", "missed_lesions": edit})
    assert response.status_code == 400 and "error" in response.get_json()
    assert client.get(f"/v1/analyses/{created['id']}").get_json()["feedback"] == []


def test_a_mask_of_the_wrong_size_is_400(client, busbra_png):
    created = upload(client, busbra_png, saliency="none").get_json()
    response = client.post(f"/v1/analyses/{created['id']}/feedback",
                           json={"label": "benign", "missed_lesions": {"png": _mask_b64((10, 10), (0, 5, 0, 5))}})
    assert response.status_code == 400
    assert "the mask is 10x10" in response.get_json()["error"]["message"]
    assert client.get(f"/v1/analyses/{created['id']}").get_json()["feedback"] == []
