"""End to end: the service under a real gunicorn process on loopback, with real images."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from api.config import REPO_ROOT
from benchmarks.load import free_port


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "BRANET_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    env.pop("BRANET_FIREBASE_PROJECT_ID", None)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py", "api:create_app()"], cwd=REPO_ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/v1/ready", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
        assert process.poll() is None, process.stderr.read().decode()
    else:
        process.kill()
        pytest.fail("gunicorn did not become ready")
    yield base
    process.terminate()
    process.wait(timeout=30)


def test_busbra_image_is_analysed_stored_and_served(service, shared_data):
    image = (shared_data / "busbra" / "images" / "bus_0003-l.png").read_bytes()
    response = requests.post(f"{service}/v1/analyses", data={"modality": "ultrasound"},
                             files={"file": ("image.png", image, "image/png")}, timeout=60)
    assert response.status_code == 201
    body = response.json()
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-6
    assert requests.get(f"{service}/v1/analyses/{body['id']}", timeout=10).json()["label"] == body["label"]
    stored = requests.get(service + body["images"]["original"], timeout=10)
    assert stored.status_code == 200 and stored.headers["Content-Type"] == "image/png"


def test_legacy_route_under_gunicorn(service, shared_data):
    image = (shared_data / "busi" / "malignant" / "malignant (1).png").read_bytes()
    response = requests.post(f"{service}/evaluate-image/ultrasound/?extract_roi=false",
                             files={"file": ("image.png", image, "image/png")},
                             headers={"Authorization": "Bearer token"}, timeout=60)
    assert response.status_code == 200
    assert response.json()["result"] == "OK" and response.json()["idResult"]


def test_oversized_upload_is_refused_with_json_under_gunicorn(service):
    before = requests.get(f"{service}/v1/analyses", timeout=10).json()["total"]
    response = requests.post(f"{service}/v1/analyses", data={"modality": "ultrasound"},
                             files={"file": ("image.png", b"\x89PNG\r\n\x1a\n" + os.urandom(11 * 1024 * 1024))},
                             timeout=60)
    assert response.status_code == 413 and "error" in response.json()
    assert requests.get(f"{service}/v1/analyses", timeout=10).json()["total"] == before


def test_bound_to_loopback_only_in_local_mode(service):
    assert service.startswith("http://127.0.0.1:")
    assert requests.get(f"{service}/v1/health", timeout=10).json()["auth_mode"] == "local"
