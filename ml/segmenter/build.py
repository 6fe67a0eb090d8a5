"""Builders for every segmenter the service can run, keyed by name like `sam_model_registry`.

`branet_sam_small` is our own model, trained here; `vit_b`, `vit_l` and `vit_h` are the official
Segment Anything architectures, for checkpoints an operator places in `weights/`. All of them are
`segment_anything.modeling.Sam` instances and run through `SamPredictor`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from ml.cards import read_card, verified_weights_path
from ml.errors import ModelUnavailable
from ml.resnet import member_states
from ml.segmenter.encoder import ENCODER_WIDTHS, ResNetImageEncoder

# Gray images are replicated to three channels; this normalisation matches the classifier's.
GRAY_MEAN, GRAY_STD = [127.5] * 3, [63.75] * 3


def build_branet_sam_small(img_size: int = 256, embed_dim: int = 128,
                           encoder_widths: tuple[int, ...] = ENCODER_WIDTHS) -> Sam:
    """SAM's prompt encoder and mask decoder, narrowed, on a small convolutional encoder."""
    embedding_size = img_size // 16
    return Sam(
        image_encoder=ResNetImageEncoder(img_size=img_size, embed_dim=embed_dim, widths=tuple(encoder_widths)),
        prompt_encoder=PromptEncoder(
            embed_dim=embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=512, num_heads=4),
            transformer_dim=embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=128,
        ),
        pixel_mean=GRAY_MEAN,
        pixel_std=GRAY_STD,
    )


SEGMENTER_BUILDERS = {
    "branet_sam_small": build_branet_sam_small,
    "vit_b": lambda: sam_model_registry["vit_b"](checkpoint=None),
    "vit_l": lambda: sam_model_registry["vit_l"](checkpoint=None),
    "vit_h": lambda: sam_model_registry["vit_h"](checkpoint=None),
}


def load_segmenter(architecture: str, weights_path: Path, build: dict | None = None) -> Sam:
    """Build `architecture` (with its card's `build` arguments) and load a state dict
    (tensors only: never arbitrary pickled objects)."""
    return _built(architecture, build, _state_dict(weights_path), weights_path)


def load_carded_segmenter(weights_dir: Path, name: str, img_size: int | None = None) -> tuple[list[Sam], dict]:
    """The segmenter whose card `name` sits in `weights_dir`, its weights checked against the
    card's sha256: one `Sam` per member (an ensemble's card says how many, `members`; others hold
    one), and that card. `img_size` builds it for another input size than the card's (no weight's
    shape depends on it): for measuring how input size matters, not for serving."""
    card = read_card(weights_dir, name)
    build = card["build"] | ({"img_size": img_size} if img_size else {})
    weights_path = verified_weights_path(weights_dir, card)
    members = member_states(_state_dict(weights_path), card.get("members", 1))
    return [_built(card["architecture"], build, state, weights_path) for state in members], card


def _state_dict(weights_path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(weights_path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as error:
        raise ModelUnavailable(f"segmenter weights {weights_path} do not load: {error}") from None


def _built(architecture: str, build: dict | None, state: dict[str, torch.Tensor], weights_path: Path) -> Sam:
    if architecture not in SEGMENTER_BUILDERS:
        raise ModelUnavailable(f"unknown segmenter architecture {architecture!r}")
    model = SEGMENTER_BUILDERS[architecture](**(build or {}))
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (RuntimeError, KeyError) as error:
        raise ModelUnavailable(f"segmenter weights {weights_path} do not load: {error}") from None
    return model.eval()
