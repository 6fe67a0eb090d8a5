"""BraNet API: the HTTP layer. It knows nothing of tensors; `ml` does the analysis."""
from __future__ import annotations

import logging

from flask import Flask

from api import auth, cli, errors, extensions, models, observability, store
from api.config import from_environment
from api.routes import analyses, legacy, reports, system, web


def create_app(config: dict | None = None) -> Flask:
    """Application factory: environment configuration, overridden by `config` (tests)."""
    app = Flask(__name__)
    app.config.update(from_environment())
    app.config.update(config or {})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    observability.init_app(app)  # first, so that its request timing wraps every other hook
    openapi = extensions.init_app(app)
    errors.init_app(app)  # after the OpenAPI extension, so that its JSON errors take over
    auth.init_app(app)
    store.init_app(app)
    models.init_app(app)
    for module in (analyses, legacy, reports, system):
        openapi.register_blueprint(module.blp)
    app.register_blueprint(web.blp)  # the clinicians' page at /, outside the OpenAPI document
    app.cli.add_command(cli.weights)
    return app
