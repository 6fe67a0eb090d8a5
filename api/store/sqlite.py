"""Embedded default store: SQLite for records, files on disk for images, under one folder."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from contextlib import closing
from pathlib import Path
from typing import Iterator

from api.store.base import Store, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at TEXT NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS analyses_history ON analyses (owner, is_active, created_at DESC);
CREATE TABLE IF NOT EXISTS feedback (
    analysis_id TEXT NOT NULL REFERENCES analyses (id),
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (analysis_id, version)
);
"""


class SQLiteStore(Store):
    """Thread- and process-safe: one short-lived connection per operation, WAL journal."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.images_root = self.root / "images"
        self.images_root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "branet.sqlite3"
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def _image_dir(self, analysis_id: str) -> Path:
        # Ids are server-made UUIDs; anything else never reaches the file system.
        return self.images_root / str(uuid.UUID(analysis_id))

    def save_analysis(self, owner: str, record: dict, images: dict[str, bytes]) -> None:
        final_dir = self._image_dir(record["id"])
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.images_root))
        try:
            for name, data in images.items():
                (staging / name).write_bytes(data)
            os.replace(staging, final_dir)
            with closing(self._connect()) as db, db:
                db.execute(
                    "INSERT INTO analyses (id, owner, created_at, is_active, record) VALUES (?, ?, ?, 1, ?)",
                    (record["id"], owner, record["created_at"], json.dumps(record)),
                )
        except (OSError, sqlite3.Error) as error:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final_dir, ignore_errors=True)
            raise StoreError(f"could not save analysis: {error}") from error

    def _active_row(self, db: sqlite3.Connection, owner: str, analysis_id: str) -> sqlite3.Row | None:
        return db.execute(
            "SELECT record FROM analyses WHERE id = ? AND owner = ? AND is_active = 1",
            (analysis_id, owner),
        ).fetchone()

    def get_analysis(self, owner: str, analysis_id: str) -> dict | None:
        with closing(self._connect()) as db:
            row = self._active_row(db, owner, analysis_id)
            if row is None:
                return None
            record = json.loads(row["record"])
            record["feedback"] = [
                json.loads(body)
                for (body,) in db.execute(
                    "SELECT body FROM feedback WHERE analysis_id = ? ORDER BY version", (analysis_id,)
                )
            ]
        return record

    def list_analyses(self, owner: str, limit: int, offset: int) -> tuple[list[dict], int]:
        with closing(self._connect()) as db:
            (total,) = db.execute(
                "SELECT COUNT(*) FROM analyses WHERE owner = ? AND is_active = 1", (owner,)
            ).fetchone()
            rows = db.execute(
                "SELECT record FROM analyses WHERE owner = ? AND is_active = 1 "
                "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (owner, limit, offset),
            ).fetchall()
        return [json.loads(row["record"]) for row in rows], total

    def deactivate(self, owner: str, analysis_id: str) -> bool:
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "UPDATE analyses SET is_active = 0 WHERE id = ? AND owner = ? AND is_active = 1",
                (analysis_id, owner),
            )
        return cursor.rowcount == 1

    def add_feedback(self, owner: str, analysis_id: str, feedback: dict,
                     masks: dict[str, bytes] | None = None) -> dict | None:
        written: list[Path] = []
        try:
            with closing(self._connect()) as db, db:
                db.execute("BEGIN IMMEDIATE")  # serialises version numbering across processes
                if self._active_row(db, owner, analysis_id) is None:
                    return None
                (latest,) = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM feedback WHERE analysis_id = ?",
                    (analysis_id,),
                ).fetchone()
                version = latest + 1
                names = {kind: f"feedback{version}_{kind}.png" for kind in (masks or {})}
                for kind, name in names.items():
                    path = self._image_dir(analysis_id) / name
                    path.write_bytes(masks[kind])
                    written.append(path)
                stored = {**feedback, "version": version, "masks": names}
                db.execute(
                    "INSERT INTO feedback (analysis_id, version, body) VALUES (?, ?, ?)",
                    (analysis_id, version, json.dumps(stored)),
                )
        except (OSError, sqlite3.Error, TypeError) as error:  # TypeError: a body JSON cannot hold
            for path in written:
                path.unlink(missing_ok=True)
            raise StoreError(f"could not save feedback: {error}") from error
        return stored

    def add_roi(self, owner: str, analysis_id: str, roi: dict, images: dict[str, bytes], label: str) -> dict | None:
        written: list[Path] = []
        try:
            with closing(self._connect()) as db, db:
                db.execute("BEGIN IMMEDIATE")
                row = self._active_row(db, owner, analysis_id)
                if row is None:
                    return None
                record = json.loads(row["record"])
                index = len(record.get("rois") or [])
                names = {suffix: f"roi{index}{suffix}" for suffix in images}
                for suffix, name in names.items():
                    path = self._image_dir(analysis_id) / name
                    path.write_bytes(images[suffix])
                    written.append(path)
                stored = {**roi, "index": index, "images": sorted(names.values())}
                record["rois"] = (record.get("rois") or []) + [stored]
                record["images"] = record["images"] + sorted(names.values())
                record["label"] = label
                db.execute("UPDATE analyses SET record = ? WHERE id = ?", (json.dumps(record), analysis_id))
        except (OSError, sqlite3.Error, TypeError) as error:
            for path in written:
                path.unlink(missing_ok=True)
            raise StoreError(f"could not save the ROI: {error}") from error
        return stored

    def feedback_records(self, modality: str | None = None) -> Iterator[tuple[str, dict]]:
        try:
            with closing(self._connect()) as db:
                rows = db.execute(
                    "SELECT id, owner FROM analyses AS a WHERE is_active = 1 AND EXISTS "
                    "(SELECT 1 FROM feedback AS f WHERE f.analysis_id = a.id) ORDER BY created_at, rowid"
                ).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"could not list the analyses with feedback: {error}") from error
        for analysis_id, owner in rows:
            record = self.get_analysis(owner, analysis_id)
            if record is not None and (modality is None or record["modality"] == modality):
                yield owner, record

    def read_image(self, owner: str, analysis_id: str, name: str) -> bytes | None:
        record = self.get_analysis(owner, analysis_id)
        if record is None:
            return None
        known = set(record["images"]) | {n for f in record["feedback"] for n in f["masks"].values()}
        if name not in known:
            return None
        try:
            return (self._image_dir(analysis_id) / name).read_bytes()
        except OSError:
            return None

    def check_writable(self) -> None:
        try:
            with closing(self._connect()) as db, db:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS probe (x)")
            probe = tempfile.NamedTemporaryFile(dir=self.images_root, prefix=".probe-")
            probe.close()
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"store at {self.root} is not writable: {error}") from error
