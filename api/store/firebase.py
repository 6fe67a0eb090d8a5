"""Production store: Firestore for records, Cloud Storage for Firebase for images.

Layout, as the existing app reads it (see the app contract):

* `Users/{uid}/HistResults/{id}`: the app's fields (`testResult`, `typeAnalysis`, `dateAnalysis`,
  `durationAnalysis`, `roiExtracted`, `isActive`, `imgUrl`, and with ROI extraction `imgDrawnUrl`,
  `imgRoiUrl`, `cantRoi`), beside the whole v1 record (`record`), `createdAt` (a timestamp that
  orders analyses made in the same second), `objects` (image name -> storage path) and
  `feedbackCount`.
* `Users/{uid}/HistResults/{id}/Feedback/{version}`: one document per feedback, created once and
  never rewritten (`create` fails on an existing version, so concurrent writers cannot overwrite).
* Storage: `results/{uid}/{id}/original.png`, `drawed_contours.png`, `roi{i}.png`, ... Nothing is
  made public: `imgUrl` and its siblings are V4 signed URLs that expire, and the API streams images
  to their owner.

Every write that spans both services undoes what it wrote when a later step fails, so neither the
app nor the API ever sees half an analysis.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
from google.api_core import exceptions as gexc
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.storage import Bucket

from api.store.base import Store, StoreError

log = logging.getLogger(__name__)

# The pipeline's image names that the app knows under another name in Storage.
APP_OBJECT_NAMES = {"contours.png": "drawed_contours.png"}
TYPE_ANALYSIS = {"ultrasound": "U", "mammography": "M"}
MAX_ATTEMPTS = 10  # optimistic writes (feedback versions, ROI indexes) retried on a lost race
# A precondition that no longer holds or a document created meanwhile: another writer went first.
LOST_RACE = (gexc.Conflict, gexc.FailedPrecondition, gexc.Aborted)
NESTED_LIST = "listValues"  # Firestore arrays cannot hold arrays: an inner list is wrapped in a map
GOOGLE_ERRORS = (gexc.GoogleAPIError, google.auth.exceptions.GoogleAuthError, OSError, ValueError, TypeError)


def to_firestore(value):
    """A JSON-able value as Firestore can hold it: every list directly inside a list is wrapped
    as `{"listValues": [...]}` (e.g. a saliency grid; `__...__` names are reserved by Firestore);
    `from_firestore` undoes it."""
    if isinstance(value, dict):
        return {key: to_firestore(item) for key, item in value.items()}
    if isinstance(value, list):
        return [{NESTED_LIST: to_firestore(item)} if isinstance(item, list) else to_firestore(item) for item in value]
    return value


def from_firestore(value):
    if isinstance(value, dict):
        if set(value) == {NESTED_LIST}:
            return [from_firestore(item) for item in value[NESTED_LIST]]
        return {key: from_firestore(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_firestore(item) for item in value]
    return value


def _valid_id(analysis_id: str) -> bool:
    """Ids are server-made UUIDs; anything else (a '/' would address another document) is unknown."""
    try:
        return str(uuid.UUID(analysis_id)) == analysis_id
    except (ValueError, TypeError, AttributeError):
        return False


class FirebaseStore(Store):
    """`firestore` is a google.cloud.firestore Client (or the tests' in-memory stand-in), `bucket`
    the Storage bucket from firebase-admin; `signer` returns the credentials that sign URLs."""

    def __init__(self, firestore, bucket: Bucket, signed_url_ttl: dt.timedelta,
                 signer: Callable[[], google.auth.credentials.Credentials] | None = None) -> None:
        self.db = firestore
        self.bucket = bucket
        self.signed_url_ttl = signed_url_ttl
        self._signer = signer or self._default_credentials
        self._credentials: google.auth.credentials.Credentials | None = None

    def _default_credentials(self) -> google.auth.credentials.Credentials:
        """Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, or App Engine's own."""
        if self._credentials is None:
            self._credentials = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])[0]
        return self._credentials

    # -- paths ------------------------------------------------------------------------------
    def _history(self, owner: str):
        if not owner or "/" in owner:
            raise StoreError("the user id cannot name a Firestore document")
        return self.db.collection("Users").document(owner).collection("HistResults")

    def _object_path(self, owner: str, analysis_id: str, name: str) -> str:
        return f"results/{owner}/{analysis_id}/{APP_OBJECT_NAMES.get(name, name)}"

    # -- storage helpers --------------------------------------------------------------------
    def _upload(self, images: dict[str, str], data: dict[str, bytes], written: list[str]) -> None:
        """Upload name -> bytes to name -> path, recording each written path as soon as it exists."""
        for name, path in images.items():
            self.bucket.blob(path).upload_from_string(data[name], content_type="image/png")
            written.append(path)

    def _remove(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.bucket.blob(path).delete()
            except gexc.NotFound:
                pass
            except GOOGLE_ERRORS as error:  # keep undoing the rest; an operator must see this one
                log.error("could not remove %s after a failed write: %s", path, type(error).__name__)

    @contextmanager
    def _undone_on_failure(self, written: list[str], what: str, passing: tuple[type[Exception], ...] = ()):
        """Objects uploaded into `written` are deleted again when the block raises: no half-written
        analysis. A Google error comes out as a StoreError saying what could not be done, except the
        `passing` kinds (a lost race, which the caller retries)."""
        try:
            yield
        except Exception as error:
            self._remove(written)
            if isinstance(error, GOOGLE_ERRORS) and not isinstance(error, passing):
                raise StoreError(f"could not {what}: {type(error).__name__}: {error}") from error
            raise

    def _signed_url(self, path: str) -> str:
        credentials = self._signer()
        if isinstance(credentials, google.auth.credentials.Signing):
            signing = {"credentials": credentials}
        else:  # e.g. App Engine's metadata-server credentials: signed by the IAM signBlob API
            credentials.refresh(google.auth.transport.requests.Request())
            signing = {"service_account_email": credentials.service_account_email,
                       "access_token": credentials.token}
        return self.bucket.blob(path).generate_signed_url(version="v4", expiration=self.signed_url_ttl,
                                                          method="GET", **signing)

    def _app_fields(self, record: dict, objects: dict[str, str]) -> dict:
        """The fields the app reads from `Users/{uid}/HistResults/{id}`."""
        created = dt.datetime.fromisoformat(record["created_at"])
        rois = record.get("rois")
        fields = {
            "testResult": "M" if record.get("label") == "malignant" else "B",
            "typeAnalysis": TYPE_ANALYSIS.get(record.get("modality")),
            "dateAnalysis": int(created.timestamp()),
            "durationAnalysis": round(float(record.get("duration_ms", 0)) / 60000, 2),
            "roiExtracted": rois is not None,
            "isActive": True,
            "imgUrl": self._signed_url(objects["original.png"]) if "original.png" in objects else None,
        }
        if rois is not None:
            crops = [name for roi in rois for name in roi.get("images", []) if name == f"roi{roi['index']}.png"]
            fields["imgDrawnUrl"] = self._signed_url(objects["contours.png"]) if "contours.png" in objects else None
            fields["imgRoiUrl"] = [self._signed_url(objects[name]) for name in crops if name in objects]
            fields["cantRoi"] = len(rois)
        return fields

    # -- Store ------------------------------------------------------------------------------
    def save_analysis(self, owner: str, record: dict, images: dict[str, bytes]) -> None:
        ref = self._history(owner).document(record["id"])
        objects = {name: self._object_path(owner, record["id"], name) for name in images}
        written: list[str] = []
        with self._undone_on_failure(written, "save analysis"):
            if ref.get().exists:  # never upload over another analysis' images
                raise StoreError(f"analysis {record['id']} already exists")
            self._upload(objects, images, written)
            document = {
                **self._app_fields(record, objects),
                "createdAt": dt.datetime.fromisoformat(record["created_at"]),
                "record": to_firestore(record),
                "objects": objects,
                "feedbackCount": 0,
            }
            ref.create(document)

    def _active(self, owner: str, analysis_id: str):
        """The snapshot of an active analysis of the owner's, or None."""
        if not _valid_id(analysis_id):
            return None
        snapshot = self._history(owner).document(analysis_id).get()
        if not snapshot.exists or snapshot.get("isActive") is not True:
            return None
        return snapshot

    def _feedback(self, snapshot) -> list[dict]:
        entries = snapshot.reference.collection("Feedback").order_by("version").stream()
        return [from_firestore(entry.get("body")) for entry in entries]

    def get_analysis(self, owner: str, analysis_id: str) -> dict | None:
        try:
            snapshot = self._active(owner, analysis_id)
            if snapshot is None:
                return None
            return {**from_firestore(snapshot.get("record")), "feedback": self._feedback(snapshot)}
        except GOOGLE_ERRORS as error:
            raise StoreError(f"could not read the analysis: {type(error).__name__}") from error

    def list_analyses(self, owner: str, limit: int, offset: int) -> tuple[list[dict], int]:
        """The app's own history query (isActive == true, dateAnalysis descending), with createdAt
        breaking ties within a second; both orders are in firestore.indexes.json."""
        active = self._history(owner).where(filter=FieldFilter("isActive", "==", True))
        try:
            page = (active.order_by("dateAnalysis", direction="DESCENDING")
                    .order_by("createdAt", direction="DESCENDING").offset(offset).limit(limit).stream())
            items = [from_firestore(snapshot.get("record")) for snapshot in page]
            total = active.count(alias="total").get()[0][0].value
        except GOOGLE_ERRORS as error:
            raise StoreError(f"could not read the history: {type(error).__name__}") from error
        return items, int(total)

    def deactivate(self, owner: str, analysis_id: str) -> bool:
        try:
            for _ in range(MAX_ATTEMPTS):
                snapshot = self._active(owner, analysis_id)
                if snapshot is None:
                    return False
                try:
                    snapshot.reference.update(
                        {"isActive": False}, option=self.db.write_option(last_update_time=snapshot.update_time))
                    return True
                except (gexc.FailedPrecondition, gexc.Aborted):
                    continue  # changed meanwhile: look again
        except GOOGLE_ERRORS as error:
            raise StoreError(f"could not delete the analysis: {type(error).__name__}") from error
        raise StoreError("the analysis kept changing; try again")

    def add_feedback(self, owner: str, analysis_id: str, feedback: dict,
                     masks: dict[str, bytes] | None = None) -> dict | None:
        masks = masks or {}
        for _ in range(MAX_ATTEMPTS):
            written: list[str] = []
            try:
                with self._undone_on_failure(written, "save feedback", passing=LOST_RACE):
                    snapshot = self._active(owner, analysis_id)
                    if snapshot is None:
                        return None
                    version = int(snapshot.get("feedbackCount") or 0) + 1
                    names = {kind: f"feedback{version}_{kind}.png" for kind in masks}
                    # A fresh folder per attempt: a writer that loses the race never touches the winner's masks.
                    folder = f"results/{owner}/{analysis_id}/feedback/{uuid.uuid4().hex}"
                    objects = {name: f"{folder}/{name}" for name in names.values()}
                    self._upload(objects, {names[kind]: data for kind, data in masks.items()}, written)
                    stored = {**feedback, "version": version, "masks": names}
                    batch = self.db.batch()
                    batch.create(snapshot.reference.collection("Feedback").document(f"{version:06d}"),
                                 {"version": version, "body": to_firestore(stored), "objects": objects})
                    batch.update(snapshot.reference, {"feedbackCount": version},
                                 option=self.db.write_option(last_update_time=snapshot.update_time))
                    batch.commit()
                    return stored
            except LOST_RACE:
                continue  # another writer took this version: count again
        raise StoreError("feedback kept colliding with other writers; try again")

    def add_roi(self, owner: str, analysis_id: str, roi: dict, images: dict[str, bytes], label: str) -> dict | None:
        for _ in range(MAX_ATTEMPTS):
            written: list[str] = []
            try:
                with self._undone_on_failure(written, "save the ROI", passing=LOST_RACE):
                    snapshot = self._active(owner, analysis_id)
                    if snapshot is None:
                        return None
                    record = from_firestore(snapshot.get("record"))
                    index = len(record.get("rois") or [])
                    names = {suffix: f"roi{index}{suffix}" for suffix in images}
                    folder = f"results/{owner}/{analysis_id}/corrections/{uuid.uuid4().hex}"
                    objects = {name: f"{folder}/{name}" for name in names.values()}
                    self._upload(objects, {names[suffix]: data for suffix, data in images.items()}, written)
                    stored = {**roi, "index": index, "images": sorted(names.values())}
                    record["rois"] = (record.get("rois") or []) + [stored]
                    record["images"] = record["images"] + sorted(names.values())
                    record["label"] = label
                    all_objects = {**snapshot.get("objects"), **objects}
                    update = {**self._app_fields(record, all_objects), "record": to_firestore(record),
                              "objects": all_objects}
                    unchanged = self.db.write_option(last_update_time=snapshot.update_time)
                    snapshot.reference.update(update, option=unchanged)
                    return stored
            except LOST_RACE:
                continue  # the analysis changed meanwhile: look again
        raise StoreError("the analysis kept changing; try again")

    def feedback_records(self, modality: str | None = None) -> Iterator[tuple[str, dict]]:
        """Found through the first feedback of each analysis: a collection-group query over every
        `Feedback` collection (`version == 1`, an index firestore.indexes.json declares)."""
        try:
            firsts = list(self.db.collection_group("Feedback")
                          .where(filter=FieldFilter("version", "==", 1)).stream())
            found = []
            for first in firsts:
                analysis = first.reference.parent.parent  # Users/{owner}/HistResults/{id}
                owner = analysis.parent.parent.id
                record = self.get_analysis(owner, analysis.id)
                if record is not None and (modality is None or record["modality"] == modality):
                    found.append((owner, record))
        except GOOGLE_ERRORS as error:
            raise StoreError(f"could not list the analyses with feedback: {type(error).__name__}") from error
        yield from sorted(found, key=lambda item: item[1]["created_at"])

    def read_image(self, owner: str, analysis_id: str, name: str) -> bytes | None:
        try:
            snapshot = self._active(owner, analysis_id)
            if snapshot is None:
                return None
            objects = dict(snapshot.get("objects"))
            for entry in snapshot.reference.collection("Feedback").order_by("version").stream():
                objects.update(entry.get("objects"))
            if name not in objects:
                return None
            return self.bucket.blob(objects[name]).download_as_bytes()
        except gexc.NotFound:
            return None
        except GOOGLE_ERRORS as error:
            raise StoreError(f"could not read the image: {type(error).__name__}") from error

    def check_writable(self) -> None:
        """Both services answer with this service's credentials (reads only: a probe runs often)."""
        try:
            list(self.db.collection("Users").limit(1).stream())
            list(self.bucket.list_blobs(prefix="results/", max_results=1))
        except GOOGLE_ERRORS as error:
            raise StoreError(f"Firebase is not reachable: {type(error).__name__}") from error
