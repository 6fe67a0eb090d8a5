"""Ultrasound screenshots: find the scan area, and keep burned-in marks out of the analysis.

A scanner's screen shows the scan beside menus, logos, rulers, grey bars and text; inside the scan
the sonographer's calipers (+, x), measurement lines and burned-in labels sit on the tissue. The
classifier was not meant to read any of them (a model can learn "calipers" as a shortcut for
"lesion"), so the pipeline crops to the scan area and inpaints the marks before classifying.

Plain numpy and scipy.ndimage:

* The scan area is the largest region of ultrasound texture (speckle: a local standard deviation
  above that of flat screen graphics), after an opening that removes everything thinner than a
  few percent of the image (text, rulers, tick marks, menu borders), holes filled (cysts,
  shadows). Its bounding box, trimmed by the texture window's reach, is the crop.
* Marks are bright, thin and small: a white top-hat (brighter than an opening of the
  neighbourhood by a clear margin), bright in absolute terms, in connected pieces that are small,
  mostly strokes at most 2 px wide (an erosion removes most of them), never long tissue lines.
* Inpainting is normalised convolution: each marked pixel gets the Gaussian-weighted mean of the
  unmarked pixels around it, at the smallest scale that has enough of them. OpenCV's Telea
  inpainting would do slightly better on wide marks, but these marks are 1-3 px strokes, and
  opencv-python-headless would add some 60 MB to the image for one function.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TEXTURE_WINDOW = 5  # local standard deviation window, pixels (odd)
TEXTURE_STD = 1.5  # grey levels: flat screen graphics are below, speckle (even deep and dark) above
TEXTURE_DENSITY = 0.5  # share of textured pixels around a pixel of the scan
MIN_AREA_FRACTION = 0.12  # a scan area smaller than this share of the image is not trusted
MARK_CONTRAST = 40.0  # top-hat: how much brighter than the opened neighbourhood
MARK_BRIGHTNESS = 120  # marks are drawn bright
MARK_MAX_SIDE_FRACTION = 0.08  # a mark's height, as a share of the image's long side
MARK_REACH = 5  # pixels: how far a caliper arm or a letter reaches from its stroke


@dataclass(frozen=True)
class Box:
    """Inclusive pixel box: x0 <= x <= x1, y0 <= y <= y1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1 + 1), slice(self.x0, self.x1 + 1)

    def to_dict(self) -> dict[str, int]:
        return {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1}


@dataclass(frozen=True)
class CleanedScan:
    """What the models see: the scan area, with the marks inside it inpainted."""

    area: Box  # the scan area in the original image's pixels
    gray: np.ndarray  # (area.height, area.width) uint8, marks inpainted
    marks: np.ndarray  # (area.height, area.width) bool, the pixels that were inpainted

    @property
    def marked_pixels(self) -> int:
        return int(self.marks.sum())


def _local_std(image: np.ndarray, size: int) -> np.ndarray:
    mean = ndimage.uniform_filter(image, size)
    mean_sq = ndimage.uniform_filter(image * image, size)
    return np.sqrt(np.clip(mean_sq - mean * mean, 0, None))


def find_scan_area(gray: np.ndarray) -> Box:
    """The box of the ultrasound scan inside a screenshot, in the image's pixels; the whole
    image when no clear scan area is found (an image that is all scan, or no scan at all)."""
    height, width = gray.shape
    whole = Box(0, 0, width - 1, height - 1)
    if min(height, width) < 32:
        return whole
    image = gray.astype(np.float32)
    texture = _local_std(image, TEXTURE_WINDOW) > TEXTURE_STD
    # Dark deep tissue is only mostly textured: count the textured share of a neighbourhood.
    texture = ndimage.uniform_filter(texture.astype(np.float32), 2 * TEXTURE_WINDOW - 1) > TEXTURE_DENSITY
    # Remove text, rulers, ticks and borders: anything thinner than a few percent of the image.
    side = max(9, round(0.04 * min(height, width))) | 1
    opened = ndimage.binary_opening(texture, structure=np.ones((side, side), bool))
    labels, count = ndimage.label(opened)
    if count == 0:
        return whole
    sizes = ndimage.sum_labels(opened, labels, index=np.arange(1, count + 1))
    biggest = labels == (int(np.argmax(sizes)) + 1)
    if biggest.sum() < MIN_AREA_FRACTION * height * width:
        return whole
    biggest = ndimage.binary_fill_holes(biggest)
    rows, cols = np.flatnonzero(biggest.any(axis=1)), np.flatnonzero(biggest.any(axis=0))
    reach = TEXTURE_WINDOW // 2  # the texture window sees this far past the scan's edge
    y0 = rows[0] + reach if rows[0] > 0 else 0
    y1 = rows[-1] - reach if rows[-1] < height - 1 else height - 1
    x0 = cols[0] + reach if cols[0] > 0 else 0
    x1 = cols[-1] - reach if cols[-1] < width - 1 else width - 1
    return Box(int(x0), int(y0), int(x1), int(y1))


