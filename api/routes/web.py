"""The clinicians' web page at `/`: static HTML, CSS and ES modules from api/web/, no CDN.

Local single-user mode needs nothing but these files. Firebase mode signs in with the Firebase JS
SDK, bundled by `scripts/build-web` into api/web/dist/ (gitignored) and served from here too.
The page is not part of the JSON API, so this is a plain Flask blueprint, outside the OpenAPI
document. Its responses carry their own Content-Security-Policy (the API's own is `default-src
'none'`, which would block the page); api.observability only sets the header where none is set.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, send_from_directory

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
FIREBASE_BUNDLE = WEB_DIR / "dist" / "firebase.js"
# Firebase Auth's REST endpoints, reached by the SDK's email/password sign-in and token refresh.
FIREBASE_ORIGINS = ("https://identitytoolkit.googleapis.com", "https://securetoken.googleapis.com")

blp = Blueprint("web", __name__)


def _firebase_web_config() -> dict | None:
    """The public web configuration of the Firebase project (none in local mode)."""
    config = current_app.config
    project_id = config["FIREBASE_PROJECT_ID"]
    if not project_id:
        return None
    emulator = config["FIREBASE_AUTH_EMULATOR_HOST"]
    return {
        "projectId": project_id,
        "apiKey": config["FIREBASE_WEB_API_KEY"],
        "authDomain": config["FIREBASE_AUTH_DOMAIN"] or f"{project_id}.firebaseapp.com",
        "authEmulator": f"http://{emulator}" if emulator else None,
    }


def _csp(firebase: dict | None) -> str:
    connect = ["'self'"]
    if firebase:
        connect += FIREBASE_ORIGINS
        if firebase["authEmulator"]:
            parts = urlsplit(firebase["authEmulator"])
            connect.append(f"{parts.scheme}://{parts.netloc}")
    # blob: images are the owner-only images, fetched with the caller's token.
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        f"connect-src {' '.join(connect)}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _page_response(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _csp(_firebase_web_config())
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.get("/")
def index():
    """The page itself."""
    return _page_response(send_from_directory(WEB_DIR, "index.html", max_age=0))


@blp.get("/web/config.json")
def config():
    """How the page signs in: local mode, or Firebase with its public web configuration."""
    firebase = _firebase_web_config()
    body = {
        "auth_mode": current_app.config.get("AUTH_MODE", "local"),
        "firebase": firebase,
        "firebase_bundle": "/web/dist/firebase.js" if FIREBASE_BUNDLE.exists() else None,
    }
    return _page_response(jsonify(body))


@blp.get("/web/<path:filename>")
def asset(filename: str):
    """The page's modules, styles and the Firebase bundle; send_from_directory refuses `..`."""
    return _page_response(send_from_directory(WEB_DIR, filename, max_age=0))
