"""Bytes -> checked grayscale image.

Type is decided by the file's content (magic bytes), never by its name. Orientation from EXIF
is applied, every pixel mode Pillow can open (RGBA, palette, CMYK, 16-bit, ...) ends up as
8-bit grayscale, and sizes are bounded before any pixel is decoded.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ml.errors import ImageTooLarge, InvalidImage, NoImageContent, UnsupportedImageType

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
MIN_CONTENT_RANGE = 8  # grey levels; see require_content
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the image upright.
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    """An upload after decoding: `gray` feeds the models, `png` is what gets stored."""

    format: str  # "png", "jpeg" or "dicom"
    gray: np.ndarray  # (H, W) uint8
    png: bytes  # the oriented image, colour kept, metadata dropped, losslessly re-encoded (DICOM: `gray`)
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing, from a DICOM file

    @property
    def width(self) -> int:
        return int(self.gray.shape[1])

    @property
    def height(self) -> int:
        return int(self.gray.shape[0])


def sniff_format(data: bytes) -> str:
    """Return "png" or "jpeg" from the magic bytes, else raise UnsupportedImageType."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    raise UnsupportedImageType("only PNG and JPEG images, and DICOM files for an analysis, are accepted "
                               "(checked by content)")


def _to_gray(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit 'L'. 16-bit and 32-bit images are rescaled by their range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "L":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("RGB").convert("L")


def _upright(image: Image.Image) -> Image.Image:
    """A copy of the image turned as its EXIF orientation says.

    Unlike `ImageOps.exif_transpose`, this does not re-encode the EXIF block (the stored PNG
    drops metadata anyway): Pillow fails with TypeError, AttributeError or struct.error when it
    re-encodes a block whose tags carry the wrong types, which an upload must not turn into a 500.
    """
    orientation = image.getexif().get(ORIENTATION_TAG, 1)
    method = UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image.copy()


def _storable(image: Image.Image) -> Image.Image:
    """The oriented image in a mode PNG can hold without loss of what the models used."""
    if image.mode in ("L", "RGB", "RGBA", "LA", "I;16"):
        return image
    if image.mode in ("P", "PA"):
        return image.convert("RGBA")
    if image.mode == "CMYK":
        return image.convert("RGB")
    return _to_gray(image)


def decode(data: bytes, modality: str | None = None, frame: int = 0) -> DecodedImage:
    """Decode an uploaded PNG/JPEG into a `DecodedImage`; raise an MLError when refused.

    With a `modality` (an analysis), a DICOM file is accepted too: its `frame` (0-based) is
    decoded and its own Modality checked against `modality` (see ml/dicom.py).
    """
    if not data:
        raise InvalidImage("the file is empty")
    if modality is not None:
        from ml import dicom  # imported here, as ml.dicom builds on this module

        if dicom.is_dicom(data):
            return dicom.decode_dicom(data, modality, frame)
    kind = sniff_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG", "JPEG"]) as opened:
                width, height = opened.size
                if width < 1 or height < 1:
                    raise InvalidImage("the image has no pixels")
                if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
                    raise ImageTooLarge(
                        f"image is {width}x{height}; at most {MAX_SIDE} px a side and "
                        f"{MAX_PIXELS} pixels are accepted"
                    )
                opened.seek(0)  # animated PNG: the first frame
                opened.load()
                oriented = _upright(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLarge(f"decompression bomb refused: {error}") from None
    except (ImageTooLarge, InvalidImage):
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow's own message can name internal objects; say what is wrong in the caller's terms.
        unreadable = isinstance(error, UnidentifiedImageError)
        reason = "its content is not a readable image" if unreadable else "it is truncated or corrupt"
        raise InvalidImage(f"the {kind.upper()} file cannot be decoded: {reason}") from None
    gray = np.asarray(_to_gray(oriented), dtype=np.uint8).copy()
    buffer = io.BytesIO()
    _storable(oriented).save(buffer, format="PNG")
    return DecodedImage(format=kind, gray=gray, png=buffer.getvalue())


def require_content(gray: np.ndarray) -> None:
    """Refuse an image without content: its grey levels, from the 1st to the 99th percentile,
    span fewer than MIN_CONTENT_RANGE levels (every ultrasound and mammogram in ../shared/data
    spans more than 70)."""
    low, high = np.percentile(gray, [1, 99])
    if high - low < MIN_CONTENT_RANGE:
        raise NoImageContent(f"the image shows no content: its grey levels span {high - low:.0f} of 255")


def encode_png(gray: np.ndarray) -> bytes:
    """Encode an (H, W) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
