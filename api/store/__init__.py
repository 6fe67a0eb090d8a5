"""Storage behind one interface: the embedded SQLite store by default, Firebase in production."""
from __future__ import annotations

from typing import Mapping

from flask import Flask, current_app

from api.store.base import Store, StoreError
from api.store.sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "SQLiteStore", "init_app", "get_store", "open_store"]


def open_store(config: Mapping) -> Store:
    """The store `config` (the app's configuration keys, e.g. `api.config.from_environment()`)
    names. Needs no Flask app, so that command lines outside the service, such as
    `python -m ml.feedback export`, open the very store the service uses."""
    return SQLiteStore(config["DATA_DIR"])


def init_app(app: Flask) -> None:
    app.extensions["branet.store"] = open_store(app.config)


def get_store() -> Store:
    return current_app.extensions["branet.store"]
