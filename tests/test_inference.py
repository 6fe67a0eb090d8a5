"""Reading an image by windows (ml.inference): which windows, which one decides, and what is explained."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ml.crops import NORMAL
from ml.inference import most_suspicious_window, tta_logits, window_corners
from ml.preprocess import InputSpec, normalise
from ml.resnet import resnet18_gray
from ml.saliency import Explainer

SPEC = InputSpec(size=48, window=24)
CLASSES = ["normal", "benign", "malignant"]


def darkness_network() -> nn.Module:
    """A network that finds a window less likely normal the darker it is: black background would
    be the most suspicious of all, were it read."""
    linear = nn.Linear(1, 3)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[NORMAL, 0] = 4.0
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()


def breast(lesion: tuple[int, int]) -> torch.Tensor:
    """(48, 48) uint8: tissue (100) in the left 30 columns with a darker lesion (40, still
    tissue) of 8 x 8 at `lesion` (row, column), background (0) on the right."""
    image = torch.zeros((48, 48), dtype=torch.uint8)
    image[:, :30] = 100
    image[lesion[0] : lesion[0] + 8, lesion[1] : lesion[1] + 8] = 40
    return image


def test_windows_cover_the_image_half_a_window_apart_the_last_flush_with_the_edge():
    assert window_corners(SPEC) == [(t, l) for t in (0, 12, 24) for l in (0, 12, 24)]
    starts = sorted({top for top, _ in window_corners(InputSpec(size=50, window=24))})
    assert starts == [0, 12, 24, 26]


def test_the_image_is_its_most_suspicious_window_of_tissue_never_background():
    network = darkness_network()
    batch = normalise(torch.stack([breast((30, 14)), breast((2, 14))]), SPEC)
    logits, corners = most_suspicious_window(network, batch, SPEC)
    # by hand: every window of at least half tissue, the one least likely normal
    for image, chosen, chosen_logits in zip(batch, corners, logits):
        candidates = []
        for top, left in window_corners(SPEC):
            window = image[None, :, top : top + 24, left : left + 24]
            tissue = (window > (30 / 255 - SPEC.mean) / SPEC.std).float().mean()
            if tissue >= 0.5:
                candidates.append((torch.softmax(network(window), 1)[0, NORMAL].item(), (top, left), window))
        p_normal, expected, window = min(candidates, key=lambda c: c[0])
        assert chosen == expected
        torch.testing.assert_close(chosen_logits, network(window)[0])
    # the windows at column 24 (a quarter tissue) are the darkest of all, and never read
    with torch.no_grad():
        p_normal = [torch.softmax(network(batch[:1, :, t : t + 24, l : l + 24]), 1)[0, NORMAL]
                    for t, l in window_corners(SPEC)]
    assert window_corners(SPEC)[int(np.argmin(p_normal))][1] == 24
    assert all(left <= 12 for _, left in corners)
    assert corners[0] in [(24, 12), (12, 12)] and corners[1] == (0, 12)  # where each lesion is


def test_a_blank_image_is_read_over_all_its_windows():
    batch = normalise(torch.zeros((1, 48, 48), dtype=torch.uint8), SPEC)
    logits, corners = most_suspicious_window(darkness_network(), batch, SPEC)
    assert corners[0] in window_corners(SPEC) and torch.isfinite(logits).all()


def test_test_time_mirroring_averages_the_image_and_its_mirror_images_windows():
    network = resnet18_gray(3).eval()
    batch = normalise(torch.stack([breast((30, 4))]), SPEC)
    both = torch.cat([batch, batch.flip(3)])
    with torch.inference_mode():
        each, _ = most_suspicious_window(network, both, SPEC)
    torch.testing.assert_close(tta_logits(network, batch, SPEC), (each[:1] + each[1:]) / 2)
    whole = InputSpec(size=48)
    with torch.inference_mode():
        expected = (network(batch) + network(batch.flip(3))) / 2
    torch.testing.assert_close(tta_logits(network, batch, whole), expected)


def test_saliency_explains_the_window_that_decided_and_nothing_else():
    torch.manual_seed(0)
    network = resnet18_gray(3).eval()
    gray = breast((30, 4)).numpy()
    explainer = Explainer(network, SPEC, CLASSES)
    with torch.inference_mode():
        _, [(top, left)] = most_suspicious_window(network, normalise(torch.from_numpy(gray)[None], SPEC), SPEC)
    outside = np.ones((48, 48), dtype=bool)
    outside[top : top + 24, left : left + 24] = False
    shown = 0
    for method in ("gradcam", "integrated_gradients"):
        for target in CLASSES:  # an untrained network's Grad-CAM is empty for some classes
            saliency = explainer.explain(gray, target, method=method)
            assert saliency.full.shape == (48, 48) and np.abs(saliency.full[outside]).max() < 1e-6
            if saliency.full.max() > 0:
                shown += 1
                assert saliency.full[~outside].max() == 1.0
                assert top <= saliency.peak[1] < top + 24 and left <= saliency.peak[0] < left + 24
    assert shown >= 2
