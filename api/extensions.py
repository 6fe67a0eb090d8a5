"""Flask extensions, set up in one place."""
from __future__ import annotations

import swagger_ui_bundle
from flask import Flask, send_from_directory
from flask_cors import CORS
from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict

SWAGGER_ASSETS = "/v1/docs/assets/"


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


def init_app(app: Flask) -> OpenAPI:
    """Set up the extensions; returns the OpenAPI extension, which registers the blueprints."""
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", SWAGGER_ASSETS)
    openapi = OpenAPI(app)
    origins = app.config.get("CORS_ORIGINS") or []
    if origins:
        CORS(app, origins=origins, supports_credentials=False)

    @app.get(f"{SWAGGER_ASSETS}<path:filename>")
    def swagger_assets(filename: str):
        """The docs page's JavaScript and CSS, served from the installed package (no CDN)."""
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    return openapi
