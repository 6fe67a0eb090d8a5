"""With a Firebase project configured, every request needs a valid ID token."""
from __future__ import annotations

import io

import pytest

from api import create_app


@pytest.fixture
def firebase_client(tmp_path, monkeypatch):
    # firebase-admin's emulator mode needs no Google credentials; nothing listens on this port,
    # so a token that reached the network would fail, not pass.
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9")
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "FIREBASE_PROJECT_ID": "demo-branet"})
    return app.test_client()


def test_health_reports_firebase_mode(firebase_client):
    assert firebase_client.get("/v1/health").get_json() == {"status": "ok", "auth_mode": "firebase"}


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt",
                                    "Bearer a.b.c", "Bearer " + "x" * 5000])
def test_missing_or_malformed_tokens_are_401_json(firebase_client, header):
    headers = {"Authorization": header} if header is not None else {}
    response = firebase_client.get("/v1/analyses", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_legacy_route_answers_the_app_envelope_on_401(firebase_client, busbra_png):
    response = firebase_client.post(
        "/evaluate-image/ultrasound/?extract_roi=false",
        data={"file": (io.BytesIO(busbra_png), "image.png")},
        headers={"Authorization": "Bearer garbage"},
    )
    assert response.status_code == 401
    assert response.get_json() == {"result": "ERROR", "aditionalInfo": "NO TOKEN ID VERIFIED", "idResult": None}


def test_health_and_docs_stay_open(firebase_client):
    assert firebase_client.get("/v1/health").status_code == 200
    assert firebase_client.get("/v1/openapi.json").status_code == 200
