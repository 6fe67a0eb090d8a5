"""The models package on its own: classifier, evaluation and training command lines."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from api.config import REPO_ROOT, from_environment
from ml.cards import sha256_of
from ml.classifier import Classifier
from ml.datasets import Sample, lesion_mask, load_gray, read_folder
from ml.resnet import build_classifier
from ml.saliency import Explainer

WEIGHTS = from_environment()["WEIGHTS_DIR"]


@pytest.fixture(scope="module")
def classifier():
    return Classifier.load(WEIGHTS, "branet-us-resnet18")


@pytest.fixture(scope="module")
def grays(shared_data):
    names = ["bus_0002-l.png", "bus_0003-l.png", "bus_0005-r.png"]
    return [load_gray(shared_data / "busbra" / "images" / n) for n in names]


def test_probabilities_are_a_distribution(classifier, grays):
    probs = classifier.probabilities(grays)
    assert probs.shape == (3, 3)
    assert np.allclose(probs.sum(axis=1), 1.0) and (probs >= 0).all()


def test_a_batch_gives_the_same_answers_as_single_images(classifier, grays):
    batch = classifier.probabilities(grays)
    singles = np.concatenate([classifier.probabilities([g]) for g in grays])
    assert np.allclose(batch, singles, atol=1e-5)


def test_concurrent_calls_from_threads_agree(classifier, grays):
    expected = classifier.probabilities(grays)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: classifier.probabilities(grays), range(8)))
    for result in results:
        assert np.allclose(result, expected, atol=1e-5)


def run_module(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def mias_subset(tmp_path: Path, shared_data: Path) -> Path:
    """A data root holding mini-MIAS's first 40 rows: enough for a two-fold training run."""
    data_root = tmp_path / "data"
    (data_root / "mias").mkdir(parents=True)
    (data_root / "mias" / "images").symlink_to(shared_data / "mias" / "images")
    with open(shared_data / "mias" / "labels.csv") as source, open(data_root / "mias" / "labels.csv", "w") as target:
        target.writelines(source.readlines()[:41])
    return data_root


def fine_tune_mammography(tmp_path: Path, data_root: Path) -> subprocess.CompletedProcess:
    """`ml.train --fine-tune` of the model a test trained into tmp_path/weights, on its data
    root's own mini-MIAS rows as feedback, into tmp_path/weights/mg-ft."""
    return run_module("ml.train", "--modality", "mammography", "--data-root", str(data_root),
                      "--fine-tune", str(tmp_path / "weights" / "branet-mg-resnet18.pt"),
                      "--extra", str(data_root / "mias"), "--folds", "2", "--epochs", "1",
                      "--run-dir", str(tmp_path / "fine-tune"), "--weights-dir", str(tmp_path / "weights"),
                      "--name", "mg-ft")


def busi_subset_labels(shared_data: Path, folder: Path, per_label: int) -> list[dict]:
    """Write folder/labels.csv with BUSI's first `per_label` rows of each class; returns the rows."""
    with open(shared_data / "busi" / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [row for label in ("normal", "benign", "malignant")
              for row in [r for r in rows if r["label"] == label][:per_label]]
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(chosen)
    return chosen


def test_evaluate_prints_the_metrics_json(tmp_path, shared_data):
    folder = tmp_path / "busi_subset"
    shutil.copytree(shared_data / "busi", folder, ignore=shutil.ignore_patterns("*mask*"))
    busi_subset_labels(shared_data, folder, per_label=4)
    result = run_module("ml.evaluate", "classify", "--modality", "ultrasound", "--weights-dir", str(WEIGHTS),
                        str(folder))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 12
    for key in ("auc_malignant", "auc_lesion", "accuracy", "sensitivity", "specificity"):
        assert 0.0 <= report[key] <= 1.0
    matrix = np.array(report["confusion"]["matrix"])
    assert matrix.sum() == 12 and matrix.sum(axis=1).tolist() == [4, 4, 4]


def test_evaluate_names_the_files_labels_csv_lists_but_the_folder_lacks(tmp_path, shared_data):
    folder = tmp_path / "busi_subset"
    rows = busi_subset_labels(shared_data, folder, per_label=1)
    for row in rows[1:]:
        (folder / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "busi" / row["image"], folder / row["image"])
    for command in ("classify", "segment"):
        result = run_module("ml.evaluate", command, "--modality", "ultrasound", "--weights-dir", str(WEIGHTS),
                            str(folder))
        assert result.returncode != 0 and "Traceback" not in result.stderr
        # classify needs the images only; segment their masks too, none of which was copied
        missing = 1 if command == "classify" else 1 + len(rows)
        assert result.stderr.strip().endswith(f"lists {missing} file(s) that are not in the folder: "
                                              + ", ".join([rows[0]["image"], *(r["masks"] for r in rows)][:missing]))


def test_evaluate_segment_counts_rois_on_images_without_a_lesion(tmp_path, shared_data):
    folder = tmp_path / "busi_subset"
    for row in busi_subset_labels(shared_data, folder, per_label=3):
        for name in (row["image"], row["masks"]):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared_data / "busi" / name, folder / name)
    result = run_module("ml.evaluate", "segment", "--modality", "ultrasound", "--weights-dir", str(WEIGHTS),
                        str(folder))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 9 and report["lesion_images"] == 6 and report["lesion_free_images"] == 3
    assert report["lesion_free_with_roi"] in (0.0, 0.3333, 0.6667, 1.0)
    assert report["false_rois_per_image"] * 9 >= report["lesion_free_with_roi"] * 3 - 1e-3  # each is a false ROI
    assert 0.0 < report["dice"] <= 1.0 and 0.0 <= report["detection_rate"] <= 1.0


