"""Real servers for the firebase tests, on loopback, started and stopped by the fixtures:

* the Firebase Auth emulator (firebase-tools 13 from node_modules, run offline: its MOTD fetch and
  usage reporting are switched off through a private config store, its hub and logging ports are
  chosen here so that parallel sessions do not collide);
* a GCS-compatible server (gcp-storage-emulator, from requirements-dev.txt);
* `FaultyProxy`: a plain HTTP proxy in front of the storage server that refuses chosen requests,
  so that a real client sees a real HTTP error part-way through an analysis.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
FIREBASE_CLI = REPO / "node_modules" / ".bin" / "firebase"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start within {seconds} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (it was started in a new session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class AuthEmulator:
    """The Firebase Auth emulator for one project id; users are made through its REST API."""

    def __init__(self, workdir: Path, project_id: str) -> None:
        self.project_id = project_id
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = workdir / "auth-emulator.log"
        config = workdir / "firebase.json"
        config.write_text(json.dumps({"emulators": {
            "auth": {"host": "127.0.0.1", "port": self.port},
            "hub": {"host": "127.0.0.1", "port": free_port()},
            "logging": {"host": "127.0.0.1", "port": free_port()},
            "ui": {"enabled": False},
        }}))
        # firebase-tools reads its settings from $XDG_CONFIG_HOME/configstore: a fresh MOTD means no
        # fetch from firebaseio.com, and usage reporting stays off.
        store = workdir / "xdg" / "configstore"
        store.mkdir(parents=True)
        (store / "firebase-tools.json").write_text(json.dumps(
            {"motd": {"fetched": int(time.time() * 1000)}, "usage": False}))
        env = {**os.environ, "HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir / "xdg"),
               "FIREBASE_CLI_DISABLE_UPDATE_CHECK": "true", "NO_UPDATE_NOTIFIER": "1", "CI": "true"}
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [str(FIREBASE_CLI), "emulators:start", "--only", "auth", "--project", project_id,
                 "--config", str(config)],
                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_until_up(f"http://{self.host}/", self.process, self.log, seconds=120)

    def stop(self) -> None:
        _stop(self.process)

    def _identity(self, method: str) -> str:
        return f"http://{self.host}/identitytoolkit.googleapis.com/v1/accounts:{method}?key=any-api-key"

    def sign_up(self, email: str, password: str = "correct-horse-battery") -> dict:
        """A new email/password user; returns the emulator's answer (`localId`, `idToken`...)."""
        response = requests.post(self._identity("signUp"), timeout=10,
                                 json={"email": email, "password": password, "returnSecureToken": True})
        response.raise_for_status()
        return response.json()

    def sign_in(self, email: str, password: str = "correct-horse-battery") -> str:
        """A fresh ID token for the user, as the app gets one."""
        response = requests.post(self._identity("signInWithPassword"), timeout=10,
                                 json={"email": email, "password": password, "returnSecureToken": True})
        response.raise_for_status()
        return response.json()["idToken"]


class StorageServer:
    """gcp-storage-emulator in memory, with one bucket."""

    def __init__(self, workdir: Path, bucket: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "storage-server.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                 "--port", str(self.port), "--default-bucket", bucket, "--in-memory"],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_until_up(self.url + "/", self.process, self.log, seconds=60)

    def stop(self) -> None:
        _stop(self.process)


class FaultyProxy:
    """Forwards every request to `target`, except that after `allow_uploads` object uploads it
    refuses further uploads with 403 (a status the storage client does not retry)."""

    def __init__(self, target_port: int) -> None:
        self.allow_uploads: int | None = None
        self.uploads = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and self.path.startswith("/upload/"):
                    proxy.uploads += 1
                    if proxy.allow_uploads is not None and proxy.uploads > proxy.allow_uploads:
                        error = json.dumps({"error": {"code": 403, "message": "injected upload failure"}}).encode()
                        self.send_response(403)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(error)))
                        self.end_headers()
                        self.wfile.write(error)
                        return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
