"""Feedback -> `python -m ml.feedback export` -> `python -m ml.train --fine-tune` -> /v1/models."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from api import create_app
from api.config import REPO_ROOT, from_environment
from conftest import upload
from ml.cards import sha256_of
from ml.datasets import lesion_mask, load_gray, read_folder
from ml.feedback import main as feedback_main

WEIGHTS = from_environment()["WEIGHTS_DIR"]
MISSED = [[[20, 30], [90, 30], [90, 80], [20, 80]]]
IGNORE = [[[150, 10], [260, 10], [260, 40]]]


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def read_rows(folder: Path) -> list[dict]:
    with open(folder / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def stored(tmp_path_factory, shared_data) -> dict:
    """A store with feedback, made through the API: what the tests below export."""
    data_dir = tmp_path_factory.mktemp("store")
    client = create_app({"TESTING": True, "DATA_DIR": data_dir}).test_client()
    images = [(shared_data / "busbra" / "images" / name).read_bytes() for name in ("bus_0002-l.png", "bus_0003-l.png")]

    def analysed(data: bytes, modality: str = "ultrasound") -> dict:
        response = upload(client, data, modality, saliency="none")
        assert response.status_code == 201
        return response.get_json()

    def feedback(analysis_id: str, **body) -> dict:
        response = client.post(f"/v1/analyses/{analysis_id}/feedback", json=body)
        assert response.status_code == 201
        return response.get_json()

    first = analysed(images[0])
    first_feedback = feedback(first["id"], label="benign", comment="Mrs X, biopsy pending",
                              missed_lesions={"polygons": MISSED}, ignore_regions={"polygons": IGNORE})
    # A rerun of the same image with feedback that only corrects the label: one row, newest label.
    rerun = client.post(f"/v1/analyses/{first['id']}/rerun", json={"operating_point": "balanced"}).get_json()
    feedback(rerun["id"], label="malignant")
    second = analysed(images[1])
    feedback(second["id"], label="benign")
    mammogram = analysed((shared_data / "mias" / "images" / "mdb001.png").read_bytes(), "mammography")
    feedback(mammogram["id"], label="normal")
    analysed(images[1])  # no feedback: not exported
    deleted = analysed(images[0])
    feedback(deleted["id"], label="normal")
    assert client.delete(f"/v1/analyses/{deleted['id']}").status_code == 204  # deleted: not exported

    def fetch(url: str) -> bytes:
        response = client.get(url)
        assert response.status_code == 200
        return response.data

    return {
        "data_dir": data_dir, "first": first, "rerun": rerun, "second": second, "mammogram": mammogram,
        "deleted": deleted, "original_png": fetch(first["images"]["original"]),
        "missed_png": fetch(first_feedback["masks"]["missed_lesions"]),
        "ignore_png": fetch(first_feedback["masks"]["ignore_regions"]),
    }


@pytest.fixture(scope="module")
def exported(stored, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "feedback"
    result = run_module("ml.feedback", "export", str(out), "--data-dir", str(stored["data_dir"]))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 3 and summary["lesion_masks"] == 1 and summary["ignore_masks"] == 1
    assert summary["modalities"] == {"ultrasound": 2, "mammography": 1}
    return out


def test_feedback_with_an_edited_mask_shows_up_in_the_export(stored, exported):
    rows = {row["group"]: row for row in read_rows(exported)}
    assert set(rows) == {stored["first"]["id"], stored["second"]["id"], stored["mammogram"]["id"]}
    row = rows[stored["first"]["id"]]
    assert set(row) >= {"image", "label", "masks", "group", "source"}
    assert row["source"] == "feedback" and row["modality"] == "ultrasound"
    # The rerun's newer feedback gives the label; the masks drawn on the original are kept.
    assert row["label"] == "malignant" and row["analysis_id"] == stored["rerun"]["id"]
    assert (exported / row["image"]).read_bytes() == stored["original_png"]
    assert (exported / row["masks"]).read_bytes() == stored["missed_png"]
    assert (exported / row["ignore_masks"]).read_bytes() == stored["ignore_png"]
    assert row["ignore_masks"].startswith("ignore/") and not row["masks"].startswith("ignore/")
    mask = np.asarray(Image.open(exported / row["masks"]))
    assert mask.shape == (int(row["height"]), int(row["width"]))
    assert mask[55, 50] > 0 and mask[200, 200] == 0  # inside and outside the drawn polygon
    assert rows[stored["second"]["id"]]["masks"] == "" and rows[stored["mammogram"]["id"]]["label"] == "normal"
    # Nothing of the owner or the free-text comment leaves the store.
    assert "Mrs X" not in (exported / "labels.csv").read_text()
    assert all("local" not in row.values() for row in read_rows(exported))


def test_the_export_reads_like_a_shared_data_set(stored, exported):
    samples = {Path(s.path).name: s for s in read_folder(exported)}
    sample = samples[f"{stored['first']['id']}.png"]
    assert sample.label == "malignant" and sample.has_outline and sample.group.endswith(stored["first"]["id"])
    gray = load_gray(sample.path)
    assert (lesion_mask(sample, gray.shape) > 0).sum() == (np.asarray(Image.open(io.BytesIO(stored["missed_png"]))) > 0).sum()


def test_modality_filter_and_a_non_empty_folder(stored, exported, tmp_path, capsys):
    """The command's own entry in this process (the fixture above ran it as a command)."""
    out = tmp_path / "mg"
    assert feedback_main(["export", str(out), "--data-dir", str(stored["data_dir"]), "--modality", "mammography"]) == 0
    assert [row["group"] for row in read_rows(out)] == [stored["mammogram"]["id"]]
    before = (exported / "labels.csv").read_bytes()
    assert feedback_main(["export", str(exported), "--data-dir", str(stored["data_dir"])]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (exported / "labels.csv").read_bytes() == before
    assert feedback_main(["export", str(tmp_path / "out"), "--data-dir", str(tmp_path / "no-store")]) == 2
    assert not (tmp_path / "out").exists() and not (tmp_path / "no-store").exists()


def test_importing_the_data_set_writer_imports_no_flask():
    code = "import sys, ml.feedback; assert 'flask' not in sys.modules, 'flask imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_fine_tuning_on_the_export_makes_a_new_version_that_models_lists(exported, tmp_path, busbra_png, shared_data):
    weights = tmp_path / "weights"
    weights.mkdir()
    for path in WEIGHTS.iterdir():
        if path.suffix in (".pt", ".json"):
            (weights / path.name).symlink_to(path)
    parent = json.loads((WEIGHTS / "branet-us-resnet18.json").read_text())
    result = run_module("ml.train", "--modality", "ultrasound", "--fine-tune", str(weights / "branet-us-resnet18.pt"),
                        "--extra", str(exported), "--data-root", str(shared_data),
                        "--replay", "10", "--epochs", "1", "--size", "32",
                        "--batch-size", "8", "--folds", "2", "--threads", "1", "--version", "2026.12.01.0900",
                        "--weights-dir", str(weights), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    name = "branet-us-resnet18-ft-2026.12.01.0900"
    card = json.loads((weights / f"{name}.json").read_text())
    assert card["sha256"] == sha256_of(weights / card["weights_file"]) and card["weights_file"] == f"{name}.pt"
    assert card["version"] == "2026.12.01.0900" and card["family"] == "branet-us-resnet18"
    assert card["parent"] == {"name": parent["name"], "version": parent["version"], "sha256": parent["sha256"]}
    assert card["fine_tuning"]["feedback"]["images"] == 2  # the ultrasound rows only
    assert card["fine_tuning"]["feedback"]["lesion_masks"] == 1 and card["fine_tuning"]["original_images"] == 10
    assert card["training"]["from_scratch"] is False and card["input"]["size"] == 32
    checkpoint = torch.load(tmp_path / "run" / "fine-tune" / "checkpoint.pt", weights_only=False)  # our own file
    assert card["architecture"] == parent["architecture"] == checkpoint["settings"]["architecture"]
    assert card.get("members", 1) == parent.get("members", 1)  # an ensemble is fine-tuned member by member
    assert sha256_of(WEIGHTS / "branet-us-resnet18.pt") == parent["sha256"]  # the parent is untouched

    # Listed, not served, until the configuration names it.
    listed = {m["name"]: m for m in
              create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "WEIGHTS_DIR": weights})
              .test_client().get("/v1/models").get_json()["models"]}
    assert listed[name]["served"] is False and listed["branet-us-resnet18"]["served"] is True
    assert listed[name]["parent"]["name"] == "branet-us-resnet18" and listed[name]["kind"] == "classifier"
    assert listed[name]["fine_tuning"]["feedback"]["images"] == 2

    client = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "WEIGHTS_DIR": weights,
                         "MODELS": {"ultrasound": name}}).test_client()
    listed = {m["name"]: m for m in client.get("/v1/models").get_json()["models"]}
    assert listed[name]["served"] is True and listed["branet-us-resnet18"]["served"] is False
    body = upload(client, busbra_png, saliency="none").get_json()
    assert body["model"] == {"name": name, "version": "2026.12.01.0900"}
    assert body["threshold"] == pytest.approx(card["threshold"]["malignant"])
