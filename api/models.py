"""The analysis models, loaded once per process when the app is created."""
from __future__ import annotations

import logging

from flask import Flask, current_app

from ml.errors import ModelUnavailable
from ml.pipeline import Analyzer

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    try:
        official_sam = None
        if app.config["SAM_ARCHITECTURE"] and app.config["SAM_CHECKPOINT"]:
            official_sam = (app.config["SAM_ARCHITECTURE"], app.config["SAM_CHECKPOINT"])
        app.extensions["branet.analyzer"] = Analyzer.from_weights(app.config["WEIGHTS_DIR"], official_sam)
        app.extensions["branet.model_error"] = None
    except ModelUnavailable as error:
        # The service starts but reports itself not ready, and every analysis answers 503.
        log.error("models not loaded: %s", error)
        app.extensions["branet.analyzer"] = None
        app.extensions["branet.model_error"] = str(error)


def get_analyzer() -> Analyzer:
    analyzer = current_app.extensions["branet.analyzer"]
    if analyzer is None:
        raise ModelUnavailable(current_app.extensions["branet.model_error"])
    return analyzer
