"""Resumable training's checkpoints (ml.checkpoints)."""
from __future__ import annotations

import pickle

import pytest
import torch

from ml.checkpoints import resume, save_checkpoint

SETTINGS = {"lr": "0.1", "epochs": "3"}


def test_a_checkpoint_resumes_the_state_it_saved_and_only_with_the_same_settings(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, SETTINGS, 1, {"model": model}, {"note": "epoch 1"})
    fresh = torch.nn.Linear(3, 2)
    assert resume(path, SETTINGS, {"model": fresh}) == (1, {"note": "epoch 1"})
    assert torch.equal(fresh.weight, model.weight)
    assert resume(path, {**SETTINGS, "lr": "0.2"}, {"model": torch.nn.Linear(3, 2)}) == (0, {})
    assert resume(tmp_path / "none.pt", SETTINGS, {"model": torch.nn.Linear(3, 2)}) == (0, {})


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    """A run stopped while writing its checkpoint must still resume (torch.save writes as it
    pickles: an object that cannot be pickled stops it part-way, as a killed process would)."""
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, SETTINGS, 1, {"model": model}, {"note": "epoch 1"})
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, SETTINGS, 2, {"model": model}, {"unpicklable": lambda: None})
    fresh = torch.nn.Linear(3, 2)
    assert resume(path, SETTINGS, {"model": fresh}) == (1, {"note": "epoch 1"})
    assert torch.equal(fresh.weight, before)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # nothing half-written left beside it
