"""Every error is JSON: `{"error": {"code", "message"}}` on v1, the app's envelope on its route.

One helper builds every error response; handlers map HTTP errors, webargs validation errors and
the domain errors raised by `ml` to it. Unexpected exceptions become a 500 without a stack trace.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from api.observability import count_error
from api.store import StoreError
from ml.errors import (
    FeatureUnavailable,
    ImageTooLarge,
    InvalidImage,
    MLError,
    ModalityMismatch,
    ModelUnavailable,
    NoImageContent,
    UnsupportedImageType,
    UnsupportedModality,
)

log = logging.getLogger(__name__)

ML_STATUS = {
    UnsupportedImageType: 415,
    InvalidImage: 400,
    ImageTooLarge: 413,
    NoImageContent: 422,
    UnsupportedModality: 400,
    ModalityMismatch: 400,
    FeatureUnavailable: 501,
    ModelUnavailable: 503,
}

# The existing app's route answers in its own envelope with the codes it knows.
# The app alerts on the first two; any other code shows its generic error.
LEGACY_CODES = {
    "unsupported_media_type": "NO FILE ALLOWED",
    "invalid_image": "NO FILE ALLOWED",
    "missing_file": "NO DATA UPLOAD",
    "unauthorized": "NO TOKEN ID VERIFIED",
    "feature_unavailable": "ROI EXTRACTION UNAVAILABLE",
    "no_roi_found": "NO ROI FOUND",
    "no_image_content": "NO IMAGE CONTENT",
    "payload_too_large": "FILE TOO LARGE",
    "image_too_large": "FILE TOO LARGE",
    "unsupported_modality": "MODALITY NOT SUPPORTED",
    "modality_mismatch": "MODALITY MISMATCH",
    "validation_error": "INVALID REQUEST",
    "model_unavailable": "ANALYSIS FAILED",
    "store_unavailable": "ANALYSIS NOT STORED",
}
# Codes for HTTP errors raised by Flask/Werkzeug where their own names read poorly.
HTTP_CODES = {413: "payload_too_large"}


class APIError(Exception):
    """Raised by route code for a refusal that is not an `ml` domain error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, details: dict | None = None) -> Response:
    count_error(code)
    if request.blueprint == "legacy":
        info = LEGACY_CODES.get(code, code.upper().replace("_", " "))
        body = {"result": "ERROR", "aditionalInfo": info, "idResult": None}
    else:
        body = {"error": {"code": code, "message": message}}
        if details:
            body["error"]["details"] = details
    response = jsonify(body)
    response.status_code = status
    return response


def _http_code(error: HTTPException) -> str:
    return HTTP_CODES.get(error.code, (error.name or "error").lower().replace(" ", "_"))


def handle_http(error: HTTPException) -> Response:
    details = None
    data = getattr(error, "data", None) or {}
    if "messages" in data:  # webargs/marshmallow validation failure
        details = data["messages"]
        message = "the request is not valid: see details"
        return error_response(400, "validation_error", message, details)
    return error_response(error.code or 500, _http_code(error), error.description or "")


def handle_api_error(error: APIError) -> Response:
    return error_response(error.status, error.code, error.message)


def handle_ml_error(error: MLError) -> Response:
    status = next((s for kind, s in ML_STATUS.items() if isinstance(error, kind)), 500)
    if status >= 500:
        log.error("analysis failed: %s", error)
    return error_response(status, error.code, str(error))


STORE_FAILURES = {
    "disk_full": "the store's disk is full",
    "read_only": "the store is read-only",
}


def handle_store_error(error: StoreError) -> Response:
    log.error("store failure: %s", error)
    reason = getattr(error, "reason", "unavailable")
    cause = STORE_FAILURES.get(reason, "the store failed")
    return error_response(503, "store_unavailable", f"{cause}: the request was not completed and nothing was kept",
                          {"reason": reason})


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "the server failed; nothing was stored")


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(MLError, handle_ml_error)
    app.register_error_handler(StoreError, handle_store_error)
    app.register_error_handler(Exception, handle_unexpected)
