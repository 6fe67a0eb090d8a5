"""Storage behind one interface: the embedded SQLite store by default, Firebase in production."""
from __future__ import annotations

import datetime as dt
from typing import Mapping

from firebase_admin import firestore, storage
from flask import Flask, current_app

from api.firebase_app import firebase_app
from api.store.base import Store, StoreError
from api.store.firebase import FirebaseStore
from api.store.sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "SQLiteStore", "FirebaseStore", "init_app", "get_store", "open_store"]


def open_store(config: Mapping) -> Store:
    """The store `config` (the app's configuration keys, e.g. `api.config.from_environment()`)
    names. Needs no Flask app, so that command lines outside the service, such as
    `python -m ml.feedback export`, open the very store the service uses."""
    kind = config.get("STORE", "sqlite")
    if kind == "sqlite":
        return SQLiteStore(config["DATA_DIR"])
    if kind != "firebase":
        raise RuntimeError(f"BRANET_STORE must be 'sqlite' or 'firebase', not {kind!r}")
    if not config.get("FIREBASE_PROJECT_ID") or not config.get("FIREBASE_STORAGE_BUCKET"):
        raise RuntimeError("BRANET_STORE=firebase needs BRANET_FIREBASE_PROJECT_ID and BRANET_FIREBASE_STORAGE_BUCKET")
    ttl = config.get("SIGNED_URL_TTL_S", 3600)
    if not 1 <= ttl <= 7 * 24 * 3600:
        raise RuntimeError("BRANET_SIGNED_URL_TTL_S must be between 1 and 604800 seconds (7 days)")
    app = firebase_app(config["FIREBASE_PROJECT_ID"], config["FIREBASE_STORAGE_BUCKET"])
    # FIRESTORE_CLIENT: the tests' in-memory stand-in, when no Firestore emulator runs.
    client = config.get("FIRESTORE_CLIENT") or firestore.client(app)
    return FirebaseStore(client, storage.bucket(app=app), dt.timedelta(seconds=ttl))


def init_app(app: Flask) -> None:
    app.extensions["branet.store"] = open_store(app.config)


def get_store() -> Store:
    return current_app.extensions["branet.store"]
