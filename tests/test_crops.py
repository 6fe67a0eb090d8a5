"""Lesion-centred training crops (ml.crops): where the windows fall and what they are labelled."""
from __future__ import annotations

import torch

from ml.crops import NORMAL, lesion_centred_crops

SIDE = 16
MALIGNANT = 2


def _breast_with_lesion(centre: tuple[int, int] = (40, 20)) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.full((64, 64), 100, dtype=torch.uint8)
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    mask = (((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) <= 16).to(torch.uint8) * 255
    return image, mask


def test_lesion_crops_hold_the_lesion_and_tissue_crops_elsewhere_are_normal():
    image, mask = _breast_with_lesion()
    n = 300
    crops, masks, targets = lesion_centred_crops(image.expand(n, 64, 64), mask.expand(n, 64, 64),
                                                 torch.full((n,), MALIGNANT), SIDE, torch.Generator().manual_seed(0))
    assert crops.shape == masks.shape == (n, SIDE, SIDE)
    on_lesion = targets == MALIGNANT
    assert set(targets.tolist()) == {MALIGNANT, NORMAL}
    assert 0.55 < on_lesion.float().mean() < 0.78  # LESION_SHARE = 2/3
    assert (masks[on_lesion].flatten(1).amax(1) == 255).all()  # every lesion crop shows the lesion
    assert (masks[~on_lesion] == 0).all()  # tissue crops are taken away from it


def test_images_without_a_circle_keep_their_label_and_crop_their_tissue():
    image = torch.zeros((64, 64), dtype=torch.uint8)
    image[:, :24] = 120  # breast on the left, background on the right
    n = 50
    crops, masks, targets = lesion_centred_crops(image.expand(n, 64, 64), torch.zeros(n, 64, 64, dtype=torch.uint8),
                                                 torch.full((n,), NORMAL), SIDE, torch.Generator().manual_seed(1))
    assert (targets == NORMAL).all() and (masks == 0).all()
    assert (crops.flatten(1).float().mean(1) > 0).all()  # centred on tissue, never on background alone


def test_windows_at_the_border_are_moved_inside_the_image():
    image, mask = _breast_with_lesion(centre=(1, 62))
    crops, masks, _ = lesion_centred_crops(image[None], mask[None], torch.tensor([MALIGNANT]), SIDE,
                                           torch.Generator().manual_seed(0))
    assert crops.shape == (1, SIDE, SIDE)
