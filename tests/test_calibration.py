"""ml.calibration: temperature scaling with a bias per class, fitted on held-out logits."""
from __future__ import annotations

import numpy as np
import pytest

from ml.calibration import Calibrator, expected_calibration_error, fit_calibrator, softmax


def drawn(rng: np.random.Generator, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """True logits, and targets drawn from their softmax: calibrated by construction."""
    true_logits = rng.normal(scale=2.0, size=(n, 3))
    targets = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    return true_logits, targets


def test_the_biases_undo_a_shift_that_a_temperature_cannot():
    true_logits, targets = drawn(np.random.default_rng(0))
    shift = np.array([0.0, 1.5, 2.0])
    seen = true_logits / 2 + shift  # under-confident and shifted towards the last two classes
    calibrator = fit_calibrator(seen, targets)
    assert calibrator.temperature == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(calibrator.bias, -2 * shift, atol=0.25)
    temperature_alone = Calibrator(calibrator.temperature)
    last = targets == 2
    assert expected_calibration_error(last, temperature_alone.probabilities(seen)[:, 2]) > 0.1
    assert expected_calibration_error(last, calibrator.probabilities(seen)[:, 2]) < 0.03


def test_without_every_class_only_the_temperature_is_fitted_and_it_is_the_best_one():
    true_logits, targets = drawn(np.random.default_rng(1))
    lesions = targets > 0  # lesion crops: no normal among them
    logits, targets = true_logits[lesions] * 3, targets[lesions]
    calibrator = fit_calibrator(logits, targets)
    assert calibrator.bias == () and calibrator.method == "temperature scaling"
    nll = lambda t: -np.log(softmax(logits / t)[np.arange(len(targets)), targets]).mean()
    assert calibrator.temperature == pytest.approx(3.0, rel=0.1)
    assert nll(calibrator.temperature) < min(nll(calibrator.temperature * 1.2), nll(calibrator.temperature / 1.2))


def test_a_card_section_round_trips_and_one_without_biases_is_temperature_scaling():
    logits = np.random.default_rng(2).normal(size=(5, 3))
    calibrator = Calibrator(1.5, (0.0, -1.25, 0.5))
    section = {"method": calibrator.method, **calibrator.to_dict()}
    assert section == {"method": "temperature scaling with a bias per class", "temperature": 1.5,
                       "class_bias": [0.0, -1.25, 0.5]}
    assert Calibrator.from_dict(section) == calibrator
    np.testing.assert_allclose(Calibrator.from_dict({"temperature": 2.0}).probabilities(logits), softmax(logits / 2.0))
    assert not np.allclose(calibrator.probabilities(logits), softmax(logits / 1.5))


def test_the_temperature_stays_within_its_bounds_for_logits_that_say_nothing():
    targets = np.array([0, 1, 2] * 50)
    logits = np.tile([[0.0, 0.0, 0.01]], (150, 1))
    calibrator = fit_calibrator(logits, targets)
    assert 0.05 <= calibrator.temperature <= 20.0 and np.isfinite(calibrator.bias).all()
