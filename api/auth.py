"""Who is calling.

With no Firebase project configured the service serves one local user (and binds to loopback
only); any bearer token is ignored. With a project configured, every request must carry a
Firebase ID token, verified with firebase-admin, and the user id comes only from that token.
"""
from __future__ import annotations

import logging
import time

import firebase_admin
import firebase_admin.exceptions
from firebase_admin import auth as firebase_auth
from flask import Flask, current_app, g, request
from google.auth.exceptions import DefaultCredentialsError

from api.errors import APIError
from api.firebase_app import firebase_app

LOCAL_USER = "local"
log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    project_id = app.config["FIREBASE_PROJECT_ID"]
    if not project_id:
        app.config["AUTH_MODE"] = "local"
        log.warning(
            "No Firebase project configured: serving one local user; bearer tokens are ignored and "
            "the service must listen on 127.0.0.1 only."
        )
        return
    app.config["AUTH_MODE"] = "firebase"
    app.extensions["branet.firebase_app"] = firebase_app(project_id, app.config.get("FIREBASE_STORAGE_BUCKET"))


def current_user() -> str:
    """The caller's user id; raises a 401 APIError when a required token is missing or invalid."""
    if "user_id" in g:
        return g.user_id
    if current_app.config["AUTH_MODE"] == "local":
        g.user_id = LOCAL_USER
        return g.user_id
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "unauthorized", "a Firebase ID token is required: Authorization: Bearer <token>")
    try:
        claims = firebase_auth.verify_id_token(
            token.strip(), app=current_app.extensions["branet.firebase_app"], check_revoked=True
        )
    except (firebase_auth.CertificateFetchError, DefaultCredentialsError) as error:
        log.error("ID tokens cannot be verified: %s", type(error).__name__)
        raise APIError(503, "auth_unavailable", "ID tokens cannot be verified right now") from None
    except (ValueError, firebase_auth.InvalidIdTokenError, firebase_auth.UserDisabledError,
            firebase_auth.UserNotFoundError) as error:
        raise APIError(401, "unauthorized", f"the ID token was refused: {type(error).__name__}") from None
    except firebase_admin.exceptions.FirebaseError as error:  # the revocation lookup failed
        log.error("ID token revocation cannot be checked: %s", type(error).__name__)
        raise APIError(503, "auth_unavailable", "ID tokens cannot be verified right now") from None
    # firebase-admin checks expiry while checking the signature, which the Auth emulator's unsigned
    # tokens do not have; checked here too so that no configuration accepts an expired token.
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] <= time.time():
        raise APIError(401, "unauthorized", "the ID token was refused: ExpiredIdTokenError")
    g.user_id = claims["uid"]
    return g.user_id
