"""Embedded default store: SQLite for records, files on disk for images, under one folder.

Crash safety. The database commit is the one point at which a write happens. Image files are first
written into `.inflight/<pid>-<analysis id>-<token>/` under their final names; then the row is
committed; then the files are renamed into `images/<analysis id>/` (the same file system, so each
rename is atomic). Whatever stops a write before its commit (an error, a full or read-only disk, a
killed process) leaves at most an in-flight folder and no row; one stopped between commit and rename
leaves a row whose files are still in flight. `sweep()` settles every in-flight folder whose process
is gone: files the database refers to are moved into place (rolled forward), the rest are deleted.
Each process sweeps once when it first touches the store (so a worker restarted after a crash
settles what its predecessor left), and the readiness probe sweeps too.

The database uses SQLite's rollback journal rather than WAL: with it, reads keep working when the
disk is full or mounted read-only (WAL needs to create its -wal and -shm files even to read), and
writes then fail with SQLITE_FULL / SQLITE_READONLY, which the API answers as a 503 naming the cause.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Iterator

from api.store.base import Store, StoreError

log = logging.getLogger(__name__)

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

# An in-flight folder whose process still runs is left alone unless it is older than this (a
# process id reused by an unrelated process must not keep it forever).
ABANDONED_AFTER_S = 3600
# Readiness fails when the store's file system has less free space than this.
MIN_FREE_BYTES = 32 * 1024 * 1024


def failure_reason(error: BaseException, root: Path | None = None) -> str:
    """`disk_full`, `read_only` or `unavailable`: why a file or database operation failed."""
    if isinstance(error, OSError):
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return "disk_full"
        if error.errno == errno.EROFS:
            return "read_only"
    name = getattr(error, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        return "disk_full"
    if name.startswith("SQLITE_READONLY"):
        return "read_only"
    if root is not None:  # e.g. SQLITE_CANTOPEN or SQLITE_IOERR: ask the file system itself
        try:
            stats = os.statvfs(root)
        except OSError:
            return "unavailable"
        if stats.f_flag & os.ST_RDONLY:
            return "read_only"
        if stats.f_bavail * stats.f_frsize < 1024 * 1024:
            return "disk_full"
    return "unavailable"


def _process_gone(pid: int) -> bool:
    """True when no process has this id (or it is a zombie waiting to be reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SQLiteStore(Store):
    """Thread- and process-safe: one short-lived connection per operation, rollback journal."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.images_root = self.root / "images"
        self.inflight_root = self.root / ".inflight"
        self.images_root.mkdir(parents=True, exist_ok=True)
        self.inflight_root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "branet.sqlite3"
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=DELETE")  # see the module's docstring
            db.executescript(SCHEMA)
        self._swept_in: int | None = None
        self._sweep_once()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def _image_dir(self, analysis_id: str) -> Path:
        # Ids are server-made UUIDs; anything else never reaches the file system.
        return self.images_root / str(uuid.UUID(analysis_id))

    def _error(self, what: str, error: BaseException) -> StoreError:
        reason = failure_reason(error, self.root)
        cause = {"disk_full": "the store's disk is full", "read_only": "the store is read-only"}.get(reason, error)
        return StoreError(f"{what}: {cause}", reason=reason)

    # In-flight writes -----------------------------------------------------------------------------

    def _begin_inflight(self, analysis_id: str) -> Path:
        entry = self.inflight_root / f"{os.getpid()}-{uuid.UUID(analysis_id)}-{uuid.uuid4().hex[:12]}"
        entry.mkdir()
        return entry

    def _stage(self, entry: Path, files: dict[str, bytes]) -> None:
        """Write the files into the in-flight folder under their final names."""
        for name, data in files.items():
            with open(entry / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # a full disk shows here, before anything is committed

    def _publish(self, entry: Path, final_dir: Path) -> None:
        """Move committed files into place; the folder exists already."""
        for path in entry.iterdir():
            os.replace(path, final_dir / path.name)
        entry.rmdir()

    def _sweep_once(self) -> None:
        """Sweep when this process first touches the store (a forked worker, a restarted one)."""
        if self._swept_in != os.getpid():
            try:
                self.sweep()
                self._swept_in = os.getpid()
            except (OSError, sqlite3.Error) as error:  # e.g. read-only now: tried again on the next touch
                log.warning("could not sweep in-flight writes: %s", error)

    def sweep(self) -> int:
        """Settle the in-flight writes of processes that are gone; returns how many were settled."""
        settled = 0
        try:
            entries = list(self.inflight_root.iterdir())
        except FileNotFoundError:
            return 0
        for entry in entries:
            pid, _, rest = entry.name.partition("-")
            analysis_id = rest[:36]
            try:
                owner_pid = int(pid)
                uuid.UUID(analysis_id)
            except ValueError:  # not one of ours: nothing else is ever written here
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                continue
            try:
                age = time.time() - entry.stat().st_mtime
            except FileNotFoundError:
                continue  # another process settled it
            if owner_pid == os.getpid() or (not _process_gone(owner_pid) and age < ABANDONED_AFTER_S):
                continue
            self._settle(entry, analysis_id)
            settled += 1
        return settled

    def _committed_names(self, analysis_id: str) -> set[str] | None:
        """Image names the database refers to for the analysis (active or not); None: no such row."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT record FROM analyses WHERE id = ?", (analysis_id,)).fetchone()
            if row is None:
                return None
            names = set(json.loads(row["record"]).get("images") or [])
            for (body,) in db.execute("SELECT body FROM feedback WHERE analysis_id = ?", (analysis_id,)):
                names.update((json.loads(body).get("masks") or {}).values())
        return names

    def _settle(self, entry: Path, analysis_id: str) -> None:
        committed = self._committed_names(analysis_id)
        final_dir = self._image_dir(analysis_id)
        rolled, dropped = 0, 0
        for path in list(entry.iterdir()) if entry.exists() else []:
            try:
                if committed is not None and path.name in committed:
                    final_dir.mkdir(exist_ok=True)
                    os.replace(path, final_dir / path.name)
                    rolled += 1
                else:
                    path.unlink()
                    dropped += 1
            except FileNotFoundError:
                pass  # another process settled it
        shutil.rmtree(entry, ignore_errors=True)
        if committed is None:
            try:
                final_dir.rmdir()  # made for a save that never committed; only if empty
            except OSError:
                pass
        log.warning("settled an interrupted write of analysis %s: %d file(s) moved into place, %d dropped",
                    analysis_id, rolled, dropped)

    # Writes -----------------------------------------------------------------------------------------

    def _write(self, what: str, analysis_id: str, transaction, files: dict[str, bytes] | None = None,
               make_dir: bool = False):
        """One crash-safe write. `files` (if given) are staged before the transaction;
        `transaction(db, entry)` runs inside BEGIN IMMEDIATE, may stage more files into `entry`, and
        returns (result, undo): undo is the (statement, parameters) that takes the commit back, or
        None when it wrote nothing. After the commit the staged files are moved into place."""
        self._sweep_once()
        final_dir = self._image_dir(analysis_id)
        entry: Path | None = None
        made_dir = committed = False
        undo = None
        try:
            entry = self._begin_inflight(analysis_id)
            if files:
                self._stage(entry, files)
            if make_dir:
                final_dir.mkdir()  # before the commit, so that publishing cannot fail for want of it
                made_dir = True
            with closing(self._connect()) as db, db:
                db.execute("BEGIN IMMEDIATE")  # serialises version and index numbering across processes
                result, undo = transaction(db, entry)
            committed = undo is not None
            if committed:
                self._publish(entry, final_dir)
            else:
                shutil.rmtree(entry, ignore_errors=True)
                if made_dir:
                    final_dir.rmdir()
            return result
        except BaseException as error:
            staged = [path.name for path in entry.iterdir()] if entry is not None and entry.exists() else []
            if not committed or self._take_back(undo):
                if entry is not None:
                    shutil.rmtree(entry, ignore_errors=True)
                if made_dir:
                    shutil.rmtree(final_dir, ignore_errors=True)
                elif committed:  # files already moved into place for the commit just taken back
                    for name in set(staged) | self._published_names(undo):
                        (final_dir / name).unlink(missing_ok=True)
            if isinstance(error, (OSError, sqlite3.Error)):
                raise self._error(what, error) from error
            if isinstance(error, TypeError):  # a body that JSON cannot hold
                raise StoreError(f"{what}: {error}") from error
            raise

    @staticmethod
    def _published_names(undo) -> set[str]:
        return set(undo[2]) if undo is not None and len(undo) > 2 else set()

    def _take_back(self, undo) -> bool:
        """A write committed but its files could not all be moved into place: take the commit back.
        When even that fails, the in-flight files stay for the sweep to roll forward."""
        try:
            with closing(self._connect()) as db, db:
                db.execute(undo[0], undo[1])
            return True
        except sqlite3.Error as error:
            log.error("could not take back a write whose files are not in place; left for the sweep: %s", error)
            return False

    def save_analysis(self, owner: str, record: dict, images: dict[str, bytes]) -> None:
        def insert(db: sqlite3.Connection, entry: Path):
            db.execute(
                "INSERT INTO analyses (id, owner, created_at, is_active, record) VALUES (?, ?, ?, 1, ?)",
                (record["id"], owner, record["created_at"], json.dumps(record)),
            )
            return None, ("DELETE FROM analyses WHERE id = ?", (record["id"],), tuple(images))

        self._write("could not save the analysis", record["id"], insert, files=images, make_dir=True)

    def _active_row(self, db: sqlite3.Connection, owner: str, analysis_id: str) -> sqlite3.Row | None:
        return db.execute(
            "SELECT record FROM analyses WHERE id = ? AND owner = ? AND is_active = 1",
            (analysis_id, owner),
        ).fetchone()

    def add_feedback(self, owner: str, analysis_id: str, feedback: dict,
                     masks: dict[str, bytes] | None = None) -> dict | None:
        def append(db: sqlite3.Connection, entry: Path):
            if self._active_row(db, owner, analysis_id) is None:
                return None, None
            (latest,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM feedback WHERE analysis_id = ?", (analysis_id,)
            ).fetchone()
            version = latest + 1
            names = {kind: f"feedback{version}_{kind}.png" for kind in (masks or {})}
            self._stage(entry, {name: masks[kind] for kind, name in names.items()})
            stored = {**feedback, "version": version, "masks": names}
            db.execute("INSERT INTO feedback (analysis_id, version, body) VALUES (?, ?, ?)",
                       (analysis_id, version, json.dumps(stored)))
            return stored, ("DELETE FROM feedback WHERE analysis_id = ? AND version = ?", (analysis_id, version),
                            tuple(names.values()))

        try:
            uuid.UUID(analysis_id)
        except ValueError:
            return None
        return self._write("could not save the feedback", analysis_id, append)

    def add_roi(self, owner: str, analysis_id: str, roi: dict, images: dict[str, bytes], label: str) -> dict | None:
        try:
            uuid.UUID(analysis_id)
        except ValueError:
            return None

        def append(db: sqlite3.Connection, entry: Path):
            row = self._active_row(db, owner, analysis_id)
            if row is None:
                return None, None
            record = json.loads(row["record"])
            index = len(record.get("rois") or [])
            names = {suffix: f"roi{index}{suffix}" for suffix in images}
            self._stage(entry, {name: images[suffix] for suffix, name in names.items()})
            stored = {**roi, "index": index, "images": sorted(names.values())}
            record["rois"] = (record.get("rois") or []) + [stored]
            record["images"] = record["images"] + sorted(names.values())
            record["label"] = label
            db.execute("UPDATE analyses SET record = ? WHERE id = ?", (json.dumps(record), analysis_id))
            return stored, ("UPDATE analyses SET record = ? WHERE id = ?", (row["record"], analysis_id),
                            tuple(names.values()))

        return self._write("could not save the ROI", analysis_id, append)

    def deactivate(self, owner: str, analysis_id: str) -> bool:
        try:
            with closing(self._connect()) as db, db:
                cursor = db.execute(
                    "UPDATE analyses SET is_active = 0 WHERE id = ? AND owner = ? AND is_active = 1",
                    (analysis_id, owner),
                )
        except sqlite3.Error as error:
            raise self._error("could not delete the analysis", error) from error
        return cursor.rowcount == 1

    # Reads ------------------------------------------------------------------------------------------

    def get_analysis(self, owner: str, analysis_id: str) -> dict | None:
        try:
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
        except sqlite3.Error as error:
            raise self._error("could not read the analysis", error) from error
        return record

    def list_analyses(self, owner: str, limit: int, offset: int) -> tuple[list[dict], int]:
        try:
            with closing(self._connect()) as db:
                (total,) = db.execute(
                    "SELECT COUNT(*) FROM analyses WHERE owner = ? AND is_active = 1", (owner,)
                ).fetchone()
                rows = db.execute(
                    "SELECT record FROM analyses WHERE owner = ? AND is_active = 1 "
                    "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                    (owner, limit, offset),
                ).fetchall()
        except sqlite3.Error as error:
            raise self._error("could not read the history", error) from error
        return [json.loads(row["record"]) for row in rows], total

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
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._error("could not read the image", error) from error

    def check_writable(self) -> None:
        """Readiness: the file system is writable and has room, a file can be written and synced in
        the store's folder, and the database takes a write lock. Also settles interrupted writes."""
        try:
            stats = os.statvfs(self.root)
            if stats.f_flag & os.ST_RDONLY:
                raise StoreError(f"store at {self.root} is not writable: the file system is read-only",
                                 reason="read_only")
            free = stats.f_bavail * stats.f_frsize
            if free < MIN_FREE_BYTES:
                raise StoreError(f"store at {self.root} is not writable: its disk is full "
                                 f"({free // 1024} KiB free, {MIN_FREE_BYTES // 1024} KiB needed)", reason="disk_full")
            probe = self.root / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                with open(probe, "wb") as handle:
                    handle.write(b"\0" * 4096)
                    handle.flush()
                    os.fsync(handle.fileno())
            finally:
                probe.unlink(missing_ok=True)
            if not self.images_root.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(self.images_root))
            with closing(self._connect()) as db, db:
                db.execute("BEGIN IMMEDIATE")
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"store at {self.root} is not writable: {error}",
                             reason=failure_reason(error, self.root)) from error
        self._sweep_once()
