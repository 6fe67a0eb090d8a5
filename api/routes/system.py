"""Liveness, readiness and the loaded models."""
from __future__ import annotations

from flask import current_app

from api.extensions import Blueprint
from api.schemas import HealthSchema, ModelListSchema, ReadySchema
from api.store import StoreError, get_store
from ml.cards import finds_rois_without_prompt

blp = Blueprint("system", __name__, url_prefix="/v1", description="Service status")

LOCAL_MODE_MESSAGE = "no Firebase project configured: one local user, listening on 127.0.0.1 only"


@blp.route("/health")
@blp.response(200, HealthSchema)
def health():
    """Liveness: the process answers."""
    mode = current_app.config["AUTH_MODE"]
    body = {"status": "ok", "auth_mode": mode}
    if mode == "local":
        body["message"] = LOCAL_MODE_MESSAGE
    return body


@blp.route("/ready")
@blp.response(200, ReadySchema)
@blp.alt_response(503, schema=ReadySchema)
def ready():
    """Readiness: models loaded and the store writable."""
    model_error = current_app.extensions["branet.model_error"]
    checks = {"models": "ok" if model_error is None else model_error}
    try:
        get_store().check_writable()
        checks["store"] = "ok"
    except StoreError as error:
        checks["store"] = str(error)
    is_ready = all(value == "ok" for value in checks.values())
    return {"ready": is_ready, "checks": checks}, 200 if is_ready else 503


@blp.route("/models")
@blp.response(200, ModelListSchema)
def models():
    """The models in the weights folder (shipped and fine-tuned versions), their versions and
    metrics from their model cards; `served` marks the ones analyses use now."""
    analyzer = current_app.extensions["branet.analyzer"]
    served = analyzer.model_cards() if analyzer else []
    names = {card["name"] for card in served}
    others = [card for card in current_app.extensions.get("branet.available_models", [])
              if card["name"] not in names and {"metrics", "intended_use"} <= card.keys()]
    return {"models": [_listed(card, True) for card in served] + [_listed(card, False) for card in others]}


def _listed(card: dict, served: bool) -> dict:
    """A classifier card (classes, thresholds) or a segmenter card, as /v1/models lists it."""
    listed = {key: card[key] for key in ("modality", "name", "version", "metrics", "intended_use")}
    listed["served"] = served
    if "parent" in card:  # a fine-tuned version
        listed["parent"] = {"name": card["parent"]["name"], "version": card["parent"]["version"]}
        listed["fine_tuning"] = card.get("fine_tuning", {})
    if "classes" in card:
        listed.update(kind="classifier", classes=card["classes"], threshold=card["threshold"]["malignant"],
                      thresholds={"screening": card["threshold"]["malignant"],
                                  "balanced": card["threshold"]["balanced"]},
                      low_confidence=card["reliability"]["low_confidence"])
    else:
        listed.update(kind="segmenter", automatic_rois=finds_rois_without_prompt(card))
    return listed
