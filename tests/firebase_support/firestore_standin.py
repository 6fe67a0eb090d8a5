"""An in-memory stand-in for the subset of google.cloud.firestore.Client that FirebaseStore uses.

The Firestore emulator needs a download these machines cannot make, so without
FIRESTORE_EMULATOR_HOST the store's tests run against this. It keeps the server's rules that the
store relies on, with the library's own exception, filter, write-option and aggregation classes:

* values: null, bool, 64-bit int, float, str, bytes, timestamps, maps and arrays, no array
  directly inside an array, map keys non-empty and not `__...__`; a document at most 1 MiB by
  Firestore's storage-size rules (InvalidArgument otherwise);
* `create` fails on an existing document (AlreadyExists), `update` on a missing one (NotFound),
  a `last_update_time` write option on a changed document (FailedPrecondition);
* a batch applies all its writes or, when any fails, none;
* queries: `==` filters, `order_by` (then the document id, in the last order's direction, as the
  server does), `offset`, `limit`, `count()`; a query that filters or orders on more than one
  field is refused (FailedPrecondition, "requires an index") unless `firestore.indexes.json`
  declares a composite index for it, as the server refuses it;
* sub-collections, and snapshots that are copies (writing to what `to_dict()` returned changes
  nothing stored).
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import threading
from pathlib import Path

from google.api_core import exceptions as gexc
from google.cloud.firestore_v1._helpers import LastUpdateOption
from google.cloud.firestore_v1.base_aggregation import AggregationResult
from google.cloud.firestore_v1.base_query import FieldFilter

MAX_DOCUMENT_BYTES = 1_048_576
INT64 = (-(2**63), 2**63 - 1)


def _value_size(value) -> int:
    """Firestore's storage size of a value (https://firebase.google.com/docs/firestore/storage-size)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, (int, float, dt.datetime)):
        return 8
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(len(k.encode()) + 1 + _value_size(v) for k, v in value.items())
    return sum(_value_size(v) for v in value)


def _validate(value, path: str = "", in_array: bool = False) -> None:
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise gexc.InvalidArgument(f"{path}: integer out of the 64-bit range")
        return
    if isinstance(value, dt.datetime):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key or (key.startswith("__") and key.endswith("__")):
                raise gexc.InvalidArgument(f"{path}: invalid field name {key!r}")
            _validate(item, f"{path}.{key}" if path else key)
        return
    if isinstance(value, (list, tuple)):
        if in_array:
            raise gexc.InvalidArgument(f"{path}: Cannot convert an array value in an array value")
        for index, item in enumerate(value):
            _validate(item, f"{path}[{index}]", in_array=True)
        return
    raise TypeError(f"Cannot convert to a Firestore Value: {type(value).__name__} at {path}")


