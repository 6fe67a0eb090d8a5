"""The analysis models, loaded once per process when the app is created."""
from __future__ import annotations

import logging
import time

from flask import Flask, current_app

from ml.errors import ModelUnavailable, WeightsTampered
from ml.pipeline import Analyzer

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Load every model once, in the process that creates the app (gunicorn's master, with
    `preload_app`). A tampered weights file stops the start; any other missing model leaves the
    service up but not ready."""
    started = time.perf_counter()
    try:
        official_sam = None
        if app.config["SAM_ARCHITECTURE"] and app.config["SAM_CHECKPOINT"]:
            official_sam = (app.config["SAM_ARCHITECTURE"], app.config["SAM_CHECKPOINT"])
        app.extensions["branet.analyzer"] = Analyzer.from_weights(app.config["WEIGHTS_DIR"], official_sam)
        app.extensions["branet.model_error"] = None
        log.info("models loaded in %.1f s", time.perf_counter() - started)
    except WeightsTampered as error:
        log.critical("refusing to start: %s", error)
        raise
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
