"""Health, readiness, models, the OpenAPI document and docs page, and JSON for every error."""
from __future__ import annotations

import json
import shutil

from api import create_app
from api.config import REPO_ROOT
from api.models import refusal_to_start
from conftest import flip_one_byte, record_count, upload


def test_health_says_local_mode(client):
    body = client.get("/v1/health").get_json()
    assert body["status"] == "ok" and body["auth_mode"] == "local"
    assert "127.0.0.1" in body["message"]


def test_ready_when_models_loaded_and_store_writable(client):
    response = client.get("/v1/ready")
    assert response.status_code == 200
    assert response.get_json() == {"ready": True, "checks": {"models": "ok", "store": "ok"}}


def test_models_lists_both_modalities_with_card_metrics(client):
    listed = client.get("/v1/models").get_json()["models"]
    models = {m["modality"]: m for m in listed if m["kind"] == "classifier"}
    assert set(models) == {"ultrasound", "mammography"}
    segmenters = {m["modality"]: m for m in listed if m["kind"] == "segmenter"}
    assert segmenters["ultrasound"]["automatic_rois"] is True
    assert segmenters["mammography"]["automatic_rois"] is False  # prompts only (README "Lesion segmenter")
    for model in models.values():
        assert model["version"] and 0 < model["threshold"] < 1
        assert "pooled" in model["metrics"]
        assert "not a diagnosis" in model["intended_use"]


def test_openapi_document_describes_every_route(client):
    spec = client.get("/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/analyses", "/v1/analyses/{analysis_id}", "/v1/analyses/{analysis_id}/feedback",
            "/v1/analyses/{analysis_id}/images/{name}", "/evaluate-image/{modality}/",
            "/v1/health", "/v1/ready", "/v1/models"} <= set(spec["paths"])
    post = spec["paths"]["/v1/analyses"]["post"]
    body_schema = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    properties = spec["components"]["schemas"][body_schema]["properties"]
    assert {"file", "modality", "extract_roi", "saliency", "roi_min_area", "operating_point"} <= set(properties)
    assert properties["saliency_steps"]["minimum"] == 4 and properties["saliency_steps"]["maximum"] == 64
    assert properties["roi_max"]["default"] == 5
    assert {"201", "400", "413", "415"} <= set(post["responses"])


def test_docs_page_uses_only_local_assets(client):
    page = client.get("/v1/docs")
    assert page.status_code == 200 and b"swagger" in page.data.lower()
    assert b"cdn" not in page.data.lower() and b"https://" not in page.data
    assert client.get("/v1/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_unknown_route_and_wrong_method_are_json(client):
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong = client.put("/v1/analyses")
    assert wrong.status_code == 405 and "error" in wrong.get_json()


def _copied_weights(tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(create_app.__globals__["from_environment"]()["WEIGHTS_DIR"], weights)
    return weights, json.loads((weights / "branet-us-resnet18.json").read_text())


def test_weights_failing_their_checksum_are_refused_and_marked_so_no_server_starts(tmp_path, busbra_png):
    weights, card = _copied_weights(tmp_path)
    flip_one_byte(weights / card["weights_file"])
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "WEIGHTS_DIR": weights})
    reason = refusal_to_start(app)
    assert reason and f"{card['weights_file']} has sha256" in reason and card["sha256"] in reason
    client = app.test_client()
    assert client.get("/v1/ready").status_code == 503
    assert upload(client, busbra_png).status_code == 503
    assert record_count(client) == 0


def test_a_missing_model_leaves_the_service_up_but_not_ready_and_analyses_answer_503(tmp_path, busbra_png):
    weights, card = _copied_weights(tmp_path)
    (weights / card["weights_file"]).unlink()
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "WEIGHTS_DIR": weights})
    assert refusal_to_start(app) is None
    client = app.test_client()
    ready = client.get("/v1/ready")
    assert ready.status_code == 503 and "missing" in ready.get_json()["checks"]["models"]
    response = upload(client, busbra_png)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "model_unavailable"
    assert "label" not in response.get_json()
    legacy = client.post("/evaluate-image/ultrasound/", data={"file": (__import__("io").BytesIO(busbra_png), "image.png")})
    assert legacy.status_code == 503 and legacy.get_json()["result"] == "ERROR"
    assert record_count(client) == 0


def test_repo_root_holds_the_weights():
    assert (REPO_ROOT / "weights").is_dir()