def test_a_lesion_mask_saved_as_0_1_or_16_bit_marks_the_same_lesion(tmp_path, shared_data):
    original = shared_data / "busbra" / "masks" / "mask_0002-l.png"
    ours = np.asarray(Image.open(original).convert("L")) > 127
    encodings = {"zero_one.png": ours.astype(np.uint8), "sixteen_bit.png": ours.astype(np.uint16) * 65535,
                 "empty.png": np.zeros_like(ours, dtype=np.uint8)}
    for name, values in encodings.items():
        Image.fromarray(values).save(tmp_path / name)

    def mask_of(*names: str) -> np.ndarray:
        sample = Sample(path=tmp_path / "image.png", label="benign", group="g", dataset="d",
                        masks=tuple(tmp_path / name for name in names))
        return lesion_mask(sample, ours.shape) > 127

    assert ours.any() and np.array_equal(mask_of("zero_one.png"), ours)
    assert np.array_equal(mask_of("sixteen_bit.png"), ours)
    assert not mask_of("empty.png").any() and np.array_equal(mask_of("empty.png", "zero_one.png"), ours)


def test_a_labels_csv_saved_by_a_spreadsheet_reads_like_ours(tmp_path, shared_data):
    ours = read_folder(shared_data / "busbra")[:3]
    folder = tmp_path / "busbra"
    folder.mkdir()
    lines = ["image , label, masks ,group"] + [
        f"{s.path.name} , {s.label.upper()}, {';'.join(m.relative_to(shared_data / 'busbra').as_posix() for m in s.masks)} ,"
        f"{s.group.split(':', 1)[1]}{' ' * index}" for index, s in enumerate(ours)]
    (folder / "labels.csv").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    read = read_folder(folder)
    assert [(s.path.name, s.label, s.group) for s in read] == [(s.path.name, s.label, s.group) for s in ours]
    assert [[m.name for m in s.masks] for s in read] == [[m.name for m in s.masks] for s in ours]
    (folder / "labels.csv").write_text("file,diagnosis\nx.png,benign\n")
    with pytest.raises(ValueError, match="needs the columns image and label"):
        read_folder(folder)


@pytest.mark.parametrize("row, refusal", [
    ("b.png,malign,p2", "line 3: label 'malign' is not one of normal, benign, malignant"),
    (",benign,p2", "line 3: no image"),
    ("b.png", "line 3: label '' is not one of normal, benign, malignant"),  # a row cut short
])
def test_a_labels_csv_row_without_an_image_or_a_known_label_is_refused_by_its_line(tmp_path, row, refusal):
    (tmp_path / "labels.csv").write_text(f"image,label,group\na.png,benign,p1\n{row}\nc.png,normal,p3\n")
    with pytest.raises(ValueError, match=f"labels.csv {refusal}$"):
        read_folder(tmp_path)


def test_evaluate_refuses_a_row_it_cannot_score_in_one_line(tmp_path, shared_data):
    folder = tmp_path / "busi_subset"
    rows = busi_subset_labels(shared_data, folder, per_label=1)
    text = (folder / "labels.csv").read_text().replace(f",{rows[1]['label']},", ",BI-RADS 4,", 1)
    (folder / "labels.csv").write_text(text)
    result = run_module("ml.evaluate", "classify", "--modality", "ultrasound", "--weights-dir", str(WEIGHTS),
                        str(folder))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("line 3: label 'bi-rads 4' is not one of normal, benign, malignant")


