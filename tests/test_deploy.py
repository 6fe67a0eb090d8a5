"""Deployment as written: app.yaml's entrypoint run verbatim, and a tampered model stopping the start."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from api.config import REPO_ROOT
from benchmarks.load import free_port
from conftest import flip_one_byte

START_LIMIT_S = 60  # issue 8: ready within a minute of start on this machine


def _entrypoint_environment(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment App Engine gives the entrypoint: PORT, plus app.yaml's variables except the
    Firebase ones (so the local single-user mode and embedded store, needing no Google credentials);
    the virtual environment's bin first on PATH, as on an instance where gunicorn is installed."""
    app_yaml = yaml.safe_load((REPO_ROOT / "app.yaml").read_text())
    deployed = {name: value for name, value in app_yaml["env_variables"].items()
                if not name.startswith("BRANET_FIREBASE_") and name != "BRANET_STORE"}
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("BRANET_FIREBASE_") and name != "BRANET_STORE"}
    env.update(deployed, PORT=str(port), BRANET_DATA_DIR=str(tmp_path / "data"), **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _start_entrypoint(env: dict[str, str]) -> subprocess.Popen:
    entrypoint = yaml.safe_load((REPO_ROOT / "app.yaml").read_text())["entrypoint"]
    return subprocess.Popen(["bash", "-c", f"exec {entrypoint}"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.stdout.read()


def test_app_yaml_entrypoint_is_ready_within_a_minute_with_models_loaded_once(tmp_path, mias_png):
    port = free_port()
    process = _start_entrypoint(_entrypoint_environment(tmp_path, port))
    started = time.monotonic()
    ready_after = None
    try:
        while time.monotonic() - started < START_LIMIT_S:
            assert process.poll() is None, "the entrypoint exited before it was ready"
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/ready", timeout=2).status_code == 200:
                    ready_after = time.monotonic() - started
                    break
            except requests.ConnectionError:
                time.sleep(0.25)
        analysed = None
        if ready_after is not None:
            analysed = requests.post(f"http://127.0.0.1:{port}/v1/analyses", data={"modality": "mammography"},
                                     files={"file": ("mdb001.png", mias_png)}, timeout=60)
    finally:
        output = _stop(process)
    assert ready_after is not None, f"not ready within {START_LIMIT_S} s:\n{output[-2000:]}"
    assert analysed.status_code == 201
    # preload_app: the models load once, in the master, however many workers and threads serve.
    assert output.count("models loaded in") == 1, output[-2000:]


def test_a_tampered_weights_file_stops_the_entrypoint_with_a_clear_message(tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(REPO_ROOT / "weights", weights)
    flip_one_byte(weights / "branet-mg-resnet18.pt")
    process = _start_entrypoint(_entrypoint_environment(tmp_path, free_port(), BRANET_WEIGHTS_DIR=str(weights)))
    try:
        code = process.wait(timeout=START_LIMIT_S)
    except subprocess.TimeoutExpired:
        code = None
    output = _stop(process)
    assert code not in (None, 0), f"the service started on a tampered weights file:\n{output[-2000:]}"
    assert "refusing to start" in output and "branet-mg-resnet18.pt has sha256" in output


@pytest.mark.parametrize("name", [".gcloudignore", ".dockerignore"])
def test_deployment_ignores_local_state(name):
    ignored = (REPO_ROOT / name).read_text().split()
    assert {"runs/", ".venv/", "instance/", "tests/", "weights/split0/",
            "weights/candidates/"} <= {line.lstrip("/") for line in ignored}
