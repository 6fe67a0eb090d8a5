"""The app's whole flow on the Firebase backend: users and ID tokens from the Firebase Auth
emulator, images in a GCS-compatible storage server, records in Firestore (emulator when
FIRESTORE_EMULATOR_HOST is set, else the in-memory stand-in)."""
from __future__ import annotations

import base64
import io
import json
import time
import urllib.parse
import uuid

import pytest
import requests
from firebase_admin import auth as firebase_auth
from firebase_admin import storage
from google.cloud.firestore_v1.base_query import FieldFilter

from api import create_app
from api.firebase_app import firebase_app as get_firebase_app
from api.store import StoreError
from api.store.firebase import APP_OBJECT_NAMES, FirebaseStore

pytestmark = pytest.mark.firebase

LEGACY = "/evaluate-image/{}/?extract_roi={}"


@pytest.fixture(scope="module")
def client(firebase_app):
    return firebase_app.test_client()


@pytest.fixture
def new_user(firebase_servers):
    """Make a user in the Auth emulator; returns (uid, a fresh ID token)."""
    def make() -> tuple[str, str]:
        email = f"clinician-{uuid.uuid4().hex[:12]}@example.org"
        uid = firebase_servers.auth.sign_up(email)["localId"]
        return uid, firebase_servers.auth.sign_in(email)
    return make


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def post_legacy(client, token: str, image: bytes, extract_roi: bool = False, modality: str = "ultrasound"):
    """The request the app sends: one part `file` named image.png, type image/png, and its token."""
    return client.post(LEGACY.format(modality, str(extract_roi).lower()),
                       data={"file": (io.BytesIO(image), "image.png", "image/png")},
                       headers=bearer(token), content_type="multipart/form-data")


def history_document(app, uid: str, analysis_id: str):
    db = app.extensions["branet.store"].db
    return db.collection("Users").document(uid).collection("HistResults").document(analysis_id).get()


