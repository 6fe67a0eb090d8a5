"""Lesion-centred training crops, for mammography.

At the served input size a mini-MIAS lesion is a few pixels of a whole breast, too little for a
network trained from scratch on a few hundred images to learn from. Training instead on windows
around each circled lesion (the image's label), and on windows of tissue away from it (labelled
normal), shows the network lesions and normal tissue at the served scale. Held-out and served
images are read as the network was trained, by windows of the crop's side, and an image is what
its most suspicious window is (ml.inference).
"""
from __future__ import annotations

import torch

from ml.datasets import CLASSES

LESION_SHARE = 2 / 3  # of the crops of an image with a circled lesion; the rest are tissue elsewhere
TISSUE_LEVEL = 30  # pixels brighter than this are breast, not background
NORMAL = CLASSES.index("normal")


def _random_point(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return points[torch.randint(len(points), (1,), generator=generator)[0]].float()


def _window(image: torch.Tensor, centre: torch.Tensor, side: int) -> tuple[slice, slice]:
    """The side x side window around `centre` (row, column), moved inside the image."""
    rows, cols = image.shape
    top = int(centre[0].round().clamp(side // 2, rows - side + side // 2)) - side // 2
    left = int(centre[1].round().clamp(side // 2, cols - side + side // 2)) - side // 2
    return slice(top, top + side), slice(left, left + side)


def lesion_centred_crops(
    pixels: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, side: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, S, S) images and lesion masks (uint8) and (N,) class targets -> one side x side crop of
    each, with its mask and target. An image with a circled lesion gives, LESION_SHARE of the time,
    a window around the lesion's centre (shifted by up to a quarter of the side; its own target),
    else a window centred on tissue more than `side` away from it (normal). Any other image gives
    a window centred on its tissue (its own target)."""
    crops, crop_masks, crop_targets = [], [], []
    for image, mask, target in zip(pixels, masks, targets):
        tissue = torch.nonzero(image > TISSUE_LEVEL)
        if len(tissue) == 0:
            tissue = torch.nonzero(torch.ones_like(image))
        lesion = torch.nonzero(mask > 127).float()
        lesion_centre = lesion.mean(dim=0) if len(lesion) else None
        if lesion_centre is not None and torch.rand(1, generator=generator).item() < LESION_SHARE:
            shift = (torch.rand(2, generator=generator) - 0.5) * (side / 2)
            centre = lesion_centre + shift
        elif lesion_centre is not None:
            away = tissue[(tissue.float() - lesion_centre).norm(dim=1) > side]
            centre = _random_point(away if len(away) else tissue, generator)
            target = torch.tensor(NORMAL)
        else:
            centre = _random_point(tissue, generator)
        window = _window(image, centre, side)
        crops.append(image[window])
        crop_masks.append(mask[window])
        crop_targets.append(target)
    return torch.stack(crops), torch.stack(crop_masks), torch.stack(crop_targets)
