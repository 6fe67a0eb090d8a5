"""Storage behind one interface: the embedded SQLite store by default, Firebase in production."""
from __future__ import annotations

from flask import Flask, current_app

from api.store.base import Store, StoreError
from api.store.sqlite import SQLiteStore

__all__ = ["Store", "StoreError", "SQLiteStore", "init_app", "get_store"]


def init_app(app: Flask) -> None:
    app.extensions["branet.store"] = SQLiteStore(app.config["DATA_DIR"])


def get_store() -> Store:
    return current_app.extensions["branet.store"]
