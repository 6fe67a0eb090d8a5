"""Configuration from environment variables, with laptop defaults."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # the app's help screen promises 10 MB
MAX_DICOM_BYTES = 50 * 1024 * 1024  # default; a DICOM file carries more (16-bit pixels, frames)
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and the other form fields


def served_models(value: str) -> dict[str, str]:
    """`BRANET_MODELS`, e.g. `ultrasound=branet-us-resnet18-ft-2026.12.01`, comma-separated -> {modality: name}."""
    models = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        modality, _, name = item.partition("=")
        if not name.strip():
            raise ValueError(f"BRANET_MODELS: {item!r} is not modality=model-name")
        models[modality.strip()] = name.strip()
    return models


def from_environment() -> dict:
    """Flask config keys read from the environment; see README's configuration table."""
    max_dicom_bytes = int(os.environ.get("BRANET_MAX_DICOM_BYTES", MAX_DICOM_BYTES))
    return {
        "DATA_DIR": Path(os.environ.get("BRANET_DATA_DIR", REPO_ROOT / "instance")),
        "WEIGHTS_DIR": Path(os.environ.get("BRANET_WEIGHTS_DIR", REPO_ROOT / "weights")),
        "FIREBASE_PROJECT_ID": os.environ.get("BRANET_FIREBASE_PROJECT_ID") or None,
        # Browser origins allowed to call the API (comma-separated); none by default. The native
        # app and the page served at / need none.
        "CORS_ORIGINS": [origin.strip() for origin in os.environ.get("BRANET_CORS_ORIGINS", "").split(",")
                         if origin.strip()],
        # Where analyses are kept: "sqlite" (embedded, the default) or "firebase" (Firestore and
        # Cloud Storage for Firebase; needs the project id and the bucket).
        "STORE": os.environ.get("BRANET_STORE", "sqlite"),
        "FIREBASE_STORAGE_BUCKET": os.environ.get("BRANET_FIREBASE_STORAGE_BUCKET") or None,
        # The web page's sign-in: the Firebase web app's API key (public: it names the project to
        # Firebase Auth, it grants nothing), its auth domain (default <project>.firebaseapp.com),
        # and an Auth emulator, from the variable firebase-admin itself honours.
        "FIREBASE_WEB_API_KEY": os.environ.get("BRANET_FIREBASE_WEB_API_KEY", ""),
        "FIREBASE_AUTH_DOMAIN": os.environ.get("BRANET_FIREBASE_AUTH_DOMAIN") or None,
        "FIREBASE_AUTH_EMULATOR_HOST": os.environ.get("FIREBASE_AUTH_EMULATOR_HOST") or None,
        # Lifetime of the signed image URLs written for the app (V4 signed URLs allow at most 7 days).
        "SIGNED_URL_TTL_S": int(os.environ.get("BRANET_SIGNED_URL_TTL_S", 3600)),
        # An official Segment Anything checkpoint replaces our own segmenters when both are set.
        "SAM_ARCHITECTURE": os.environ.get("BRANET_SAM_ARCHITECTURE") or None,  # vit_b, vit_l or vit_h
        "SAM_CHECKPOINT": os.environ.get("BRANET_SAM_CHECKPOINT") or None,  # e.g. weights/sam_vit_b_01ec64.pth
        # The classifier each modality serves, by card name; unnamed modalities serve the shipped one.
        "MODELS": served_models(os.environ.get("BRANET_MODELS", "")),
        # Per user, on the analysis-creating endpoints only (see api/extensions.py).
        "RATE_LIMIT": os.environ.get("BRANET_RATE_LIMIT", "60 per minute"),
        # memory:// counts per process; use a shared redis:// or memcached:// URI with several workers.
        "RATE_LIMIT_STORAGE": os.environ.get("BRANET_RATE_LIMIT_STORAGE", "memory://"),
        # read_upload applies the limit of the type the file's first bytes show.
        "MAX_IMAGE_BYTES": MAX_IMAGE_BYTES,  # PNG and JPEG
        "MAX_DICOM_BYTES": max_dicom_bytes,
        # Werkzeug refuses a larger body (413) from its Content-Length, before reading it.
        "MAX_CONTENT_LENGTH": max(MAX_IMAGE_BYTES, max_dicom_bytes) + MULTIPART_OVERHEAD,
        "API_TITLE": "BraNet API",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/v1",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
    }
