"""The existing app's route: exact envelope, honest status codes, same pipeline and store."""
from __future__ import annotations

import io
import os

import pytest

from conftest import record_count

ENVELOPE_KEYS = {"result", "aditionalInfo", "idResult"}


def post_legacy(client, data: bytes | None, modality: str = "ultrasound", query: str = "extract_roi=false",
                headers: dict | None = None):
    form = {} if data is None else {"file": (io.BytesIO(data), "image.png", "image/png")}
    return client.post(f"/evaluate-image/{modality}/?{query}", data=form,
                       content_type="multipart/form-data", headers=headers or {})


def test_ok_envelope_and_the_result_is_in_the_history(client, busbra_png):
    response = post_legacy(client, busbra_png, headers={"Authorization": "Bearer anything"})
    body = response.get_json()
    assert response.status_code == 200
    assert set(body) == ENVELOPE_KEYS
    assert body["result"] == "OK" and body["aditionalInfo"] is None
    stored = client.get(f"/v1/analyses/{body['idResult']}").get_json()
    assert stored["modality"] == "ultrasound"


def test_modality_is_case_insensitive_as_the_app_lower_cases_it(client, mias_png):
    body = post_legacy(client, mias_png, modality="Mammography").get_json()
    assert body["result"] == "OK"
    assert client.get(f"/v1/analyses/{body['idResult']}").get_json()["modality"] == "mammography"


@pytest.mark.parametrize(
    ("make_body", "modality", "query", "status", "code"),
    [
        (lambda png: b"plain text pretending" * 20, "ultrasound", "extract_roi=false", 415, "NO FILE ALLOWED"),
        (lambda png: None, "ultrasound", "extract_roi=false", 400, "NO DATA UPLOAD"),
        (lambda png: png, "xray", "extract_roi=false", 400, "MODALITY NOT SUPPORTED"),
        (lambda png: png, "ultrasound", "extract_roi=maybe", 400, "INVALID REQUEST"),
        (lambda png: png + os.urandom(11 * 1024 * 1024), "ultrasound", "extract_roi=false", 413, "FILE TOO LARGE"),
    ],
)
def test_error_envelopes(client, busbra_png, make_body, modality, query, status, code):
    response = post_legacy(client, make_body(busbra_png), modality=modality, query=query)
    body = response.get_json()
    assert response.status_code == status
    assert body == {"result": "ERROR", "aditionalInfo": code, "idResult": None}
    assert record_count(client) == 0


def test_malformed_authorization_header_is_not_a_500_in_local_mode(client, busbra_png):
    response = post_legacy(client, busbra_png, headers={"Authorization": "Bearer"})
    assert response.status_code == 200


def test_roi_request_without_an_installed_segmenter_is_the_envelope_with_501(tmp_path, busbra_png):
    import shutil

    from api import create_app
    from api.config import from_environment

    weights = tmp_path / "weights"
    shutil.copytree(from_environment()["WEIGHTS_DIR"], weights, ignore=shutil.ignore_patterns("*sam*"))
    client = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "WEIGHTS_DIR": weights}).test_client()
    response = post_legacy(client, busbra_png, query="extract_roi=true")
    assert response.status_code == 501
    assert response.get_json() == {"result": "ERROR", "aditionalInfo": "ROI EXTRACTION UNAVAILABLE", "idResult": None}
    assert record_count(client) == 0
