"""Fixtures: an app built by the factory on a temporary data folder, and real images."""
from __future__ import annotations

import io
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from api import create_app

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.firebase_support.fixtures"]  # the `firebase` tests' servers and stores


def _shared_data() -> Path:
    for candidate in (os.environ.get("BRANET_SHARED_DATA"), REPO.parent / "shared" / "data", "/work/shared/data"):
        if candidate and (Path(candidate) / "busbra" / "labels.csv").exists():
            return Path(candidate)
    raise RuntimeError("the data sets are not found: set BRANET_SHARED_DATA to the shared/data folder")


SHARED_DATA = _shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def busbra_png() -> bytes:
    return (SHARED_DATA / "busbra" / "images" / "bus_0002-l.png").read_bytes()


@pytest.fixture(scope="session")
def mias_png() -> bytes:
    return (SHARED_DATA / "mias" / "images" / "mdb001.png").read_bytes()


@pytest.fixture
def app(tmp_path):
    return create_app({"TESTING": True, "DATA_DIR": tmp_path / "data"})


@pytest.fixture
def client(app):
    return app.test_client()


def flip_one_byte(path: Path, offset: int = 1000) -> None:
    """Tamper with a file in place: one byte inverted, so that its sha256 no longer matches."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def copy_to_another_owner(app, analysis_id: str, owner: str = "someone-else") -> dict:
    """The local user's analysis saved again, under a new id, as another user's: a record that
    exists but that the local user must never reach."""
    store = app.extensions["branet.store"]
    record = store.get_analysis("local", analysis_id)
    images = {name: store.read_image("local", analysis_id, name) for name in record["images"]}
    foreign = {key: value for key, value in record.items() if key != "feedback"}
    foreign["id"] = str(uuid.uuid4())
    store.save_analysis(owner, foreign, images)
    return foreign


def png_bytes(array: np.ndarray, mode: str | None = None, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def upload(client, data: bytes, modality: str = "ultrasound", filename: str = "image.png", **fields):
    form = {"modality": modality, "file": (io.BytesIO(data), filename), **fields}
    return client.post("/v1/analyses", data=form, content_type="multipart/form-data")


def record_count(client) -> int:
    return client.get("/v1/analyses").get_json()["total"]


@contextmanager
def unlimited_single_thread_app(data_dir: Path, **config):
    """An app for suites that send hundreds of requests: the rate limit is lifted, and inference
    runs on one torch thread, since on a busy CI machine torch's thread pool spinning against other
    processes makes each small analysis many times slower. The thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield create_app({"TESTING": True, "DATA_DIR": data_dir, "RATE_LIMIT": "100000 per minute", **config})
    finally:
        torch.set_num_threads(threads)
