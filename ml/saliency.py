"""Where the classifier looked: saliency maps from Captum, mapped back onto the image.

Two methods, chosen per request:
* "gradcam" (default): Grad-CAM, robust and class-discriminative. On one block it is as coarse as
  that block: on a plain ResNet18 layer4 is 1/32 of the input, 5 x 5 cells at 144 px, too coarse
  to outline a lesion (9 x 9 for resnet18_os16, see ml.resnet).
  The default layer, "multiscale", multiplies the last block's map by those of the blocks before
  it, down to layer1 (1/4 of the input), each scaled to [0, 1]: a region stays only where it is
  evidence for the class at every scale, so the map keeps layer4's meaning and gains the finer
  blocks' detail (a finer block that shares none of the coarser map's evidence is skipped).
  layer4 and layer3 see the whole lesion, and their map is Grad-CAM's (channels weighted by their
  gradient averaged over the map). layer2 and layer1 see only small patches; averaging their
  gradients over the whole map would discard where the class evidence is, so theirs keep each
  location's own gradient x activation (HiResCAM, Draelos and Carin 2020).
* "integrated_gradients": pixel-level attributions integrated from a black baseline; finer, at
  the cost of `steps` forward and backward passes, and noisier (smoothed here).
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerActivation, LayerGradientXActivation
from scipy import ndimage

from ml.classifier import Classifier
from ml.datasets import Sample, lesion_mask, load_gray
from ml.inference import most_suspicious_window
from ml.preprocess import InputSpec, letterbox_region, to_batch
from ml.resnet import member_networks

SALIENCY_METHODS = ("gradcam", "integrated_gradients")
GRADCAM_LAYERS = ("multiscale", "layer4", "layer3")  # the first is the default
MULTISCALE_BLOCKS = ("layer4", "layer3", "layer2", "layer1")
LOCAL_GRADIENT_BLOCKS = ("layer2", "layer1")  # mapped with each location's own gradient (HiResCAM)
GRID_SIDE = 32  # the long side of the low-resolution map returned as numbers


@dataclass(frozen=True)
class SaliencyMap:
    method: str
    target: str  # the class explained
    full: np.ndarray  # (H, W) float32 in [0, 1], image resolution
    grid: np.ndarray  # low-resolution map over the image, long side GRID_SIDE
    peak: tuple[int, int]  # (x, y) of the maximum, image pixels


class Explainer:
    """Saliency for one classifier network (an ensemble's blocks are its members' together).
    Captum's hooks work on a private copy of the network, so that they never touch a forward pass
    of a concurrent classification; a lock serialises saliency requests on that copy."""

    def __init__(self, network: torch.nn.Module, spec: InputSpec, classes: Sequence[str]) -> None:
        self.network = copy.deepcopy(network).eval()
        self.spec = spec
        self.classes = list(classes)
        self.lock = threading.Lock()

    @classmethod
    def for_classifier(cls, classifier: Classifier) -> "Explainer":
        return cls(classifier.network, classifier.spec, classifier.classes)

    def explain(self, gray: np.ndarray, target: str, method: str = "gradcam", layer: str = GRADCAM_LAYERS[0],
                steps: int = 16) -> SaliencyMap:
        spec = self.spec
        image = to_batch([gray], spec)
        target_index = self.classes.index(target)
        with self.lock:
            read = self._read_region(image)
            batch = image[read]
            with torch.enable_grad():
                attribution = self._attribution(batch, target_index, method, layer, steps)
            on_input = torch.zeros_like(image)
            on_input[read] = attribution.detach()
        return _on_image(on_input[0, 0], gray.shape, spec.size, method, target)

    def _read_region(self, image: torch.Tensor) -> tuple[slice, ...]:
        """Where the network reads its decision: the whole input, or the most suspicious window
        of a network that classifies by windows (ml.inference), which alone is explained."""
        if not self.spec.window:
            return (slice(None),) * 4
        with torch.inference_mode():
            _, [(top, left)] = most_suspicious_window(self.network, image, self.spec)
        return (slice(None), slice(None), slice(top, top + self.spec.window), slice(left, left + self.spec.window))

    def _attribution(self, batch: torch.Tensor, target_index: int, method: str, layer: str,
                     steps: int) -> torch.Tensor:
        spec = self.spec
        if method == "gradcam":
            attribution = None
            for cam in self._gradcam(batch, target_index, MULTISCALE_BLOCKS if layer == "multiscale" else (layer,)):
                cam = F.interpolate(cam, size=batch.shape[-2:], mode="bilinear", align_corners=False)
                cam = cam / cam.max().clamp(min=1e-12)
                refined = cam if attribution is None else attribution * cam
                # A finer block that shares no evidence with the coarser map would erase it.
                attribution = refined if attribution is None or refined.max() > 0 else attribution
        elif method == "integrated_gradients":
            baseline = torch.full_like(batch, -spec.mean / spec.std)  # black image
            attribution = IntegratedGradients(self.network).attribute(
                batch, baselines=baseline, target=target_index, n_steps=steps, internal_batch_size=steps
            ).clamp(min=0)
            attribution = _smooth(attribution, sigma=spec.size / 64)
        else:
            raise ValueError(f"unknown saliency method {method!r}")
        return attribution

    def _gradcam(self, batch: torch.Tensor, target_index: int, blocks: Sequence[str]) -> list[torch.Tensor]:
        """Each block's map, relu(sum over channels of activation x gradient), the gradient averaged
        over the map (Grad-CAM) except in LOCAL_GRADIENT_BLOCKS; from one backward pass: Captum's
        gradients and activations of all the blocks at once."""
        members = member_networks(self.network)
        layers = [getattr(member, block) for member in members for block in blocks]
        gradients = LayerGradientXActivation(self.network, layers, multiply_by_inputs=False).attribute(
            batch, target=target_index
        )
        activations = LayerActivation(self.network, layers).attribute(batch)
        # An ensemble's block is its members' blocks side by side: their channels are summed
        # together, before the relu, as one block's would be.
        sums = [0.0] * len(blocks)
        for i, (gradient, activation) in enumerate(zip(gradients, activations)):
            j = i % len(blocks)  # `layers` runs member by member, each through all the blocks
            weight = gradient if blocks[j] in LOCAL_GRADIENT_BLOCKS else gradient.mean(dim=(2, 3), keepdim=True)
            sums[j] = sums[j] + (weight * activation).sum(dim=1, keepdim=True)
        return [F.relu(total) for total in sums]


def _smooth(attribution: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=attribution.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.conv2d(attribution, kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(out, kernel.view(1, 1, -1, 1), padding=(radius, 0))


def _on_image(letterboxed: torch.Tensor, shape: tuple[int, int], size: int, method: str, target: str) -> SaliencyMap:
    """Crop the letterbox padding away, resize to the image, normalise to [0, 1]."""
    top, left, new_h, new_w = letterbox_region(*shape, size)
    region = letterboxed[top : top + new_h, left : left + new_w][None, None].float()
    full = F.interpolate(region, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    full = np.clip(full, 0, None)
    full = (full / full.max()) if full.max() > 0 else full
    scale = GRID_SIDE / max(shape)
    grid_shape = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
    grid = F.adaptive_avg_pool2d(torch.from_numpy(full)[None, None], grid_shape)[0, 0].numpy()
    y, x = np.unravel_index(int(np.argmax(full)), full.shape)
    return SaliencyMap(method=method, target=target, full=full.astype(np.float32), grid=grid.astype(np.float32),
                       peak=(int(x), int(y)))


def localisation_metrics(explainer: Explainer, samples: Sequence[Sample], method: str = "gradcam",
                         layer: str = GRADCAM_LAYERS[0]) -> dict:
    """Does the saliency point at the lesion? On the samples with an outlined lesion:

    pointing_game: share whose saliency peak falls inside the lesion mask dilated by 5% of the
    image diagonal; energy_in_mask: mean share of the (positive) saliency inside the mask. The map
    explains the sample's true class (benign or malignant), whatever the model predicted.
    """
    hits, energies = [], []
    for sample in samples:
        if sample.label not in ("benign", "malignant") or not (sample.masks or sample.circles):
            continue
        gray = load_gray(sample.path)
        mask = lesion_mask(sample, gray.shape) > 127
        heat = explainer.explain(gray, sample.label, method, layer)
        x, y = heat.peak
        hits.append(bool(ndimage.distance_transform_edt(~mask)[y, x] <= 0.05 * float(np.hypot(*gray.shape))))
        energies.append(float(heat.full[mask].sum() / heat.full.sum()) if heat.full.sum() > 0 else 0.0)
    return {
        "n": len(hits),
        "pointing_game": round(float(np.mean(hits)), 4) if hits else None,
        "energy_in_mask": round(float(np.mean(energies)), 4) if energies else None,
    }