def assert_signed_url(url: str, bucket: str, path: str, ttl: int) -> None:
    """A V4 signed URL for exactly this object, expiring after `ttl` seconds, not a public one."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    assert urllib.parse.unquote(parts.path) == f"/{bucket}/{path}"
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == [str(ttl)]
    assert query["X-Goog-Credential"][0].startswith("branet-api@")
    assert len(query["X-Goog-Signature"][0]) == 512  # RSA-2048, hex


def assert_private(blob) -> None:
    blob.acl.reload()
    entities = {entry["entity"] for entry in blob.acl}
    assert not entities & {"allUsers", "allAuthenticatedUsers"}, entities


def test_the_apps_flow_stores_its_fields_and_images_privately(firebase_app, client, firebase_servers, new_user,
                                                               busbra_png):
    uid, token = new_user()
    response = post_legacy(client, token, busbra_png)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"result", "aditionalInfo", "idResult"}
    assert body["result"] == "OK" and body["aditionalInfo"] is None
    analysis_id = body["idResult"]

    # The document the app reads, under the uid of the token's user, with the app's types.
    document = history_document(firebase_app, uid, analysis_id)
    assert document.exists
    fields = document.to_dict()
    assert fields["testResult"] in ("B", "M")
    assert fields["typeAnalysis"] == "U"
    assert isinstance(fields["dateAnalysis"], int) and abs(fields["dateAnalysis"] - time.time()) < 600
    assert isinstance(fields["durationAnalysis"], float) and fields["durationAnalysis"] == round(
        fields["durationAnalysis"], 2)
    assert fields["roiExtracted"] is False and fields["isActive"] is True
    assert not {"imgDrawnUrl", "imgRoiUrl", "cantRoi"} & set(fields)
    # The richer v1 record beside them, as the API shows it.
    record = fields["record"]
    assert record["id"] == analysis_id and record["modality"] == "ultrasound"
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert fields["testResult"] == ("M" if record["label"] == "malignant" else "B")
    assert record["model"]["version"]

    # The images, at the app's paths; none public; the app's URL is a short-lived signed URL.
    prefix = f"results/{uid}/{analysis_id}/"
    objects = firebase_servers.objects(prefix)
    assert {prefix + "original.png", prefix + "saliency.png"} <= set(objects)
    assert set(objects) == {prefix + APP_OBJECT_NAMES.get(name, name) for name in record["images"]}
    for blob in objects.values():
        assert_private(blob)
    assert_signed_url(fields["imgUrl"], firebase_servers.bucket, prefix + "original.png", ttl=900)
    original = objects[prefix + "original.png"].download_as_bytes()
    assert original.startswith(b"\x89PNG")
    assert requests.get(fields["imgUrl"], timeout=10).content == original

    # The owner reads it through the API, the image streamed from Storage.
    assert client.get(f"/v1/analyses/{analysis_id}", headers=bearer(token)).get_json()["id"] == analysis_id
    image = client.get(f"/v1/analyses/{analysis_id}/images/original.png", headers=bearer(token))
    assert image.status_code == 200 and image.data == original
    assert image.headers["Cache-Control"] == "private, no-store"

    # Another user, with a real token of their own, sees nothing of it.
    _, other = new_user()
    for path in (f"/v1/analyses/{analysis_id}", f"/v1/analyses/{analysis_id}/images/original.png"):
        refused = client.get(path, headers=bearer(other))
        assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "not_found"
    assert client.get("/v1/analyses", headers=bearer(other)).get_json()["total"] == 0
    assert client.delete(f"/v1/analyses/{analysis_id}", headers=bearer(other)).status_code == 404
    assert client.post(f"/v1/analyses/{analysis_id}/feedback", json={"label": "benign"},
                       headers=bearer(other)).status_code == 404
    assert history_document(firebase_app, uid, analysis_id).get("isActive") is True


def test_roi_extraction_writes_the_apps_roi_fields_and_objects(firebase_app, client, firebase_servers, new_user,
                                                               busbra_png):
    uid, token = new_user()
    response = post_legacy(client, token, busbra_png, extract_roi=True)
    assert response.status_code == 200, response.get_json()
    analysis_id = response.get_json()["idResult"]
    fields = history_document(firebase_app, uid, analysis_id).to_dict()
    assert fields["roiExtracted"] is True
    assert isinstance(fields["cantRoi"], int) and fields["cantRoi"] == len(fields["record"]["rois"]) >= 1
    prefix = f"results/{uid}/{analysis_id}/"
    objects = firebase_servers.objects(prefix)
    assert prefix + "drawed_contours.png" in objects  # the app's name for the contours picture
    assert {prefix + f"roi{roi['index']}.png" for roi in fields["record"]["rois"]} <= set(objects)
    assert_signed_url(fields["imgDrawnUrl"], firebase_servers.bucket, prefix + "drawed_contours.png", ttl=900)
    assert len(fields["imgRoiUrl"]) == fields["cantRoi"]
    for roi, url in zip(fields["record"]["rois"], fields["imgRoiUrl"]):
        assert_signed_url(url, firebase_servers.bucket, prefix + f"roi{roi['index']}.png", ttl=900)
    for blob in objects.values():
        assert_private(blob)
    # The saliency grid (a list of lists, which a Firestore array cannot hold) reads back intact.
    shown = client.get(f"/v1/analyses/{analysis_id}", headers=bearer(token)).get_json()
    grid = shown["saliency"]["grid"]
    assert isinstance(grid[0], list) and len(grid[0]) > 1
    contours = client.get(f"/v1/analyses/{analysis_id}/images/contours.png", headers=bearer(token))
    assert contours.data == objects[prefix + "drawed_contours.png"].download_as_bytes()


def test_the_apps_history_query_and_soft_delete(firebase_app, client, new_user, busbra_png):
    uid, token = new_user()
    ids = [post_legacy(client, token, busbra_png).get_json()["idResult"] for _ in range(2)]
    db = firebase_app.extensions["branet.store"].db

    def app_history() -> list[str]:  # the query the app runs, verbatim
        query = (db.collection("Users").document(uid).collection("HistResults")
                 .where(filter=FieldFilter("isActive", "==", True)).order_by("dateAnalysis", direction="DESCENDING"))
        return [snapshot.id for snapshot in query.stream()]

    assert sorted(app_history()) == sorted(ids)
    listed = client.get("/v1/analyses", headers=bearer(token)).get_json()
    assert [item["id"] for item in listed["items"]] == ids[::-1] and listed["total"] == 2  # newest first
    assert client.delete(f"/v1/analyses/{ids[0]}", headers=bearer(token)).status_code == 204
    assert app_history() == [ids[1]]
    assert history_document(firebase_app, uid, ids[0]).get("isActive") is False  # kept, not erased
    assert client.get(f"/v1/analyses/{ids[0]}", headers=bearer(token)).status_code == 404


def test_feedback_is_appended_under_the_analysis(firebase_app, client, new_user, busbra_png):
    uid, token = new_user()
    analysis_id = post_legacy(client, token, busbra_png).get_json()["idResult"]
    for label in ("benign", "malignant"):
        answer = client.post(f"/v1/analyses/{analysis_id}/feedback", json={"label": label}, headers=bearer(token))
        assert answer.status_code == 201, answer.get_json()
    entries = history_document(firebase_app, uid, analysis_id).reference.collection("Feedback").stream()
    assert [(e.id, e.get("body")["label"]) for e in entries] == [("000001", "benign"), ("000002", "malignant")]
    shown = client.get(f"/v1/analyses/{analysis_id}", headers=bearer(token)).get_json()
    assert [(f["version"], f["label"]) for f in shown["feedback"]] == [(1, "benign"), (2, "malignant")]


def test_an_upload_failure_after_the_first_leaves_nothing(firebase_app, client, firebase_servers, new_user,
                                                          busbra_png):
    uid, token = new_user()
    proxy = firebase_servers.proxy
    proxy.allow_uploads = proxy.uploads + 1  # the original goes through; the next upload is refused
    try:
        response = post_legacy(client, token, busbra_png)
    finally:
        proxy.allow_uploads = None
    assert proxy.uploads >= 2  # the failure really came after a stored object
    assert response.status_code == 503
    assert response.get_json() == {"result": "ERROR", "aditionalInfo": "ANALYSIS NOT STORED", "idResult": None}
    assert firebase_servers.objects(f"results/{uid}/") == {}
    db = firebase_app.extensions["branet.store"].db
    assert list(db.collection("Users").document(uid).collection("HistResults").stream()) == []
    assert client.get("/v1/analyses", headers=bearer(token)).get_json()["total"] == 0
    # The same user's next analysis is stored whole.
    assert post_legacy(client, token, busbra_png).status_code == 200


def test_a_refused_document_write_removes_the_uploaded_images(firebase_store, firebase_servers):
    """Firestore refuses a document over 1 MiB; the images already uploaded are removed."""
    owner = f"user-{uuid.uuid4().hex}"
    record = {"id": str(uuid.uuid4()), "created_at": "2026-01-01T00:00:00.000+00:00", "images": ["original.png"],
              "modality": "ultrasound", "label": "benign", "reliability_note": "x" * (1024 * 1024 + 1)}
    with pytest.raises(StoreError):
        firebase_store.save_analysis(owner, record, {"original.png": b"png", "saliency.png": b"png"})
    assert firebase_servers.objects(f"results/{owner}/") == {}
    assert firebase_store.get_analysis(owner, record["id"]) is None


def test_ids_that_are_not_uuids_address_nothing(firebase_store):
    owner = f"user-{uuid.uuid4().hex}"
    record = {"id": str(uuid.uuid4()), "created_at": "2026-01-01T00:00:00.000+00:00", "images": ["original.png"]}
    firebase_store.save_analysis(owner, record, {"original.png": b"png"})
    firebase_store.add_feedback(owner, record["id"], {"label": "benign"})
    # A '/' would otherwise address the feedback document below the analysis.
    assert firebase_store.get_analysis(owner, f"{record['id']}/Feedback/000001") is None
    with pytest.raises(StoreError):
        firebase_store.list_analyses("a/b", 10, 0)


# -- ID tokens --------------------------------------------------------------------------------

def unsigned_token(token: str, **claims) -> str:
    """The emulator's own token (unsigned, alg none) with some claims changed."""
    header, payload, _ = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    encoded = base64.urlsafe_b64encode(json.dumps({**decoded, **claims}).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}."