def test_evaluate_refuses_an_empty_list_and_labels_its_model_does_not_know(tmp_path, shared_data):
    folder = tmp_path / "busi_subset"
    busi_subset_labels(shared_data, folder, per_label=1)
    for label in ("normal", "benign", "malignant"):
        (folder / label).symlink_to(shared_data / "busi" / label)
    # a model that tells benign from malignant only: the normal image would be dropped, not scored
    weights = tmp_path / "weights"
    weights.mkdir()
    card = json.loads((WEIGHTS / "branet-us-resnet18.json").read_text())
    torch.save(build_classifier("resnet18", 2).state_dict(), weights / card["weights_file"])
    card |= {"classes": ["benign", "malignant"], "architecture": "resnet18", "members": 1,
             "sha256": sha256_of(weights / card["weights_file"])}
    (weights / "branet-us-resnet18.json").write_text(json.dumps(card))
    result = run_module("ml.evaluate", "classify", "--modality", "ultrasound", "--weights-dir", str(weights), str(folder))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("labels.csv has labels ['normal'] that model branet-us-resnet18 does not "
                                          "know (its classes: ['benign', 'malignant'])")

    header = (folder / "labels.csv").read_text().splitlines()[0]
    (folder / "labels.csv").write_text(header + "\n")
    result = run_module("ml.evaluate", "classify", "--modality", "ultrasound", "--weights-dir", str(WEIGHTS), str(folder))
    assert result.returncode != 0 and result.stderr.strip().endswith("labels.csv lists no image")


def test_training_writes_a_loadable_model_and_resumes(tmp_path, shared_data):
    data_root = mias_subset(tmp_path, shared_data)
    command = ["ml.train", "--modality", "mammography", "--data-root", str(data_root), "--folds", "2",
               "--epochs", "1", "--size", "32", "--batch-size", "8", "--run-dir", str(tmp_path / "run"),
               "--weights-dir", str(tmp_path / "weights"), "--evidence-weight", "0.5"]
    first = run_module(*command)
    assert first.returncode == 0, first.stderr
    card = json.loads((tmp_path / "weights" / "branet-mg-resnet18.json").read_text())
    assert card["sha256"] == sha256_of(tmp_path / "weights" / card["weights_file"])
    assert card["training"]["from_scratch"] is True and "mias" in card["data"]
    assert re.fullmatch(r"\d{4}\.\d{2}\.\d{2}\.\d{4}", card["version"])  # to the minute: runs a day stay apart
    assert "--evidence-weight 0.5" in card["training"]["command"]
    assert "research use only" in card["data"]["mias"]
    assert set(card["metrics"]["pooled"]["ci95"]) == {"auc_malignant", "sensitivity", "specificity"}
    assert 0 <= card["metrics"]["saliency_localisation"]["pointing_game"] <= 1
    assert card["threshold"]["balanced"] > 0 and "low_confidence" in card["reliability"]
    # every class among the out-of-fold images: a temperature and a bias per class, and the figures
    # with each fold calibrated by the other's fit beside those calibrated by the fit on all
    assert len(card["calibration"]["class_bias"]) == 3 and "bias per class" in card["calibration"]["method"]
    cross_fitted = card["metrics"]["cross_fitted_calibration"]
    assert 0 <= cross_fitted["ece_malignant"] <= 1 and 0 <= cross_fitted["auc_lesion"] <= 1
    model = Classifier.load(tmp_path / "weights", "branet-mg-resnet18")
    assert model.probabilities([np.zeros((64, 64), dtype=np.uint8)]).shape == (1, 3)

    second = run_module(*command)
    assert second.returncode == 0, second.stderr
    assert "full: resuming after epoch 1" in second.stderr
    assert "fold0 epoch" not in second.stderr  # finished folds are not trained again
    screenshots = run_module("ml.evaluate", "out-of-fold", "--modality", "mammography", "--run-dir", str(tmp_path / "run"),
                             "--weights-dir", str(tmp_path / "weights"), "--folds", "0", "1", "--as-screenshot",
                             str(data_root))
    assert screenshots.returncode == 0, screenshots.stderr
    measured = json.loads(screenshots.stdout)
    assert measured["as_screenshot"] is True and measured["n"] == 40
    paired = measured["screen_crop_on"]["paired_vs_off"]["all"]["malignant_vs_rest"]
    assert paired["a"] == measured["screen_crop_off"]["all"]["auc_malignant"]
    assert paired["b"] == measured["screen_crop_on"]["all"]["auc_malignant"]
    assert paired["b_minus_a"] == pytest.approx(paired["b"] - paired["a"], abs=1e-4)
    assert paired["ci95"][0] <= paired["b_minus_a"] <= paired["ci95"][1]


