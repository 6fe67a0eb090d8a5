"""The store contract, run unchanged against the embedded SQLite store and the Firebase store
(Firestore emulator when FIRESTORE_EMULATOR_HOST is set, else the in-memory stand-in, with the
storage server); tests that look at SQLite's own files run against SQLite only."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.store import SQLiteStore, StoreError


@pytest.fixture(params=["sqlite", pytest.param("firebase", marks=pytest.mark.firebase)])
def store(request, tmp_path):
    if request.param == "firebase":
        return request.getfixturevalue("firebase_store")
    return SQLiteStore(tmp_path)


sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def record(created_at: str = "2026-01-01T00:00:00.000+00:00", **fields) -> dict:
    return {"id": str(uuid.uuid4()), "created_at": created_at, "images": ["original.png"], **fields}


def test_saved_analysis_reads_back_with_its_image(store):
    saved = record(label="benign")
    store.save_analysis("alice", saved, {"original.png": b"png-bytes"})
    assert store.get_analysis("alice", saved["id"]) == {**saved, "feedback": []}
    assert store.read_image("alice", saved["id"], "original.png") == b"png-bytes"


def test_owners_never_see_each_others_analyses(store):
    saved = record()
    store.save_analysis("alice", saved, {"original.png": b"x"})
    assert store.get_analysis("bob", saved["id"]) is None
    assert store.read_image("bob", saved["id"], "original.png") is None
    assert store.list_analyses("bob", 10, 0) == ([], 0)
    assert store.deactivate("bob", saved["id"]) is False
    assert store.add_feedback("bob", saved["id"], {"label": "benign"}) is None
    assert store.get_analysis("alice", saved["id"]) is not None


def test_history_is_newest_first_and_paged(store):
    saved = [record(f"2026-01-0{day}T00:00:00.000+00:00") for day in (1, 3, 2)]
    for item in saved:
        store.save_analysis("alice", item, {"original.png": b"x"})
    items, total = store.list_analyses("alice", 2, 0)
    assert total == 3
    assert [i["created_at"][:10] for i in items] == ["2026-01-03", "2026-01-02"]
    assert [i["created_at"][:10] for i in store.list_analyses("alice", 2, 2)[0]] == ["2026-01-01"]


def test_deactivated_analysis_is_gone_from_every_read(store):
    saved = record()
    store.save_analysis("alice", saved, {"original.png": b"x"})
    assert store.deactivate("alice", saved["id"]) is True
    assert store.get_analysis("alice", saved["id"]) is None
    assert store.read_image("alice", saved["id"], "original.png") is None
    assert store.list_analyses("alice", 10, 0) == ([], 0)
    assert store.deactivate("alice", saved["id"]) is False


def test_feedback_versions_count_up(store):
    saved = record()
    store.save_analysis("alice", saved, {"original.png": b"x"})
    versions = [store.add_feedback("alice", saved["id"], {"label": l})["version"] for l in ("benign", "malignant")]
    assert versions == [1, 2]
    assert [f["label"] for f in store.get_analysis("alice", saved["id"])["feedback"]] == ["benign", "malignant"]


def test_only_listed_images_are_served(store):
    saved = record()
    store.save_analysis("alice", saved, {"original.png": b"x"})
    assert store.read_image("alice", saved["id"], "../branet.sqlite3") is None


@sqlite_only
def test_a_failed_save_leaves_nothing_behind(store, tmp_path):
    first = record()
    store.save_analysis("alice", first, {"original.png": b"x"})
    clash = {**record(), "id": first["id"]}  # the record insert fails: duplicate primary key
    with pytest.raises(StoreError):
        store.save_analysis("alice", clash, {"original.png": b"y"})
    assert store.list_analyses("alice", 10, 0)[1] == 1
    assert store.read_image("alice", first["id"], "original.png") in (b"x", None)
    leftovers = [p for p in (tmp_path / "images").iterdir() if p.name.startswith(".staging")]
    assert leftovers == []


@sqlite_only
def test_a_failed_image_write_stores_no_record(store, tmp_path):
    saved = record()
    with pytest.raises(StoreError):
        store.save_analysis("alice", saved, {"sub/dir/original.png": b"x"})  # cannot be written
    assert store.get_analysis("alice", saved["id"]) is None
    assert [p for p in (tmp_path / "images").iterdir()] == []


def test_writable_check_fails_when_the_image_folder_is_gone(tmp_path):
    store = SQLiteStore(tmp_path)
    store.check_writable()
    (tmp_path / "images").rmdir()
    (tmp_path / "images").write_text("not a folder")  # root ignores permissions; this it cannot
    with pytest.raises(StoreError):
        store.check_writable()


def test_feedback_masks_are_stored_with_their_version_and_served_to_the_owner(store):
    saved = record()
    store.save_analysis("alice", saved, {"original.png": b"x"})
    first = store.add_feedback("alice", saved["id"], {"label": "benign"}, {"missed_lesions": b"m1"})
    second = store.add_feedback("alice", saved["id"], {"label": "benign"}, {"missed_lesions": b"m2"})
    assert first["masks"] == {"missed_lesions": "feedback1_missed_lesions.png"}
    assert store.read_image("alice", saved["id"], "feedback1_missed_lesions.png") == b"m1"
    assert store.read_image("alice", saved["id"], second["masks"]["missed_lesions"]) == b"m2"
    assert store.read_image("bob", saved["id"], "feedback1_missed_lesions.png") is None


@sqlite_only
def test_a_failed_feedback_write_keeps_neither_row_nor_mask(store, tmp_path):
    saved = record()
    store.save_analysis("alice", saved, {"original.png": b"x"})
    with pytest.raises(StoreError):
        store.add_feedback("alice", saved["id"], {"label": "benign", "bad": object()}, {"missed_lesions": b"m"})
    assert store.get_analysis("alice", saved["id"])["feedback"] == []
    assert not (tmp_path / "images" / saved["id"] / "feedback1_missed_lesions.png").exists()


def test_nested_values_read_back_unchanged(store):
    saved = record(saliency={"grid": [[0.0, 0.5], [1.0, 0.25]]}, rois=[{"index": 0, "box": {"x0": 1}}],
                   pixel_spacing_mm=[0.1, 0.1])
    store.save_analysis("alice", saved, {"original.png": b"x"})
    assert store.get_analysis("alice", saved["id"]) == {**saved, "feedback": []}


def test_a_corrected_roi_is_appended_with_its_images_and_the_label(store):
    saved = record(label="benign", rois=[])
    store.save_analysis("alice", saved, {"original.png": b"x"})
    roi = store.add_roi("alice", saved["id"], {"source": "correction"}, {".png": b"crop", "_mask.png": b"mask"},
                        "malignant")
    assert roi == {"source": "correction", "index": 0, "images": ["roi0.png", "roi0_mask.png"]}
    stored = store.get_analysis("alice", saved["id"])
    assert stored["label"] == "malignant" and stored["rois"] == [roi]
    assert store.read_image("alice", saved["id"], "roi0_mask.png") == b"mask"
    assert store.add_roi("bob", saved["id"], {"source": "correction"}, {".png": b"c"}, "benign") is None


def test_concurrent_feedback_gets_distinct_versions_and_keeps_every_mask(store):
    saved = record()
    store.save_analysis("alice", saved, {"original.png": b"x"})

    def write(writer: int) -> list[dict]:
        return [store.add_feedback("alice", saved["id"], {"label": "benign", "comment": f"{writer}-{n}"},
                                   {"missed_lesions": f"mask {writer}-{n}".encode()}) for n in range(2)]

    with ThreadPoolExecutor(max_workers=3) as pool:
        written = [entry for entries in pool.map(write, range(3)) for entry in entries]
    assert sorted(entry["version"] for entry in written) == list(range(1, 7))
    for entry in written:
        mask = store.read_image("alice", saved["id"], entry["masks"]["missed_lesions"])
        assert mask == f"mask {entry['comment']}".encode()
    assert len(store.get_analysis("alice", saved["id"])["feedback"]) == 6


def test_feedback_records_cross_owners_for_export_and_skip_the_rest(store):
    """The export's read: every active analysis with feedback, oldest first, of one modality if asked."""
    day = "2026-01-0{}T00:00:00.000+00:00"
    alice_us, bob_mg = record(day.format(2), modality="ultrasound"), record(day.format(1), modality="mammography")
    no_feedback, deleted = record(day.format(3), modality="ultrasound"), record(day.format(4), modality="ultrasound")
    for owner, saved in (("alice", alice_us), ("bob", bob_mg), ("alice", no_feedback), ("bob", deleted)):
        store.save_analysis(owner, saved, {"original.png": b"x"})
    for owner, saved in (("alice", alice_us), ("bob", bob_mg), ("bob", deleted)):
        store.add_feedback(owner, saved["id"], {"label": "benign"})
    store.add_feedback("alice", alice_us["id"], {"label": "malignant"})
    store.deactivate("bob", deleted["id"])

    listed = list(store.feedback_records())
    assert [(owner, found["id"]) for owner, found in listed] == [("bob", bob_mg["id"]), ("alice", alice_us["id"])]
    assert [f["label"] for f in listed[1][1]["feedback"]] == ["benign", "malignant"]
    assert [found["id"] for _, found in store.feedback_records("ultrasound")] == [alice_us["id"]]
