"""`flask weights verify` and `flask weights fetch`, through Flask's CLI test runner."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path

import pytest

import api.cli
from api import create_app
from api.config import from_environment
from conftest import flip_one_byte
from ml.cards import MODALITY_MODELS

SAM_HOST = "dl.fbaipublicfiles.com"


@pytest.fixture
def weights(tmp_path) -> Path:
    copy = tmp_path / "weights"
    shutil.copytree(from_environment()["WEIGHTS_DIR"], copy)
    return copy


def cli(tmp_path: Path, weights: Path, *args: str):
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "WEIGHTS_DIR": weights})
    return app.test_cli_runner().invoke(args=["weights", *args])


def status_of(output: str, name: str) -> str:
    (line,) = [line for line in output.splitlines() if f" {name}: " in line]
    return line.split()[0]


def test_verify_passes_on_intact_weights(tmp_path, weights):
    result = cli(tmp_path, weights, "verify")
    assert result.exit_code == 0, result.output
    for name in MODALITY_MODELS.values():
        assert status_of(result.stdout, name) == "OK"


def test_verify_fails_on_a_tampered_weights_file(tmp_path, weights):
    card = json.loads((weights / "branet-us-resnet18.json").read_text())
    flip_one_byte(weights / card["weights_file"])
    result = cli(tmp_path, weights, "verify")
    assert result.exit_code != 0
    assert status_of(result.stdout, "branet-us-resnet18") == "MISMATCH"
    assert status_of(result.stdout, "branet-mg-resnet18") == "OK"
    models = len(list(weights.glob("*.json")))
    assert f"1 of {models} models" in result.stderr and "failed verification" in result.stderr


def test_verify_reports_a_missing_weights_file_and_a_missing_card(tmp_path, weights):
    card = json.loads((weights / "branet-mg-resnet18.json").read_text())
    (weights / card["weights_file"]).unlink()
    (weights / "branet-us-resnet18.json").unlink()
    result = cli(tmp_path, weights, "verify")
    assert result.exit_code != 0
    assert status_of(result.stdout, "branet-mg-resnet18") == "MISSING"
    assert status_of(result.stdout, "branet-us-resnet18") == "MISSING"


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def test_fetch_without_internet_fails_cleanly_and_leaves_no_file(tmp_path, weights):
    if _reachable(SAM_HOST):
        pytest.skip(f"{SAM_HOST} is reachable: this test would download a 375 MB checkpoint")
    before = sorted(p.name for p in weights.iterdir())
    result = cli(tmp_path, weights, "fetch", "sam-vit-b")
    assert result.exit_code == 1
    error_lines = result.stderr.strip().splitlines()
    assert error_lines[-1].startswith("Error: cannot download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth")
    assert "Traceback" not in result.output
    assert sorted(p.name for p in weights.iterdir()) == before


def test_fetch_of_an_unknown_checkpoint_is_a_usage_error(tmp_path, weights):
    before = sorted(p.name for p in weights.iterdir())
    result = cli(tmp_path, weights, "fetch", "sam-vit-x")
    assert result.exit_code == 2
    assert "Invalid value" in result.stderr and "sam-vit-b" in result.stderr
    assert sorted(p.name for p in weights.iterdir()) == before


@pytest.fixture
def local_server(tmp_path, monkeypatch):
    """A real HTTP server on loopback standing in for the checkpoint host: serves `tmp_path/served`."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(api.cli, "SAM_BASE_URL", f"http://127.0.0.1:{server.server_port}/")
    yield served
    server.shutdown()
    server.server_close()


def test_fetch_discards_a_download_whose_sha256_differs(tmp_path, weights, local_server):
    (local_server / "sam_vit_b_01ec64.pth").write_bytes(b"not the official checkpoint" * 1000)
    before = sorted(p.name for p in weights.iterdir())
    result = cli(tmp_path, weights, "fetch", "sam-vit-b")
    assert result.exit_code == 1
    assert "not starting with 01ec64" in result.stderr and "discarded" in result.stderr
    assert sorted(p.name for p in weights.iterdir()) == before


def test_fetch_reports_an_http_error_in_one_line(tmp_path, weights, local_server):
    before = sorted(p.name for p in weights.iterdir())
    result = cli(tmp_path, weights, "fetch", "sam-vit-l")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].endswith("the server answered HTTP 404")
    assert sorted(p.name for p in weights.iterdir()) == before
