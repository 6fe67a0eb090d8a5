"""Decoding by content: every pixel mode becomes 8-bit grayscale; hostile files are refused."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import png_bytes
from ml.errors import ImageTooLarge, InvalidImage, UnsupportedImageType
from ml.images import decode

GRADIENT = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48 x 64


def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def test_grayscale_png_is_read_exactly():
    decoded = decode(png_bytes(GRADIENT))
    assert decoded.format == "png"
    assert np.array_equal(decoded.gray, GRADIENT)


def test_rgb_jpeg_becomes_grayscale():
    rgb = Image.fromarray(np.stack([GRADIENT] * 3, axis=-1))
    decoded = decode(encoded(rgb, "JPEG", quality=95))
    assert decoded.format == "jpeg" and decoded.gray.shape == GRADIENT.shape
    assert np.abs(decoded.gray.astype(int) - GRADIENT).max() <= 6


def test_cmyk_jpeg_is_handled():
    cmyk = Image.fromarray(np.stack([GRADIENT] * 3, axis=-1)).convert("CMYK")
    assert decode(encoded(cmyk, "JPEG")).gray.shape == GRADIENT.shape


def test_rgba_is_composited_on_black():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[:4, ..., 3] = 255  # top half opaque, bottom transparent
    gray = decode(png_bytes(rgba, mode="RGBA")).gray
    assert gray[0, 0] == 200 and gray[7, 0] == 0


def test_palette_png_is_handled():
    palette = Image.fromarray(GRADIENT).convert("P")
    assert decode(encoded(palette, "PNG")).gray.shape == GRADIENT.shape


def test_sixteen_bit_png_is_rescaled_to_eight_bits():
    deep = (GRADIENT.astype(np.uint16) * 200)
    gray = decode(encoded(Image.fromarray(deep), "PNG")).gray
    assert gray.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255


def test_exif_orientation_is_applied():
    tall = Image.fromarray(np.zeros((40, 20), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode(encoded(tall, "JPEG", exif=exif.tobytes()))
    assert decoded.gray.shape == (20, 40)


def test_stored_png_keeps_colour():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    with Image.open(io.BytesIO(decode(png_bytes(rgb)).png)) as stored:
        assert stored.mode == "RGB" and stored.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("data", [b"GIF89a" + b"\0" * 100, b"BM" + b"\0" * 100, b"hello world", b"%PDF-1.4"])
def test_other_types_are_refused_by_content(data):
    with pytest.raises(UnsupportedImageType):
        decode(data)


def test_empty_file_is_invalid():
    with pytest.raises(InvalidImage):
        decode(b"")


@pytest.mark.parametrize("cut", [8, 40, 100])
def test_truncated_png_is_invalid(cut):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    with pytest.raises(InvalidImage):
        decode(png_bytes(noise)[:cut])


def test_truncated_jpeg_is_invalid():
    data = encoded(Image.fromarray(GRADIENT), "JPEG")
    with pytest.raises(InvalidImage):
        decode(data[: len(data) // 3])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions (an IHDR and one tiny compressed IDAT)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(100_000, 10), (20_000, 20_000), (7000, 7000)])
def test_absurd_dimensions_and_bombs_are_refused_before_decoding(size):
    with pytest.raises(ImageTooLarge):
        decode(_png_header_only(*size))


def test_real_decompression_bomb_is_refused():
    bomb = png_bytes(np.zeros((8000, 6000), dtype=np.uint8))  # 48 Mpx in a small file
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLarge):
        decode(bomb)


def _exif_with_mistyped_tag(tag: int, kind: int, value: bytes) -> bytes:
    """A little-endian EXIF block: orientation 6 (turn 90 degrees) and one tag of the wrong type.

    `value` is the tag's 4-byte value field (for an 8-byte RATIONAL, it is stored after the IFD).
    """
    entries = [(0x0112, 3, 1, struct.pack("<HH", 6, 0))]
    data_area = b""
    if kind == 5:  # RATIONAL: an offset to two LONGs after the IFD
        data_offset = 8 + 2 + 12 * 2 + 4
        entries.append((tag, kind, 1, struct.pack("<I", data_offset)))
        data_area = value
    else:
        entries.append((tag, kind, len(value.rstrip(b"\0")) or 1, value))
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", t, k, n) + v for t, k, n, v in entries)
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data_area


MISTYPED_EXIF = {
    "make-as-rational": (0x010F, 5, struct.pack("<II", 1, 2)),  # Make is ASCII
    "resolution-unit-as-ascii": (0x0128, 2, b"ab\0\0"),  # ResolutionUnit is SHORT
    "x-resolution-as-ascii": (0x011A, 2, b"72\0\0"),  # XResolution is RATIONAL
}


@pytest.mark.parametrize("name", sorted(MISTYPED_EXIF))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_with_mistyped_tags_is_still_oriented(fmt, name):
    """Pillow's exif_transpose re-encodes the EXIF block and raised (a 500) on such tags."""
    tall = Image.fromarray(np.zeros((40, 20), dtype=np.uint8))
    decoded = decode(encoded(tall, fmt, exif=_exif_with_mistyped_tag(*MISTYPED_EXIF[name])))
    assert decoded.gray.shape == (20, 40)
    with Image.open(io.BytesIO(decoded.png)) as stored:
        assert stored.size == (40, 20) and "exif" not in stored.info
