"""Self-supervised pretraining (ml.pretrain) and ml.train starting from its backbone."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from api.config import REPO_ROOT

from ml.pretrain import contrastive_loss, random_views
from test_ml import mias_subset, run_module, ultrasound_subset


def test_the_contrastive_loss_is_low_when_each_view_finds_its_twin_and_high_when_not():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 16, generator=generator)
    twins = torch.cat([images, images + 0.01 * torch.randn(8, 16, generator=generator)])
    strangers = torch.cat([images, torch.randn(8, 16, generator=generator)])
    assert contrastive_loss(twins, temperature=0.2) < 0.5
    assert contrastive_loss(strangers, temperature=0.2) > 1.5


def test_random_views_are_other_crops_of_the_image_in_range():
    generator = torch.Generator().manual_seed(0)
    images = torch.linspace(0, 1, 64).repeat(2, 1, 64, 1)  # a ramp from left to right
    first, second = random_views(images, 32, generator), random_views(images, 32, generator)
    assert first.shape == (2, 1, 32, 32) and first.min() >= 0 and first.max() <= 1
    assert not torch.allclose(first, second, atol=0.05)


def test_pretraining_writes_a_backbone_that_ml_train_starts_from(tmp_path, shared_data):
    data_root = mias_subset(tmp_path, shared_data)
    pretrain = ["ml.pretrain", "--modality", "mammography", "--data-root", str(data_root), "--epochs", "1",
                "--size", "40", "--view-size", "32", "--batch-size", "8", "--run-dir", str(tmp_path / "ssl"),
                "--weights-dir", str(tmp_path / "ssl")]
    first = run_module(*pretrain)
    assert first.returncode == 0, first.stderr
    assert "epoch 1 contrastive loss" in (tmp_path / "ssl" / "train.log").read_text()
    weights = tmp_path / "ssl" / "branet-mg-ssl.pt"
    card = json.loads((tmp_path / "ssl" / "branet-mg-ssl.json").read_text())
    assert card["task"] == "self-supervised" and "classes" not in card and card["images"] == {"mias": 40}
    assert card["training"]["command"].startswith("python -m ml.pretrain --modality mammography")
    backbone = torch.load(weights, weights_only=True)
    assert "conv1.weight" in backbone and not any(key.startswith("fc.") for key in backbone)

    again = run_module(*pretrain)  # every epoch is checkpointed: nothing is left to train
    assert again.returncode == 0 and "pretrain epoch" not in again.stderr
    assert torch.equal(torch.load(weights, weights_only=True)["conv1.weight"], backbone["conv1.weight"])

    # a learning rate too small to move a weight: what the network holds afterwards is where it started
    train = run_module("ml.train", "--modality", "mammography", "--data-root", str(data_root), "--folds", "2",
                       "--epochs", "1", "--size", "32", "--batch-size", "8", "--lr", "1e-12", "--init", str(weights),
                       "--run-dir", str(tmp_path / "child"), "--weights-dir", str(tmp_path / "child"))
    assert train.returncode == 0, train.stderr
    trained = torch.load(tmp_path / "child" / "full" / "checkpoint.pt", weights_only=False)["model"]
    for key in ("conv1.weight", "layer4.1.conv2.weight", "bn1.weight"):
        torch.testing.assert_close(trained[f"classifier.{key}"], backbone[key].float(), atol=2e-3, rtol=0)
    assert trained["classifier.fc.weight"].shape == (3, 512)  # the last layer: a random start of its own
    child_card = json.loads((tmp_path / "child" / "branet-mg-resnet18.json").read_text())
    assert child_card["training"]["initialised_from"]["sha256"] == card["sha256"]
    assert "self-supervised" in child_card["training"]["initialised_from"]["trained"]


@pytest.mark.parametrize("option, message", [
    (["--sets", "busi"], "--sets busi: mammography has mias"),
    (["--batch-size", "1"], "--batch-size must be at least 2"),
])
def test_pretraining_refuses_options_it_cannot_honour(tmp_path, option, message):
    refused = run_module("ml.pretrain", "--modality", "mammography", "--run-dir", str(tmp_path / "ssl"), *option)
    assert refused.returncode == 2 and message in refused.stderr
    assert not (tmp_path / "ssl").exists()


def test_the_linear_probe_fits_on_one_set_and_reads_the_other(tmp_path, shared_data):
    data_root, busi_rows = ultrasound_subset(tmp_path, shared_data)
    pretrained = run_module("ml.pretrain", "--modality", "ultrasound", "--sets", "busbra", "--data-root", str(data_root),
                            "--epochs", "1", "--size", "40", "--view-size", "32", "--batch-size", "8",
                            "--run-dir", str(tmp_path / "ssl"), "--weights-dir", str(tmp_path / "ssl"))
    assert pretrained.returncode == 0, pretrained.stderr
    assert json.loads((tmp_path / "ssl" / "branet-us-ssl.json").read_text())["images"] == {"busbra": 24}

    def probe(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "benchmarks/linear_probe.py", "--train-set", "busbra", "--size", "32",
                               "--data-root", str(data_root), "--cache", str(tmp_path / "cache"), *options],
                              cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "."},
                              timeout=300)

    busi_lesions = sum(row["label"] != "normal" and row["label_conflict"] != "1" for row in busi_rows)
    readings = {}
    for options in ([str(tmp_path / "ssl" / "branet-us-ssl.pt")], ["--random-start"]):
        result = probe(*options)
        assert result.returncode == 0, result.stderr
        readings[options[0]] = measured = json.loads(result.stdout)
        assert measured["fitted_images"] == 24 and measured["read_images"] == busi_lesions
        low, high = measured["ci95"]
        assert 0 <= low <= high <= 1 and 0 <= measured["auc_malignant_vs_benign"] <= 1
    assert readings["--random-start"]["backbone"] == "random start, seed 0"
    refused = probe()
    assert refused.returncode == 2 and "give a backbone's weights or --random-start" in refused.stderr