def assert_refused(client, token: str) -> None:
    response = client.get("/v1/analyses", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    legacy = post_legacy(client, token, b"\x89PNG not read")
    assert legacy.status_code == 401
    assert legacy.get_json() == {"result": "ERROR", "aditionalInfo": "NO TOKEN ID VERIFIED", "idResult": None}


def test_a_valid_token_is_accepted(client, new_user):
    _, token = new_user()
    assert client.get("/v1/analyses", headers=bearer(token)).status_code == 200


def test_an_expired_token_is_refused(client, new_user):
    _, token = new_user()
    past = int(time.time()) - 7200
    assert_refused(client, unsigned_token(token, iat=past, auth_time=past, exp=past + 3600))


def test_a_revoked_token_is_refused_and_a_new_one_accepted(client, firebase_servers, new_user):
    uid, token = new_user()
    time.sleep(1.1)  # revocation is kept in whole seconds; the token must be older
    firebase_auth.revoke_refresh_tokens(uid, app=get_firebase_app(firebase_servers.project_id))
    assert_refused(client, token)
    email = firebase_auth.get_user(uid, app=get_firebase_app(firebase_servers.project_id)).email
    assert client.get("/v1/analyses", headers=bearer(firebase_servers.auth.sign_in(email))).status_code == 200


def test_disabled_and_deleted_users_are_refused(client, firebase_servers, new_user):
    app = get_firebase_app(firebase_servers.project_id)
    disabled_uid, disabled_token = new_user()
    firebase_auth.update_user(disabled_uid, disabled=True, app=app)
    assert_refused(client, disabled_token)
    deleted_uid, deleted_token = new_user()
    firebase_auth.delete_user(deleted_uid, app=app)
    assert_refused(client, deleted_token)


def test_a_token_of_another_project_is_refused(firebase_config, new_user):
    _, token = new_user()  # issued for the emulator's project
    elsewhere = create_app({**firebase_config, "TESTING": True, "FIREBASE_PROJECT_ID": "demo-branet-elsewhere",
                            "STORE": "sqlite"})
    assert_refused(elsewhere.test_client(), token)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "x" * 5000])
def test_malformed_tokens_are_refused(client, firebase_servers, token):
    response = client.get("/v1/analyses", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"


def test_the_user_id_comes_only_from_the_token(firebase_app, client, new_user, busbra_png):
    uid, token = new_user()
    response = client.post(LEGACY.format("ultrasound", "false"), headers={**bearer(token), "X-User-Id": "intruder"},
                           data={"file": (io.BytesIO(busbra_png), "image.png", "image/png"), "uid": "intruder"},
                           content_type="multipart/form-data")
    analysis_id = response.get_json()["idResult"]
    assert history_document(firebase_app, uid, analysis_id).exists
    assert not history_document(firebase_app, "intruder", analysis_id).exists


def test_readiness_fails_when_the_bucket_is_missing(firebase_store, firebase_servers):
    firebase_store.check_writable()
    missing = FirebaseStore(firebase_store.db, storage.bucket("no-such-bucket",
                                                              app=get_firebase_app(firebase_servers.project_id)),
                            firebase_store.signed_url_ttl)
    with pytest.raises(StoreError):
        missing.check_writable()
