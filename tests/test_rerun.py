"""POST /v1/analyses/{id}/rerun: the stored image analysed again with new options, as a new analysis."""
from __future__ import annotations

import json
import uuid

import pytest

from api import create_app
from api.config import from_environment
from conftest import copy_to_another_owner, record_count, upload

WEIGHTS = from_environment()["WEIGHTS_DIR"]


def rerun(client, analysis_id: str, **options):
    return client.post(f"/v1/analyses/{analysis_id}/rerun", json=options)


@pytest.fixture
def original(client, busbra_png) -> dict:
    response = upload(client, busbra_png, operating_point="balanced", saliency_layer="layer3")
    assert response.status_code == 201
    return response.get_json()


def test_rerun_is_a_new_analysis_of_the_stored_image_and_leaves_the_original_alone(client, original):
    before = client.get(f"/v1/analyses/{original['id']}").get_json()
    response = rerun(client, original["id"], saliency="integrated_gradients", saliency_steps=8)
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"] != original["id"] and body["rerun_of"] == original["id"]
    assert body["saliency"]["method"] == "integrated_gradients" and body["options"]["saliency_steps"] == 8
    # What the request left out keeps the original's value, not the default.
    assert body["options"]["operating_point"] == "balanced" and body["options"]["saliency_layer"] == "layer3"
    assert body["operating_point"] == "balanced"
    # The very image that was uploaded, without uploading it again.
    assert client.get(body["images"]["original"]).data == client.get(original["images"]["original"]).data
    assert body["image"] == original["image"]
    assert "image" in body["reused"] and "saliency" not in body["reused"]
    # Both are in the history; the original is unchanged.
    assert record_count(client) == 2
    assert client.get(f"/v1/analyses/{original['id']}").get_json() == before


def test_unchanged_model_and_saliency_are_reused_not_recomputed(app, client, original):
    body = rerun(client, original["id"]).get_json()
    assert body["reused"] == ["image", "classification", "saliency"]
    assert body["probabilities"] == original["probabilities"] and body["saliency"] == original["saliency"]
    stored = app.extensions["branet.store"].get_analysis("local", body["id"])
    assert "saliency" not in stored["stage_ms"]  # no saliency stage ran
    assert client.get(body["images"]["saliency"]).data == client.get(original["images"]["saliency"]).data


def test_a_new_operating_point_reuses_the_probabilities_with_its_own_threshold(client, original):
    card = json.loads((WEIGHTS / "branet-us-resnet18.json").read_text())
    body = rerun(client, original["id"], operating_point="screening").get_json()
    assert "classification" in body["reused"]
    assert body["probabilities"] == original["probabilities"]
    assert body["threshold"] == pytest.approx(card["threshold"]["malignant"])
    assert original["threshold"] == pytest.approx(card["threshold"]["balanced"])
    assert (body["label"] == "malignant") == (body["probabilities"]["malignant"] >= body["threshold"])
    # The saliency explains the label: reused only when the label stayed the same.
    assert ("saliency" in body["reused"]) == (body["label"] == original["label"])


def test_a_rerun_of_a_rerun_points_at_the_first_analysis(client, original):
    first = rerun(client, original["id"], saliency="none").get_json()
    assert first["saliency"] is None and "saliency" not in first["images"]
    second = rerun(client, first["id"], saliency="gradcam").get_json()
    assert second["rerun_of"] == original["id"] and second["saliency"]["method"] == "gradcam"


@pytest.mark.parametrize(("field", "value"), [
    ("saliency_steps", 100), ("saliency", "magic"), ("saliency_layer", "layer9"), ("roi_max", 0),
    ("roi_confidence", 1.5), ("roi_min_area", -0.1), ("operating_point", "aggressive"),
    ("dicom_frame", 1),  # the frame was chosen at upload: not an option of a rerun
    ("modality", "mammography"),
])
def test_out_of_range_options_are_400_naming_the_field_and_store_nothing(client, original, field, value):
    response = rerun(client, original["id"], **{field: value})
    assert response.status_code == 400
    assert field in response.get_json()["error"]["details"]["json"]
    assert record_count(client) == 1


def test_only_the_owner_can_rerun(app, client, original):
    """Another user's analysis, and a deleted or unknown one, are 404 and nothing is stored."""
    foreign = copy_to_another_owner(app, original["id"])
    assert rerun(client, foreign["id"]).status_code == 404
    assert app.extensions["branet.store"].list_analyses("someone-else", 10, 0)[1] == 1
    assert rerun(client, str(uuid.uuid4())).status_code == 404
    assert client.delete(f"/v1/analyses/{original['id']}").status_code == 204
    response = rerun(client, original["id"])
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    assert record_count(client) == 0


def test_rerun_is_in_the_openapi_document(client):
    spec = client.get("/v1/openapi.json").get_json()
    operation = spec["paths"]["/v1/analyses/{analysis_id}/rerun"]["post"]
    assert {"201", "400", "401", "404", "429"} <= set(operation["responses"])
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    properties = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]["properties"]
    assert properties["saliency_steps"]["minimum"] == 4 and properties["saliency_steps"]["maximum"] == 64
    assert "dicom_frame" not in properties
    analysis = spec["components"]["schemas"]["Analysis"]["properties"]
    assert {"rerun_of", "reused"} <= set(analysis)


def test_reruns_are_rate_limited(tmp_path, busbra_png):
    client = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "RATE_LIMIT": "2 per minute"}).test_client()
    created = upload(client, busbra_png, saliency="none").get_json()
    assert [rerun(client, created["id"]).status_code for _ in range(2)] == [201, 201]
    refused = rerun(client, created["id"])
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert record_count(client) == 3
