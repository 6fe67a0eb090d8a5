"""Network outputs for a prepared batch, identical in training (out-of-fold predictions) and serving."""
from __future__ import annotations

import torch


def tta_logits(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Class logits averaged over the image and its mirror image (left/right breasts mirror)."""
    with torch.inference_mode():
        both = network(torch.cat([batch, torch.flip(batch, dims=[3])]))
    return (both[: len(batch)] + both[len(batch) :]) / 2
