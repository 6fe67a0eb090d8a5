"""The analysis models, loaded once per process when the app is created."""
from __future__ import annotations

import logging
import time

from flask import Flask, current_app

from ml.cards import MODALITIES, available_cards
from ml.errors import ModelUnavailable, WeightsTampered
from ml.pipeline import Analyzer

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Load every model once, in the process that creates the app (gunicorn's master, with
    `preload_app`). A model that cannot be loaded leaves the app up but not ready; a tampered
    weights file is also marked, so that the server refuses to start (`refusal_to_start`, called
    by gunicorn.conf.py) while `flask weights verify` can still build the app to report it. Each modality serves the classifier that `MODELS` (BRANET_MODELS)
    names, else the shipped one: a fine-tuned version in the weights folder is listed by
    /v1/models but served only once it is named, after someone has read its card."""
    started = time.perf_counter()
    # Every verified model card in the weights folder (shipped and fine-tuned), for /v1/models.
    app.extensions["branet.available_models"] = available_cards(app.config["WEIGHTS_DIR"])
    try:
        official_sam = None
        if app.config["SAM_ARCHITECTURE"] and app.config["SAM_CHECKPOINT"]:
            official_sam = (app.config["SAM_ARCHITECTURE"], app.config["SAM_CHECKPOINT"])
        served = app.config.get("MODELS") or {}
        unknown = set(served) - set(MODALITIES)
        if unknown:
            raise ModelUnavailable(f"MODELS names unknown modalities {sorted(unknown)}")
        analyzer = Analyzer.from_weights(app.config["WEIGHTS_DIR"], official_sam, served)
        for modality, entry in analyzer.models.items():
            if entry.classifier.card.get("modality") != modality:
                raise ModelUnavailable(f"model {entry.classifier.name} is for {entry.classifier.card.get('modality')}, "
                                       f"not {modality}")
        app.extensions["branet.analyzer"] = analyzer
        app.extensions["branet.model_error"] = None
        log.info("models loaded in %.1f s", time.perf_counter() - started)
    except ModelUnavailable as error:
        # The app reports itself not ready, and every analysis answers 503.
        log.error("models not loaded: %s", error)
        app.extensions["branet.analyzer"] = None
        app.extensions["branet.model_error"] = str(error)
        app.extensions["branet.weights_tampered"] = isinstance(error, WeightsTampered)


def refusal_to_start(app: Flask) -> str | None:
    """Why a server must not serve this app at all (a weights file failing its checksum), or None."""
    if app.extensions.get("branet.weights_tampered"):
        return app.extensions["branet.model_error"]
    return None


def get_analyzer() -> Analyzer:
    analyzer = current_app.extensions["branet.analyzer"]
    if analyzer is None:
        raise ModelUnavailable(current_app.extensions["branet.model_error"])
    return analyzer
