"""Flask extensions, set up in one place."""
from __future__ import annotations

import swagger_ui_bundle
from flask import Flask, request, send_from_directory
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict

from api.auth import current_user
from api.errors import APIError
from api.schemas import ApiErrorSchema

SWAGGER_ASSETS = "/v1/docs/assets/"
# Only the requests that run an analysis are rate limited: POST /v1/analyses, its rerun and the app's route.
RATE_LIMITED_ENDPOINTS = frozenset({"analyses.Analyses", "analyses.rerun", "legacy.evaluate_image"})


class ArgumentsParser(FlaskParser):
    """Invalid input is a 400 Bad Request, as the API promises (webargs defaults to 422)."""

    DEFAULT_VALIDATION_STATUS = 400


arguments_parser = ArgumentsParser()


@arguments_parser.location_loader("multipart")
def load_multipart(request, schema):
    """Form fields and files of one multipart/form-data body, validated by one schema."""
    return MultiDictProxy(CombinedMultiDict([request.form, request.files]), schema)


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = arguments_parser
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **SmorestBlueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
    }


class OpenAPI(Api):
    """Errors are documented per route with the service's own error schema."""

    DEFAULT_ERROR_RESPONSE_NAME = None
    # The 400 that `Blueprint.arguments` documents by itself answers the service's own error body.
    ERROR_SCHEMA = ApiErrorSchema


def rate_limit_key() -> str:
    """The caller's user id; the client address when the caller is not authenticated.

    Refused callers share their address's budget and are then refused by the route itself (401).
    """
    try:
        return f"user:{current_user()}"
    except APIError:
        return f"addr:{get_remote_address()}"


def _not_rate_limited() -> bool:
    return not (request.method == "POST" and request.endpoint in RATE_LIMITED_ENDPOINTS)


def init_app(app: Flask) -> OpenAPI:
    """Set up the extensions; returns the OpenAPI extension, which registers the blueprints."""
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", SWAGGER_ASSETS)
    openapi = OpenAPI(app)
    origins = app.config["CORS_ORIGINS"]
    if origins:
        CORS(app, origins=origins, supports_credentials=False)
    # A refusal is a RateLimitExceeded (429) rendered as JSON by api.errors; headers_enabled
    # adds Retry-After (and X-RateLimit-*) to the responses of the limited endpoints.
    Limiter(
        rate_limit_key,
        app=app,
        default_limits=[app.config["RATE_LIMIT"]],
        default_limits_exempt_when=_not_rate_limited,
        storage_uri=app.config["RATE_LIMIT_STORAGE"],
        headers_enabled=True,
    )

    @app.get(f"{SWAGGER_ASSETS}<path:filename>")
    def swagger_assets(filename: str):
        """The docs page's JavaScript and CSS, served from the installed package (no CDN)."""
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    return openapi
