"""Network outputs for a prepared batch, identical in training (out-of-fold predictions) and serving.

A network trained on windows of the image (`ml.train --crop`, `InputSpec.window`) never saw a
whole breast: its global average pooling would average a lesion's evidence with that of every
window of normal tissue around it, and a small lesion would all but vanish. Such a network reads
the image as it was trained, window by window, and the image is what its most suspicious window
is: the window it finds least likely normal, among those that are at least half tissue.
"""
from __future__ import annotations

import torch

from ml.crops import NORMAL, TISSUE_LEVEL
from ml.preprocess import InputSpec

TISSUE_SHARE = 0.5  # a window with less tissue than this (letterbox or background) is not read
WINDOW_BATCH = 256


def tta_logits(network: torch.nn.Module, batch: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Class logits averaged over the image and its mirror image (left/right breasts mirror);
    of the whole image, or of its most suspicious window when `spec.window` is set."""
    with torch.inference_mode():
        both = torch.cat([batch, torch.flip(batch, dims=[3])])
        logits = most_suspicious_window(network, both, spec)[0] if spec.window else network(both)
    return (logits[: len(batch)] + logits[len(batch) :]) / 2


def window_corners(spec: InputSpec) -> list[tuple[int, int]]:
    """(top, left) of every window: spec.window wide, half a window apart, the last flush with
    the far edge."""
    side, stride = spec.window, max(1, spec.window // 2)
    starts = list(range(0, spec.size - side + 1, stride))
    if starts[-1] != spec.size - side:
        starts.append(spec.size - side)
    return [(top, left) for top in starts for left in starts]


def most_suspicious_window(network: torch.nn.Module, batch: torch.Tensor,
                           spec: InputSpec) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(N, classes) logits of each image's most suspicious window, and that window's (top, left).
    An image with no window of enough tissue (a blank image) is read over all its windows."""
    side = spec.window
    corners = window_corners(spec)
    windows = torch.stack([batch[:, :, top : top + side, left : left + side] for top, left in corners], dim=1)
    tissue_value = (TISSUE_LEVEL / 255.0 - spec.mean) / spec.std
    tissue = (windows > tissue_value).float().mean(dim=(2, 3, 4)) >= TISSUE_SHARE  # (N, windows)
    tissue[~tissue.any(dim=1)] = True
    read = windows[tissue]  # only the windows of tissue are classified
    read_logits = torch.cat([network(read[i : i + WINDOW_BATCH]) for i in range(0, len(read), WINDOW_BATCH)])
    logits = read_logits.new_zeros((len(batch), len(corners), read_logits.shape[1]))
    logits[tissue] = read_logits
    p_normal = torch.softmax(logits, dim=2)[:, :, NORMAL].masked_fill(~tissue, 2.0)
    best = p_normal.argmin(dim=1)
    return logits[torch.arange(len(batch)), best], [corners[int(i)] for i in best]