def _vertical_strokes(image: np.ndarray, reach: int = 3, contrast: float = 40.0, run: int = 5) -> np.ndarray:
    """Pixels of thin upright strokes: brighter by `contrast` than the pixels `reach` to their left
    and right, in vertical runs of at least `run` pixels (a one-pixel break, where a caliper's
    arms cross, is bridged)."""
    left = np.empty_like(image)
    right = np.empty_like(image)
    left[:, reach:], left[:, :reach] = image[:, :-reach], image[:, :1]
    right[:, :-reach], right[:, -reach:] = image[:, reach:], image[:, -1:]
    ridge = (image - left > contrast) & (image - right > contrast)
    ridge = ndimage.binary_closing(ridge, structure=np.ones((3, 1), bool))
    return ndimage.binary_opening(ridge, structure=np.ones((run, 1), bool))


def find_marks(gray: np.ndarray) -> np.ndarray:
    """(H, W) bool: calipers, measurement marks and burned-in text inside a scan. A mark holds a
    thin upright stroke much brighter than the pixels beside it (a caliper's +, a letter's stem),
    which speckle and tissue interfaces, running sideways, do not; the mark is the bright top-hat
    around such strokes, in pieces no larger than a caliper or a word. Grown by one pixel to
    cover their halo."""
    height, width = gray.shape
    if min(height, width) < 8:
        return np.zeros(gray.shape, bool)
    image = gray.astype(np.float32)
    strokes = _vertical_strokes(image, contrast=MARK_CONTRAST) & (gray >= MARK_BRIGHTNESS)
    if not strokes.any():
        return np.zeros(gray.shape, bool)
    contrast = image - ndimage.grey_opening(image, size=(7, 7))  # white top-hat
    near = ndimage.binary_dilation(strokes, structure=np.ones((2 * MARK_REACH + 1, 2 * MARK_REACH + 1), bool))
    marks = near & (contrast > MARK_CONTRAST / 2) | strokes
    labels, count = ndimage.label(marks, structure=np.ones((3, 3), bool))
    max_side = max(12, round(MARK_MAX_SIDE_FRACTION * max(height, width)))
    for index, piece in enumerate(ndimage.find_objects(labels), start=1):
        piece_h = piece[0].stop - piece[0].start
        if piece_h > max_side:  # a tall bright structure: tissue, not a mark
            marks[piece] &= labels[piece] != index
    return ndimage.binary_dilation(marks, structure=np.ones((3, 3), bool))


def inpaint(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the masked pixels from their unmasked surroundings (normalised convolution, finest
    scale first); the rest of the image is untouched."""
    if not mask.any():
        return gray.copy()
    image = gray.astype(np.float32)
    known = (~mask).astype(np.float32)
    result = image.copy()
    todo = mask.copy()
    for sigma in (1.5, 3.0, 6.0, 12.0, 24.0):
        weight = ndimage.gaussian_filter(known, sigma)
        value = ndimage.gaussian_filter(image * known, sigma)
        ready = todo & (weight > 0.2)
        result[ready] = value[ready] / weight[ready]
        todo &= ~ready
        if not todo.any():
            break
    if todo.any():  # nothing known anywhere near: the mean of what is known
        result[todo] = image[~mask].mean() if (~mask).any() else 0.0
    return np.clip(result.round(), 0, 255).astype(np.uint8)


def clean_scan(gray: np.ndarray, crop: bool = True) -> CleanedScan:
    """The scan area of a screenshot (the whole image unless `crop`) with its marks inpainted."""
    area = find_scan_area(gray) if crop else Box(0, 0, gray.shape[1] - 1, gray.shape[0] - 1)
    scan = gray[area.slices()]
    marks = find_marks(scan)
    return CleanedScan(area=area, gray=inpaint(scan, marks), marks=marks)