def _stored(value):
    """What the server keeps: tuples become lists, timestamps are UTC with microseconds."""
    if isinstance(value, dict):
        return {k: _stored(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stored(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return value


class _Document:
    def __init__(self, data: dict, create_time: dt.datetime, update_time: dt.datetime) -> None:
        self.data, self.create_time, self.update_time = data, create_time, update_time


class Snapshot:
    def __init__(self, reference: DocumentReference, document: _Document | None) -> None:
        self.reference = reference
        self.id = reference.id
        self.exists = document is not None
        self._data = copy.deepcopy(document.data) if document else None
        self.update_time = document.update_time if document else None
        self.create_time = document.create_time if document else None

    def to_dict(self) -> dict | None:
        return copy.deepcopy(self._data)

    def get(self, field_path: str):
        value = self._data
        for part in field_path.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(field_path)
            value = value[part]
        return copy.deepcopy(value)


class DocumentReference:
    def __init__(self, client: Client, path: tuple[str, ...]) -> None:
        self._client, self._path = client, path
        self.id = path[-1]
        self.path = "/".join(path)

    @property
    def parent(self) -> CollectionReference:
        return CollectionReference(self._client, self._path[:-1])

    def collection(self, collection_id: str) -> CollectionReference:
        return CollectionReference(self._client, self._path + (collection_id,))

    def get(self) -> Snapshot:
        with self._client._lock:
            return Snapshot(self, self._client._documents.get(self._path))

    def create(self, data: dict) -> None:
        self._client._commit([("create", self, data, None)])

    def set(self, data: dict) -> None:
        self._client._commit([("set", self, data, None)])

    def update(self, data: dict, option: LastUpdateOption | None = None) -> None:
        self._client._commit([("update", self, data, option)])

    def delete(self) -> None:
        self._client._commit([("delete", self, None, None)])


class Query:
    def __init__(self, client: Client, path: tuple[str, ...], filters=(), orders=(), offset=0, limit=None,
                 all_descendants: bool = False) -> None:
        """`all_descendants`: a collection-group query, over every collection named `path[-1]`."""
        self._client, self._path, self._group = client, path, all_descendants
        self._filters, self._orders, self._offset, self._limit = tuple(filters), tuple(orders), offset, limit

    def _with(self, **changes) -> Query:
        state = {"filters": self._filters, "orders": self._orders, "offset": self._offset, "limit": self._limit,
                 "all_descendants": self._group}
        return Query(self._client, self._path, **{**state, **changes})

    def where(self, *, filter: FieldFilter) -> Query:  # noqa: A002 - the library's own keyword
        if filter.op_string != "==":
            raise NotImplementedError("the stand-in implements '==' filters only")
        return self._with(filters=self._filters + (filter,))

    def order_by(self, field_path: str, direction: str = "ASCENDING") -> Query:
        return self._with(orders=self._orders + ((field_path, direction),))

    def offset(self, count: int) -> Query:
        return self._with(offset=count)

    def limit(self, count: int) -> Query:
        return self._with(limit=count)

    def count(self, alias: str | None = None) -> _CountQuery:
        return _CountQuery(self, alias or "field_1")

    def _check_index(self) -> None:
        equalities = {f.field_path for f in self._filters}
        fields = equalities | {field for field, _ in self._orders}
        if self._group:
            # Collection-group queries have no automatic indexes: only those declared (fieldOverrides).
            if len(fields) == 1 and any(
                    override["collectionGroup"] == self._path[-1] and override["fieldPath"] in fields
                    and any(index.get("queryScope") == "COLLECTION_GROUP" for index in override["indexes"])
                    for override in self._client.field_overrides):
                return
            raise gexc.FailedPrecondition(f"The query requires a collection-group index: {self._path[-1]} {sorted(fields)}")
        if len(fields) <= 1:
            return  # single-field indexes exist for every field
        wanted = [(field, direction) for field, direction in self._orders if field not in equalities]
        for index in self._client.indexes:
            if index["collectionGroup"] != self._path[-1]:
                continue
            declared = [(f["fieldPath"], f.get("order")) for f in index["fields"]]
            head, tail = declared[: len(equalities)], declared[len(equalities):]
            if {field for field, _ in head} == equalities and tail == wanted:
                return
        raise gexc.FailedPrecondition(f"The query requires an index: {self._path[-1]} {sorted(equalities)} {wanted}")

    def _matches(self) -> list[tuple[tuple[str, ...], _Document]]:
        self._check_index()
        if self._group:  # documents at any depth whose collection has this id
            rows = [(path, doc) for path, doc in self._client._documents.items()
                    if len(path) % 2 == 0 and path[-2] == self._path[-1]]
        else:
            depth = len(self._path) + 1
            rows = [(path, doc) for path, doc in self._client._documents.items()
                    if len(path) == depth and path[:-1] == self._path]
        for f in self._filters:
            rows = [(p, d) for p, d in rows if f.field_path in d.data and d.data[f.field_path] == f.value
                    and type(d.data[f.field_path]) is type(f.value)]
        for field, _ in self._orders:  # a document without an ordered field is not in the result
            rows = [(p, d) for p, d in rows if field in d.data]
        last = self._orders[-1][1] if self._orders else "ASCENDING"
        rows.sort(key=lambda row: row[0][-1], reverse=last == "DESCENDING")
        for field, direction in reversed(self._orders):
            rows.sort(key=lambda row: row[1].data[field], reverse=direction == "DESCENDING")
        return rows

    def stream(self):
        with self._client._lock:
            rows = self._matches()[self._offset:]
            rows = rows[: self._limit] if self._limit is not None else rows
            snapshots = [Snapshot(DocumentReference(self._client, path), doc) for path, doc in rows]
        yield from snapshots

    def get(self) -> list[Snapshot]:
        return list(self.stream())


class _CountQuery:
    def __init__(self, query: Query, alias: str) -> None:
        self._query, self._alias = query, alias

    def get(self) -> list[list[AggregationResult]]:
        with self._query._client._lock:
            total = len(self._query._matches())
        return [[AggregationResult(alias=self._alias, value=total, read_time=self._query._client._now())]]


class CollectionReference(Query):
    def __init__(self, client: Client, path: tuple[str, ...]) -> None:
        super().__init__(client, path)
        self.id = path[-1]

    @property
    def parent(self) -> DocumentReference | None:
        return DocumentReference(self._client, self._path[:-1]) if len(self._path) > 1 else None

    def document(self, document_id: str) -> DocumentReference:
        if not document_id or "/" in document_id:
            raise ValueError(f"invalid document id {document_id!r}")
        return DocumentReference(self._client, self._path + (document_id,))


class WriteBatch:
    def __init__(self, client: Client) -> None:
        self._client, self._writes = client, []

    def create(self, reference: DocumentReference, data: dict) -> None:
        self._writes.append(("create", reference, data, None))

    def set(self, reference: DocumentReference, data: dict) -> None:
        self._writes.append(("set", reference, data, None))

    def update(self, reference: DocumentReference, data: dict, option: LastUpdateOption | None = None) -> None:
        self._writes.append(("update", reference, data, option))

    def delete(self, reference: DocumentReference) -> None:
        self._writes.append(("delete", reference, None, None))

    def commit(self) -> None:
        self._client._commit(self._writes)


class Client:
    """`indexes`: the composite indexes of a firestore.indexes.json (the server refuses a query that
    needs one it does not have)."""

    def __init__(self, indexes_file: Path | None = None) -> None:
        self._documents: dict[tuple[str, ...], _Document] = {}
        self._lock = threading.RLock()
        self._clock = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        declared = json.loads(Path(indexes_file).read_text()) if indexes_file else {}
        self.indexes = declared.get("indexes", [])
        self.field_overrides = declared.get("fieldOverrides", [])

    def collection(self, collection_id: str) -> CollectionReference:
        return CollectionReference(self, (collection_id,))

    def collection_group(self, collection_id: str) -> Query:
        return Query(self, (collection_id,), all_descendants=True)

    def batch(self) -> WriteBatch:
        return WriteBatch(self)

    @staticmethod
    def write_option(*, last_update_time: dt.datetime) -> LastUpdateOption:
        return LastUpdateOption(last_update_time)

    def _now(self) -> dt.datetime:
        """Strictly increasing commit times, so that a precondition always sees a change."""
        self._clock = max(self._clock + dt.timedelta(microseconds=1), dt.datetime.now(dt.timezone.utc))
        return self._clock

    def _commit(self, writes: list) -> None:
        """Apply every write or, if any is refused, none: validate against a copy first."""
        with self._lock:
            staged = dict(self._documents)
            now = self._now()
            for kind, reference, data, option in writes:
                path, current = reference._path, staged.get(reference._path)
                if kind in ("create", "set", "update"):
                    if not isinstance(data, dict):
                        raise TypeError("document data must be a dict")
                    _validate(data)
                if kind == "create" and current is not None:
                    raise gexc.AlreadyExists(f"Document already exists: {reference.path}")
                if kind == "update":
                    if current is None:
                        raise gexc.NotFound(f"No document to update: {reference.path}")
                    if option is not None and current.update_time != option._last_update_time:
                        raise gexc.FailedPrecondition(f"the stored version does not match the required "
                                                      f"base version: {reference.path}")
                    if any("." in key for key in data):
                        raise NotImplementedError("the stand-in updates top-level fields only")
                    merged = {**current.data, **_stored(data)}
                    staged[path] = _Document(merged, current.create_time, now)
                elif kind in ("create", "set"):
                    created = current.create_time if current else now
                    staged[path] = _Document(_stored(data), created, now)
                else:
                    staged.pop(path, None)
                if path in staged:
                    size = sum(len(part.encode()) + 1 for part in path) + 16 + 32 + _value_size(staged[path].data)
                    if size > MAX_DOCUMENT_BYTES:
                        raise gexc.InvalidArgument(f"Document {reference.path} is {size} bytes, more than "
                                                   f"the maximum {MAX_DOCUMENT_BYTES}")
            self._documents = staged
