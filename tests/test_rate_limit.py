"""Per-user rate limits on the analysis-creating endpoints only."""
from __future__ import annotations

import io
import os

import pytest

from api import create_app

LIMIT = 60  # issue 8: the 61st request in a minute over a limit of 60 is refused
JUNK = os.urandom(256)  # not an image: refused fast (415), which still counts against the limit


@pytest.fixture
def limited(tmp_path):
    return create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "RATE_LIMIT": f"{LIMIT} per minute"})


def post_v1(client, **kwargs):
    form = {"modality": "ultrasound", "file": (io.BytesIO(JUNK), "image.png")}
    return client.post("/v1/analyses", data=form, content_type="multipart/form-data", **kwargs)


def post_legacy(client):
    return client.post("/evaluate-image/ultrasound/", data={"file": (io.BytesIO(JUNK), "image.png")})


def test_the_request_over_the_limit_is_429_json_with_retry_after(limited):
    client = limited.test_client()
    for _ in range(LIMIT):
        response = post_v1(client)
        assert response.status_code == 415
    refused = post_v1(client)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert 0 < int(refused.headers["Retry-After"]) <= 60


def test_the_app_route_is_limited_and_answers_its_envelope(limited):
    client = limited.test_client()
    for _ in range(LIMIT):
        assert post_legacy(client).status_code == 415
    refused = post_legacy(client)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert refused.get_json() == {"result": "ERROR", "aditionalInfo": "TOO MANY REQUESTS", "idResult": None}


def test_reading_is_never_limited(limited):
    client = limited.test_client()
    for _ in range(LIMIT + 1):
        post_v1(client)
    for _ in range(2 * LIMIT):
        assert client.get("/v1/health").status_code == 200
        assert client.get("/v1/analyses").status_code == 200  # same route as the limited POST


def test_unauthenticated_callers_are_limited_per_address(tmp_path, monkeypatch):
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9")  # as in test_auth.py
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "FIREBASE_PROJECT_ID": "demo-branet",
                      "RATE_LIMIT": f"{LIMIT} per minute"})
    client = app.test_client()
    first = {"environ_base": {"REMOTE_ADDR": "192.0.2.1"}}
    for _ in range(LIMIT):
        assert post_v1(client, **first).status_code == 401
    assert post_v1(client, **first).status_code == 429
    assert post_v1(client, environ_base={"REMOTE_ADDR": "192.0.2.2"}).status_code == 401


@pytest.mark.parametrize("configured", [["https://clinic.example"], []])
def test_cors_answers_only_configured_origins(tmp_path, configured):
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "CORS_ORIGINS": configured})
    client = app.test_client()
    allowed = client.get("/v1/health", headers={"Origin": "https://clinic.example"})
    other = client.get("/v1/health", headers={"Origin": "https://elsewhere.example"})
    expected = "https://clinic.example" if configured else None
    assert allowed.headers.get("Access-Control-Allow-Origin") == expected
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_origins_come_from_the_environment(monkeypatch):
    from api.config import from_environment

    monkeypatch.setenv("BRANET_CORS_ORIGINS", "https://a.example, https://b.example")
    assert from_environment()["CORS_ORIGINS"] == ["https://a.example", "https://b.example"]
    monkeypatch.delenv("BRANET_CORS_ORIGINS")
    assert from_environment()["CORS_ORIGINS"] == []
