"""pytest fixtures for the `firebase` tests (loaded by tests/conftest.py).

One session starts the Auth emulator and the storage server once, points firebase-admin at them
through its own environment variables, and stops them at the end. Firestore is the emulator when
FIRESTORE_EMULATOR_HOST is set, else the in-memory stand-in (a fresh one per test).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from api import create_app
from api.store import open_store
from tests.firebase_support import firestore_standin
from tests.firebase_support.servers import REPO, AuthEmulator, FaultyProxy, StorageServer

PROJECT_ID = "demo-branet-store"  # demo-*: the emulators never reach a real project
BUCKET = f"{PROJECT_ID}.appspot.com"


@dataclass
class FirebaseServers:
    auth: AuthEmulator
    storage: StorageServer
    proxy: FaultyProxy  # what the service talks to, in front of `storage`
    project_id: str = PROJECT_ID
    bucket: str = BUCKET

    def objects(self, prefix: str) -> dict[str, storage.Blob]:
        """What the storage server holds under `prefix`, asked directly, not through the proxy."""
        client = storage.Client(project=PROJECT_ID, credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": self.storage.url})
        return {blob.name: blob for blob in client.list_blobs(BUCKET, prefix=prefix)}


def _signing_key(path: Path) -> Path:
    """A service-account key made for this session (never committed): Application Default
    Credentials that sign URLs locally, as a key from GOOGLE_APPLICATION_CREDENTIALS does."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT_ID, "private_key_id": "test-session",
        "private_key": pem, "client_email": f"branet-api@{PROJECT_ID}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "http://127.0.0.1:9/token",  # never reachable: no token is fetched
    }))
    return path


@pytest.fixture(scope="session")
def firebase_servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("firebase")
    storage_server = StorageServer(workdir, BUCKET)
    proxy = FaultyProxy(storage_server.port)
    auth = None
    with pytest.MonkeyPatch.context() as env:
        try:
            auth = AuthEmulator(workdir, PROJECT_ID)
            env.setenv("FIREBASE_AUTH_EMULATOR_HOST", auth.host)
            env.setenv("STORAGE_EMULATOR_HOST", proxy.url)
            env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_signing_key(workdir / "service-account.json")))
            yield FirebaseServers(auth, storage_server, proxy)
        finally:
            if auth is not None:
                auth.stop()
            proxy.stop()
            storage_server.stop()


def _firestore_client(wipe: bool) -> firestore_standin.Client | None:
    """None (`open_store` then makes the emulator's client) when FIRESTORE_EMULATOR_HOST is set,
    the emulator wiped first if asked; else a fresh in-memory stand-in."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if not host:
        return firestore_standin.Client(REPO / "firestore.indexes.json")
    if wipe:
        requests.delete(f"http://{host}/emulator/v1/projects/{PROJECT_ID}/databases/(default)/documents",
                        timeout=10).raise_for_status()
    return None


def _config(firestore_client, data_dir: Path) -> dict:
    """The configuration an operator sets for the Firebase store, plus the stand-in when used."""
    return {"STORE": "firebase", "FIREBASE_PROJECT_ID": PROJECT_ID, "FIREBASE_STORAGE_BUCKET": BUCKET,
            "SIGNED_URL_TTL_S": 900, "FIRESTORE_CLIENT": firestore_client, "DATA_DIR": data_dir}


@pytest.fixture
def firebase_config(firebase_servers, tmp_path) -> dict:
    """For the store contract, whose users have fixed names: an empty Firestore for each test."""
    return _config(_firestore_client(wipe=True), tmp_path / "data")


@pytest.fixture
def firebase_store(firebase_config):
    return open_store(firebase_config)


@pytest.fixture(scope="module")
def firebase_app(firebase_servers, tmp_path_factory):
    """The service on the Firebase store, one per test module (loading the models takes seconds);
    its tests keep apart by making their own users."""
    config = _config(_firestore_client(wipe=False), tmp_path_factory.mktemp("data"))
    return create_app({"TESTING": True, "RATE_LIMIT": "100000 per minute", **config})
