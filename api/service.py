"""The analysis use case shared by the v1 API and the app's legacy route."""
from __future__ import annotations

import datetime as dt
import time
import uuid

from flask import current_app, url_for

from api.errors import APIError
from api.models import get_analyzer
from api.store import get_store

ORIGINAL = "original.png"


def read_upload(file_storage) -> bytes:
    """The uploaded file's bytes, refusing a missing part or one over the size limit."""
    if file_storage is None:
        raise APIError(400, "missing_file", "a multipart part named 'file' is required")
    limit = current_app.config["MAX_IMAGE_BYTES"]
    data = file_storage.stream.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, "payload_too_large", f"the image must be at most {limit} bytes")
    return data


def analyse_and_store(user_id: str, data: bytes, modality: str, extract_roi: bool) -> dict:
    """Run the pipeline and store its result; either everything is stored or nothing is."""
    started = time.perf_counter()
    analysis = get_analyzer().analyse(data, modality, extract_roi=extract_roi)
    record = {
        "id": str(uuid.uuid4()),
        "modality": analysis.modality,
        "label": analysis.label,
        "probabilities": analysis.probabilities,
        "threshold": analysis.threshold,
        "extract_roi": extract_roi,
        "model": {"name": analysis.model_name, "version": analysis.model_version},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "stage_ms": analysis.stage_ms,
        "images": [ORIGINAL],
    }
    get_store().save_analysis(user_id, record, {ORIGINAL: analysis.image.png})
    return record


def present(record: dict) -> dict:
    """A stored record as the v1 API shows it: image names become owner-only URLs."""
    shown = dict(record)
    shown["images"] = {
        name.rsplit(".", 1)[0]: url_for("analyses.image", analysis_id=record["id"], name=name)
        for name in record["images"]
    }
    return shown