@pytest.mark.parametrize("module, first_checkpoint, weights_file", [
    ("ml.train", "fold0/checkpoint.pt", "branet-mg-resnet18.pt"),
    ("ml.segmenter.train", "checkpoint.pt", "branet-mg-sam-small.pt"),
])
def test_a_training_command_rerun_or_killed_and_resumed_writes_the_same_weights(tmp_path, shared_data, module,
                                                                                first_checkpoint, weights_file):
    """A fixed seed reproduces a model on one machine bit for bit, whether its command runs through
    or is killed after its first checkpoint and run again (the resume restores every random state)."""
    data_root = mias_subset(tmp_path, shared_data)

    def command(name: str) -> list[str]:
        folds = ["--folds", "2"] if module == "ml.train" else []
        return [sys.executable, "-m", module, "--modality", "mammography", "--data-root", str(data_root), *folds,
                "--epochs", "2", "--size", "64" if module == "ml.segmenter.train" else "32", "--batch-size", "8",
                "--seed", "3", "--version", "1", "--run-dir", str(tmp_path / name), "--weights-dir", str(tmp_path / name / "weights")]

    through = subprocess.run(command("through"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert through.returncode == 0, through.stderr
    interrupted = subprocess.Popen(command("resumed"), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "resumed" / first_checkpoint
    while not checkpoint.exists() and interrupted.poll() is None:
        time.sleep(0.01)
    interrupted.kill()
    assert interrupted.wait() != 0  # killed during its second epoch, before any weights were written
    assert not (tmp_path / "resumed" / "weights" / weights_file).exists()
    resumed = subprocess.run(command("resumed"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stderr
    assert sha256_of(tmp_path / "resumed" / "weights" / weights_file) == sha256_of(tmp_path / "through" / "weights" / weights_file)


def test_held_out_every_thins_the_held_out_log_and_changes_no_weight(tmp_path, shared_data):
    data_root = mias_subset(tmp_path, shared_data)

    def train(name: str, *extra: str) -> subprocess.CompletedProcess:
        return run_module("ml.train", "--modality", "mammography", "--data-root", str(data_root), "--folds", "2",
                          "--epochs", "3", "--size", "32", "--batch-size", "8", "--seed", "3", "--version", "1",
                          "--run-dir", str(tmp_path / name), "--weights-dir", str(tmp_path / name / "weights"), *extra)

    every = train("every")
    thinned = train("thinned", "--held-out-every", "2")
    assert every.returncode == 0 and thinned.returncode == 0, every.stderr + thinned.stderr
    logged = {epoch: "held-out auc_malignant" in line
              for line in (tmp_path / "thinned" / "train.log").read_text().splitlines()
              for epoch in re.findall(r"thinned/fold0 epoch (\d) loss", line)}
    assert logged == {"1": False, "2": True, "3": True}  # every second epoch, and the last
    weights = "branet-mg-resnet18.pt"
    assert sha256_of(tmp_path / "thinned" / "weights" / weights) == sha256_of(tmp_path / "every" / "weights" / weights)

    again = train("thinned", "--held-out-every", "1")  # not a setting: the finished run is resumed, not retrained
    assert again.returncode == 0, again.stderr
    assert "fold0 epoch" not in again.stderr and "full: resuming after epoch 3" in again.stderr
    refused = train("refused", "--held-out-every", "0")
    assert refused.returncode == 2 and "--held-out-every must be at least 1, not 0" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_training_on_lesion_centred_crops_serves_a_model_that_reads_images_by_windows(tmp_path, shared_data):
    from ml.inference import most_suspicious_window
    from ml.preprocess import to_batch

    data_root = mias_subset(tmp_path, shared_data)
    command = ["ml.train", "--modality", "mammography", "--data-root", str(data_root), "--folds", "2",
               "--epochs", "1", "--size", "48", "--crop", "24", "--batch-size", "8",
               "--run-dir", str(tmp_path / "run"), "--weights-dir", str(tmp_path / "weights")]
    result = run_module(*command)
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "weights" / "branet-mg-resnet18.json").read_text())
    assert "--crop 24" in card["training"]["command"] and card["training"]["lesion_centred_crops"] == 24
    assert card["input"]["size"] == 48 and card["input"]["window"] == 24  # read by the windows it trained on
    model = Classifier.load(tmp_path / "weights", "branet-mg-resnet18")
    assert model.probabilities([np.zeros((300, 200), dtype=np.uint8)]).shape == (1, 3)
    gray = load_gray(data_root / "mias" / "images" / "mdb001.png")
    batch = to_batch([gray], model.spec)
    with torch.inference_mode():
        window, _ = most_suspicious_window(model.network, torch.cat([batch, batch.flip(3)]), model.spec)
        expected = model.image_calibration.calibrator.probabilities(window.mean(dim=0, keepdim=True).double().numpy())
    np.testing.assert_allclose(model.probabilities([gray]), expected, rtol=1e-6)

    # the out-of-fold logits record how they were read; read otherwise, they are read again, not reused
    saved = tmp_path / "run" / "fold0" / "out_of_fold.npz"
    assert json.loads(str(np.load(saved)["spec"]))["window"] == 24
    np.savez(saved, logits=np.zeros_like(np.load(saved)["logits"]), held_out=np.load(saved)["held_out"])
    (tmp_path / "run" / "fold0" / "localisation.json").write_text("{}")
    again = run_module(*command)
    assert again.returncode == 0, again.stderr
    assert "fold0 epoch" not in again.stderr  # nothing trained again
    assert np.load(saved)["logits"].any() and json.loads(str(np.load(saved)["spec"]))["window"] == 24
    assert json.loads((tmp_path / "run" / "fold0" / "localisation.json").read_text())  # the saliency measured again

    fine_tune = fine_tune_mammography(tmp_path, data_root)
    assert fine_tune.returncode == 0, fine_tune.stderr
    assert Classifier.load(tmp_path / "weights", "mg-ft").spec.window == 24  # trained and read as its parent

    # benchmarks/mammography_windows.py: its window reading is the run's own out-of-fold reading
    compared = subprocess.run([sys.executable, "benchmarks/mammography_windows.py", str(tmp_path / "run"), "--folds", "2",
                               "--size", "48", "--window", "24", "--data-root", str(data_root)],
                              cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": "."}, timeout=300)
    assert compared.returncode == 0, compared.stderr
    measured = json.loads(compared.stdout)
    assert measured["n"] == 40 and measured["window_side"] == 24
    assert measured["window_minus_whole"]["malignant_vs_rest"]["b"] == round(measured["window"]["auc_malignant"], 4)
    assert measured["window_minus_whole"]["lesion_vs_normal"]["b"] == round(measured["window"]["auc_lesion"], 4)
    from ml.calibration import softmax
    from ml.datasets import CLASSES, load_samples
    from ml.metrics import report

    logits = np.zeros((40, 3))
    for fold in (0, 1):
        saved = np.load(tmp_path / "run" / f"fold{fold}" / "out_of_fold.npz")
        logits[saved["held_out"]] = saved["logits"]
    labels = [sample.label for sample in load_samples(data_root, "mammography")]
    assert report(labels, softmax(logits), CLASSES, 0.5)["auc_malignant"] == measured["window"]["auc_malignant"]

    too_big = run_module("ml.train", "--modality", "mammography", "--data-root", str(data_root), "--size", "48",
                         "--crop", "64", "--run-dir", str(tmp_path / "refused"), "--weights-dir", str(tmp_path / "refused"))
    assert too_big.returncode == 2 and "--crop must be between 0 (off) and --size (48), not 64" in too_big.stderr
    assert not (tmp_path / "refused").exists()  # refused before anything is written


def ultrasound_subset(tmp_path: Path, shared_data: Path) -> tuple[Path, list[dict]]:
    """A data root holding BUS-BRA's first 24 rows and BUSI's first 4 of each class (returned)."""
    data_root = tmp_path / "data"
    (data_root / "busbra").mkdir(parents=True)
    (data_root / "busbra" / "images").symlink_to(shared_data / "busbra" / "images")
    (data_root / "busbra" / "masks").symlink_to(shared_data / "busbra" / "masks")
    with open(shared_data / "busbra" / "labels.csv") as source, open(data_root / "busbra" / "labels.csv", "w") as target:
        target.writelines(source.readlines()[:25])
    (data_root / "busi").mkdir()
    for label in ("normal", "benign", "malignant"):
        (data_root / "busi" / label).symlink_to(shared_data / "busi" / label)
    return data_root, busi_subset_labels(shared_data, data_root / "busi", per_label=4)


def test_cross_hospital_trains_the_shipped_recipe_on_one_set_and_reads_the_other(tmp_path, shared_data):
    data_root, busi_rows = ultrasound_subset(tmp_path, shared_data)

    def run(run_dir: str, *options: str, train: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """The benchmark's `options`, then ml.train's: one epoch at 32 px, and `train`."""
        command = [sys.executable, "benchmarks/cross_hospital.py", "--train-set", "busbra", "--run-dir", str(tmp_path / run_dir),
                   "--data-root", str(data_root), *options, "--", "--epochs", "1", "--size", "32", *train]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": "."}, timeout=300)

    first = run("run")
    assert first.returncode == 0, first.stderr
    measured = json.loads(first.stdout)
    assert measured["trained_on"] == "busbra" and measured["trained_images"] == 24 and measured["read"] == ["busi"]
    assert measured["n"] == sum(row["label_conflict"] != "1" for row in busi_rows)  # every BUSI image it may read
    shipped = json.loads((REPO_ROOT / "weights" / "branet-us-resnet18.json").read_text())["training"]["command"]
    assert measured["recipe"].startswith(shipped.split(" --members")[0]) and measured["recipe"].endswith("--epochs 1 --size 32")
    for reading in ("malignant_vs_benign", "malignant_vs_rest"):
        low, high = measured[reading]["ci95"]
        assert 0 <= low <= high <= 1 and 0 <= measured[reading]["auc"] <= 1
    assert 0 <= measured["lesion_vs_normal"] <= 1
    again = run("run")  # the finished network is resumed, not trained again, and reads the same
    assert again.returncode == 0 and "resuming after epoch 1" in again.stderr, again.stderr
    assert json.loads(again.stdout) == measured
    # trained and read on the cleaned scans, as ml.train --clean-scan trains, and paired with the run above
    cleaned = run("clean", "--paired-with", str(tmp_path / "run"), train=("--clean-scan",))
    assert cleaned.returncode == 0, cleaned.stderr
    assert (tmp_path / "clean" / "data_32_clean.npz").exists()
    paired = json.loads(cleaned.stdout)["this_minus_other"]["malignant_vs_benign"]
    assert paired["a"] == measured["malignant_vs_benign"]["auc"]
    assert paired["b"] == json.loads(cleaned.stdout)["malignant_vs_benign"]["auc"]
    assert paired["b_minus_a"] == pytest.approx(paired["b"] - paired["a"], abs=2e-4)
    (tmp_path / "other").mkdir()
    np.savez(tmp_path / "other" / "read.npz", images=["elsewhere.png"], probs=np.zeros((1, 3)))
    refused = run("run", "--paired-with", str(tmp_path / "other"))
    assert refused.returncode == 1 and "read other images than this run" in refused.stderr
    unfinished = run("never-trained", "--paired-with", str(tmp_path / "nowhere"))  # refused before any training
    assert unfinished.returncode == 2 and "no read.npz there" in unfinished.stderr
    assert not (tmp_path / "never-trained").exists()


def test_an_ensemble_adds_members_to_a_finished_run_and_fine_tunes_member_by_member(tmp_path, shared_data):
    from ml.resnet import Ensemble

    data_root = mias_subset(tmp_path, shared_data)
    command = ["ml.train", "--modality", "mammography", "--data-root", str(data_root), "--folds", "2",
               "--epochs", "1", "--size", "32", "--batch-size", "8", "--run-dir", str(tmp_path / "run"),
               "--weights-dir", str(tmp_path / "weights")]
    single = run_module(*command)
    assert single.returncode == 0, single.stderr
    one = np.load(tmp_path / "run" / "fold0" / "out_of_fold.npz")["logits"]

    ensemble = run_module(*command, "--members", "2")
    assert ensemble.returncode == 0, ensemble.stderr
    # member 0 is reused: its finished folds are not trained again, its finished full network resumed as it is
    assert "fold0 epoch" not in ensemble.stderr and "full: resuming after epoch 1" in ensemble.stderr
    assert "fold0/member1 epoch 1" in ensemble.stderr and "full/member1 epoch 1" in ensemble.stderr
    other = np.load(tmp_path / "run" / "fold0" / "member1" / "out_of_fold.npz")["logits"]
    assert not np.allclose(one, other)  # another random start, another network
    assert (tmp_path / "run" / "fold0" / "localisation_2_members.json").exists()
    card = json.loads((tmp_path / "weights" / "branet-mg-resnet18.json").read_text())
    assert card["members"] == 2 and "--members 2" in card["training"]["command"]
    model = Classifier.load(tmp_path / "weights", "branet-mg-resnet18")
    assert isinstance(model.network, Ensemble) and len(model.network.members) == 2
    assert model.probabilities([np.zeros((64, 64), dtype=np.uint8)]).shape == (1, 3)
    assert Explainer.for_classifier(model).explain(np.full((64, 64), 90, np.uint8), "benign").full.shape == (64, 64)

    fine_tune = fine_tune_mammography(tmp_path, data_root)
    assert fine_tune.returncode == 0, fine_tune.stderr
    assert (tmp_path / "fine-tune" / "fine-tune" / "member1" / "checkpoint.pt").exists()
    tuned = Classifier.load(tmp_path / "weights", "mg-ft")
    assert tuned.card["members"] == 2 and len(tuned.network.members) == 2

    refused = run_module(*command[:-4], "--run-dir", str(tmp_path / "refused"), "--weights-dir", str(tmp_path / "refused"),
                         "--members", "0")
    assert refused.returncode == 2 and "--members must be at least 1, not 0" in refused.stderr
    assert not (tmp_path / "refused").exists()  # refused before anything is written

    # benchmarks/compare_cv_runs.py: the run against its own first member, then with a fold unfinished
    compare = [sys.executable, "benchmarks/compare_cv_runs.py", str(tmp_path / "run"), str(tmp_path / "run"),
               "--members-b", "2", "--modality", "mammography", "--folds", "2", "--data-root", str(data_root)]
    run_compare = lambda *extra: subprocess.run([*compare, *extra], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                                                env={**os.environ, "PYTHONPATH": "."}, timeout=300)
    whole = run_compare()
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["folds"] == [0, 1] and json.loads(whole.stdout)["n"] == 40
    lesion = json.loads(whole.stdout)["pooled"]["lesion_vs_normal"]  # mini-MIAS has normal breasts
    assert lesion["b_minus_a"] == pytest.approx(lesion["b"] - lesion["a"], abs=2e-4)  # three roundings to 4 places
    (tmp_path / "run" / "fold1" / "member1" / "out_of_fold.npz").unlink()
    unfinished = run_compare()
    assert unfinished.returncode == 1 and "only folds [0] of 2 are finished in both runs" in unfinished.stderr
    partial = run_compare("--finished-folds")
    assert partial.returncode == 0, partial.stderr
    held_out = len(np.load(tmp_path / "run" / "fold0" / "out_of_fold.npz")["held_out"])
    assert json.loads(partial.stdout)["folds"] == [0] and json.loads(partial.stdout)["n"] == held_out < 40


def test_init_starts_every_network_from_another_model_and_the_card_says_which(tmp_path, shared_data):
    data_root = mias_subset(tmp_path, shared_data)
    common = ["ml.train", "--modality", "mammography", "--data-root", str(data_root), "--folds", "2",
              "--epochs", "1", "--size", "32", "--batch-size", "8"]
    parent = run_module(*common, "--run-dir", str(tmp_path / "parent"), "--weights-dir", str(tmp_path / "parent"))
    assert parent.returncode == 0, parent.stderr
    parent_weights = tmp_path / "parent" / "branet-mg-resnet18.pt"
    # another seed (another random start), and a learning rate too small to move a weight: what the
    # networks hold afterwards is where they started
    child = run_module(*common, "--seed", "1", "--lr", "1e-12", "--init", str(parent_weights),
                       "--run-dir", str(tmp_path / "child"), "--weights-dir", str(tmp_path / "child"))
    assert child.returncode == 0, child.stderr
    start = torch.load(parent_weights, weights_only=True)
    for network in ("fold0", "fold1", "full"):
        trained = torch.load(tmp_path / "child" / network / "checkpoint.pt", weights_only=False)["model"]
        for key in ("conv1.weight", "layer3.0.conv1.weight", "fc.weight"):
            torch.testing.assert_close(trained[f"classifier.{key}"], start[key].float(), atol=2e-3, rtol=0)
    card = json.loads((tmp_path / "child" / "branet-mg-resnet18.json").read_text())
    parent_card = json.loads((tmp_path / "parent" / "branet-mg-resnet18.json").read_text())
    assert card["training"]["initialised_from"]["sha256"] == parent_card["sha256"]
    assert f"--init {parent_weights}" in card["training"]["command"]

    from ml.multitask import ClassifierWithLocalisation
    from ml.resnet import resnet18_gray

    torch.manual_seed(1)  # seed 1's random start, as ml.train would have drawn it without --init
    random_start = ClassifierWithLocalisation(resnet18_gray(num_classes=3)).state_dict()
    assert not torch.allclose(random_start["classifier.conv1.weight"], start["conv1.weight"].float(), atol=2e-3)

    both = run_module(*common, "--init", str(parent_weights), "--fine-tune", str(parent_weights),
                      "--run-dir", str(tmp_path / "refused"), "--weights-dir", str(tmp_path / "refused"))
    assert both.returncode == 2 and "--init and --fine-tune both say where training starts" in both.stderr
    assert not (tmp_path / "refused").exists()


def test_an_ensembles_gradcam_sums_its_members_blocks_before_the_relu(grays):
    from ml.preprocess import InputSpec, to_batch
    from ml.resnet import build_classifier

    torch.manual_seed(0)
    explainer = Explainer(build_classifier("resnet18", 3, members=2), InputSpec(size=64), ["benign", "malignant", "normal"])
    batch = to_batch([grays[0]], explainer.spec)
    members = explainer.network.members
    kept = {}
    hooks = [member.layer4.register_forward_hook(lambda module, inputs, output, i=i: kept.update({i: output}))
             for i, member in enumerate(members)]
    with torch.enable_grad():
        logit = explainer.network(batch)[0, 1]
        gradients = torch.autograd.grad(logit, [kept[0], kept[1]])
    for hook in hooks:
        hook.remove()
    per_member = [(g.mean(dim=(2, 3), keepdim=True) * kept[i].detach()).sum(1, keepdim=True)
                  for i, g in enumerate(gradients)]
    with torch.enable_grad():
        (cam,) = explainer._gradcam(batch, 1, ("layer4",))
    assert torch.allclose(cam, torch.relu(per_member[0] + per_member[1]), atol=1e-6)
    assert not torch.allclose(cam, torch.relu(per_member[0]) + torch.relu(per_member[1]), atol=1e-6)


def test_training_data_with_clean_scans_sees_the_scan_without_its_marks(tmp_path, shared_data):
    from ml.datasets import read_folder
    from ml.screen import clean_scan
    from ml.train import TrainingData

    samples = [s for s in read_folder(shared_data / "busbra") if s.path.name == "bus_0002-l.png"]
    as_is = TrainingData(samples, 64, tmp_path / "as_is.npz")
    cleaned = TrainingData(samples, 64, tmp_path / "clean.npz", clean_scans=True)
    assert cleaned.pixels.shape == as_is.pixels.shape == (1, 64, 64)
    assert clean_scan(load_gray(samples[0].path)).marked_pixels > 0  # this image carries calipers
    assert not np.array_equal(cleaned.pixels.numpy(), as_is.pixels.numpy())
    assert cleaned.masks.numpy().max() == 255  # the lesion is inside the scan area, cut alike


def test_the_evidence_map_is_what_the_logits_average_and_its_loss_wants_it_on_the_lesion():
    from ml.multitask import ClassifierWithLocalisation, evidence_on_lesion_loss
    from ml.resnet import ARCHITECTURES

    torch.manual_seed(0)
    model = ClassifierWithLocalisation(ARCHITECTURES["resnet18"](num_classes=3)).eval()
    outputs = model(torch.randn(2, 1, 96, 96))
    assert outputs.evidence.shape == (2, 3, 3, 3)
    bias = model.classifier.fc.bias
    assert torch.allclose(outputs.evidence.mean((2, 3)) + bias, outputs.logits, atol=1e-5)

    masks = torch.zeros(1, 1, 96, 96)
    masks[..., :32, :32] = 1  # the lesion fills the top-left location of the 3 x 3 map
    on_lesion, off_lesion = torch.zeros(1, 3, 3, 3), torch.zeros(1, 3, 3, 3)
    on_lesion[0, 2, 0, 0] = off_lesion[0, 2, 2, 2] = 5.0  # class 2's evidence, in or away from the lesion
    target = torch.tensor([2])
    assert evidence_on_lesion_loss(on_lesion, target, masks) < 0.1 < evidence_on_lesion_loss(off_lesion, target, masks)
    other_class = torch.tensor([1])  # only the true class's evidence counts
    assert evidence_on_lesion_loss(on_lesion, other_class, masks) == evidence_on_lesion_loss(off_lesion, other_class, masks)

    no_lesion = evidence_on_lesion_loss(outputs.evidence, torch.tensor([0, 1]), torch.zeros(2, 1, 96, 96))
    assert no_lesion.item() == 0.0 and no_lesion.requires_grad  # nothing to point at: no pull either way


def test_multiscale_gradcam_keeps_only_what_layer4_shows_more_sharply(classifier, grays):
    explainer = Explainer.for_classifier(classifier)
    hot = {"layer4": 0, "multiscale": 0}
    for gray in grays:
        for target in ("benign", "malignant"):
            coarse = explainer.explain(gray, target, "gradcam", "layer4").full
            fine = explainer.explain(gray, target, "gradcam", "multiscale").full
            assert fine.shape == coarse.shape == gray.shape and fine.max() == pytest.approx(1.0)
            assert np.all(fine[coarse == 0] == 0)  # the finer blocks only take away from layer4's map
            hot["layer4"] += int((coarse > 0.5).sum())
            hot["multiscale"] += int((fine > 0.5).sum())
    assert hot["multiscale"] < 0.5 * hot["layer4"]


def test_coarse_blocks_weigh_channels_by_their_mean_gradient_and_fine_blocks_keep_each_location(classifier, grays):
    from ml.preprocess import to_batch
    from ml.resnet import member_networks

    explainer = Explainer(member_networks(classifier.network)[0], classifier.spec, classifier.classes)
    batch = to_batch([grays[0]], classifier.spec)
    blocks = ("layer4", "layer2")
    kept = {}
    hooks = [getattr(explainer.network, name).register_forward_hook(
        lambda module, inputs, output, name=name: kept.update({name: output})) for name in blocks]
    with torch.enable_grad():
        logit = explainer.network(batch)[0, 2]
        layer4_gradient, layer2_gradient = torch.autograd.grad(logit, [kept[name] for name in blocks])
    for hook in hooks:
        hook.remove()
    activations = [kept[name].detach() for name in blocks]
    with torch.enable_grad():
        maps = explainer._gradcam(batch, 2, blocks)
    grad_cam = torch.relu((layer4_gradient.mean(dim=(2, 3), keepdim=True) * activations[0]).sum(1, keepdim=True))
    local = torch.relu((layer2_gradient * activations[1]).sum(1, keepdim=True))
    assert torch.allclose(maps[0], grad_cam, atol=1e-6) and torch.allclose(maps[1], local, atol=1e-6)
    averaged = torch.relu((layer2_gradient.mean(dim=(2, 3), keepdim=True) * activations[1]).sum(1, keepdim=True))
    assert not torch.allclose(maps[1], averaged, atol=1e-3)  # the two weightings differ on a real image


def test_output_stride_16_resnet18_is_the_same_network_with_a_finer_last_block():
    from ml.resnet import ARCHITECTURES

    plain, fine = ARCHITECTURES["resnet18"](3), ARCHITECTURES["resnet18_os16"](3)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in fine.state_dict().items()}
    fine.load_state_dict(plain.state_dict())
    blocks = {}
    for name, network in (("plain", plain), ("fine", fine)):
        network.layer4.register_forward_hook(lambda module, inputs, output, name=name: blocks.update({name: output}))
        assert network.eval()(torch.zeros(2, 1, 144, 144)).shape == (2, 3)
    assert blocks["plain"].shape[-2:] == (5, 5) and blocks["fine"].shape[-2:] == (9, 9)
