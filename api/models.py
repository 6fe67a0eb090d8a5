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
    `preload_app`). A tampered weights file stops the start; any other missing model leaves the
    service up but not ready. Each modality serves the classifier that `MODELS` (BRANET_MODELS)
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
