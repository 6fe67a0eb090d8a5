"""Hostile uploads: a corpus of malformed, exotic and malicious images built here, in code.

Every file goes to `POST /v1/analyses` (and a sample to the app's route). Each must be either
analysed (201, a well-formed analysis, one more record) or refused with a 4xx JSON error that
stores nothing; never a 5xx. Where the right answer is certain (not an image: 415; too many
pixels: 413; a valid image in an unusual mode: 201) the test asks for exactly that answer.
"""
from __future__ import annotations

import functools
import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import record_count, unlimited_single_thread_app, upload

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = {"normal", "benign", "malignant"}
LEGACY_INFO = {"NO FILE ALLOWED", "FILE TOO LARGE", "NO DATA UPLOAD", "INVALID REQUEST", "NO IMAGE CONTENT"}

OK = frozenset({201})
NOT_AN_IMAGE = frozenset({415})
INVALID = frozenset({400})
TOO_LARGE = frozenset({413})
BLANK = frozenset({422})  # decodes, but one flat grey (or a pixel or two): no content to analyse
EITHER = None  # analysed (201) or refused (any 4xx): what Pillow can recover is its business


# ----------------------------------------------------------------------------------------------
# Builders: PNG chunk by chunk, JPEG segment by segment, and Pillow for the ordinary cases.

def chunk(kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc & 0xFFFFFFFF)


def ihdr(width: int, height: int, depth: int = 8, colour: int = 0, interlace: int = 0,
         compression: int = 0, filtering: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, compression, filtering, interlace))


IEND = chunk(b"IEND", b"")


def zero_idat(width: int, height: int, bits_per_pixel: int) -> bytes:
    """An IDAT holding `height` all-zero scanlines, compressed as a stream (never all in memory)."""
    row = b"\0" * (1 + (width * bits_per_pixel + 7) // 8)
    rows_per_step = max(1, 1_000_000 // len(row))
    compressor = zlib.compressobj(9)
    parts = []
    for start in range(0, height, rows_per_step):
        parts.append(compressor.compress(row * min(rows_per_step, height - start)))
    parts.append(compressor.flush())
    return chunk(b"IDAT", b"".join(parts))


def raw_png(width: int, height: int, depth: int, colour: int, rows: bytes, *extra_before_idat: bytes) -> bytes:
    return PNG_MAGIC + ihdr(width, height, depth, colour) + b"".join(extra_before_idat) + \
        chunk(b"IDAT", zlib.compress(rows)) + IEND


def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def noise(height: int, width: int, channels: int = 0, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@functools.cache
def base_png() -> bytes:
    return encoded(Image.fromarray(noise(64, 64)), "PNG")


@functools.cache
def base_rgb_png() -> bytes:
    return encoded(Image.fromarray(noise(48, 40, 3, seed=1)), "PNG")


@functools.cache
def base_jpeg() -> bytes:
    return encoded(Image.fromarray(noise(64, 64, 3, seed=2)), "JPEG", quality=90)


@functools.cache
def base_progressive_jpeg() -> bytes:
    return encoded(Image.fromarray(noise(64, 64, 3, seed=3)), "JPEG", quality=90, progressive=True)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, payload) of every chunk of a well-formed PNG."""
    chunks, at = [], len(PNG_MAGIC)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def rebuild_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return PNG_MAGIC + b"".join(chunk(kind, payload) for kind, payload in chunks)


def with_png_chunk(data: bytes, kind: bytes, payload: bytes, before: bytes = b"IDAT") -> bytes:
    """`data` with one more chunk inserted before the first `before` chunk."""
    chunks = png_chunks(data)
    at = next(i for i, (k, _) in enumerate(chunks) if k == before)
    return rebuild_png(chunks[:at] + [(kind, payload)] + chunks[at:])


def with_bad_crc(data: bytes, kind: bytes) -> bytes:
    """`data` with the CRC of its first `kind` chunk flipped."""
    at = data.index(kind) - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    crc_at = at + 8 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at : crc_at + 4]) + data[crc_at + 4 :]


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def after_soi(data: bytes, *segments: bytes) -> bytes:
    return data[:2] + b"".join(segments) + data[2:]


def with_sof_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose start-of-frame declares other dimensions than its scan holds."""
    at = next(data.index(bytes([0xFF, m])) for m in (0xC0, 0xC2) if bytes([0xFF, m]) in data)
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def without_segments(data: bytes, marker: int) -> bytes:
    """A JPEG with every segment of one marker kind (e.g. its Huffman tables) removed."""
    out, at = bytearray(data[:2]), 2
    while at < len(data):
        kind = data[at + 1]
        if kind == 0xDA:  # start of scan: the rest is entropy-coded data
            out += data[at:]
            break
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if kind != marker:
            out += data[at : at + 2 + length]
        at += 2 + length
    return bytes(out)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def mistyped_exif(tag: int, kind: int, value: bytes) -> bytes:
    """EXIF (little-endian) with orientation 6 and one known tag stored with another type."""
    if kind == 5:  # RATIONAL: 8 bytes after the IFD, at offset 8 + 2 + 2 * 12 + 4
        field, data_area = struct.pack("<I", 38), value
    else:
        field, data_area = value, b""
    ifd = struct.pack("<HHHIHH", 2, 0x0112, 3, 1, 6, 0) + struct.pack("<HHI", tag, kind, 1 if kind == 5 else 3) + field
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data_area


def flipped_bytes(data: bytes, seed: int, count: int) -> bytes:
    """`data` with `count` random bytes (after the magic) replaced: bit rot, or a naive fuzzer."""
    rng = np.random.default_rng(seed)
    mutated = bytearray(data)
    for at in rng.integers(8, len(data), count):
        mutated[at] = int(rng.integers(0, 256))
    return bytes(mutated)


def interlaced_gray(width: int, height: int, value: int) -> bytes:
    """An Adam7-interlaced 8-bit grayscale PNG of one grey level, its seven passes built by hand."""
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        pass_width = max(0, math.ceil((width - x0) / dx))
        pass_height = max(0, math.ceil((height - y0) / dy))
        if pass_width and pass_height:
            raw += (b"\0" + bytes([value]) * pass_width) * pass_height
    return PNG_MAGIC + ihdr(width, height, interlace=1) + chunk(b"IDAT", zlib.compress(bytes(raw))) + IEND


# Orientation (EXIF tag 0x0112) -> the numpy transform that displays the stored pixels upright.
ORIENT = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, 1),
}
# A picture no orientation maps to itself: a bright block in one corner, a grey bar along one side.
MARKED = np.zeros((24, 40), dtype=np.uint8)
MARKED[:10, :16] = 255
MARKED[-4:, :] = 128


# ----------------------------------------------------------------------------------------------
# The corpus.

@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[], bytes]
    expect: frozenset | None = EITHER
    upright: np.ndarray | None = None  # when set: the stored original must show these pixels
    tolerance: float = 0.0  # mean absolute difference allowed against `upright` (JPEG is lossy)


def corpus() -> list[Hostile]:
    cases: list[Hostile] = []

    def add(name: str, build: Callable[[], bytes], expect=EITHER, **kwargs) -> None:
        cases.append(Hostile(name, build, expect, **kwargs))

    # Truncations at many cut points: inside the signature, IHDR, IDAT, before IEND.
    for cut in (1, 4, 7, 8, 9, 12, 16, 20, 25, 29, 33, 37, 41, 45, 50, 64, 100, 256, 1000, 2048, 3000):
        add(f"png-truncated-at-{cut}", lambda cut=cut: base_png()[:cut],
            NOT_AN_IMAGE if cut < 8 else INVALID)
    for back in (1, 4, 8, 12, 13, 20):
        add(f"png-truncated-{back}-from-end", lambda back=back: base_png()[:-back])
    for cut in (3, 4, 6, 10, 20, 40, 80, 120, 160, 200, 300, 400, 600, 800, 1000, 1500, 2000, 3000, 4000):
        add(f"jpeg-truncated-at-{cut}", lambda cut=cut: base_jpeg()[:cut], INVALID)
    for back in (1, 2, 10, 100):
        add(f"jpeg-truncated-{back}-from-end", lambda back=back: base_jpeg()[:-back])
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        add(f"progressive-jpeg-truncated-at-{int(fraction * 100)}pct",
            lambda f=fraction: base_progressive_jpeg()[: int(len(base_progressive_jpeg()) * f)])

    # Not a PNG or JPEG by content, whatever the name says.
    for name, data in {
        "gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
        "bmp": b"BM" + b"\0" * 60,
        "tiff-le": b"II*\x00" + b"\0" * 60,
        "tiff-be": b"MM\x00*" + b"\0" * 60,
        "webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\0" * 40,
        "pdf": b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF",
        "zip": b"PK\x03\x04" + b"\0" * 60,
        "gzip-of-png": b"\x1f\x8b\x08\x00" + b"\0" * 60,
        "html": b"<!doctype html><html><script>alert(1)</script></html>",
        "svg": b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
        "elf": b"\x7fELF\x02\x01\x01" + b"\0" * 60,
        "utf8-text": "échographie mammaire".encode(),
        "one-byte": b"\x89",
        "png-magic-one-byte-wrong": PNG_MAGIC[:7] + b"\x0b",
        "png-magic-lowercase": b"\x89png\r\n\x1a\n",
        "jpeg-magic-two-bytes": b"\xff\xd8",
        "jpeg-jfif-without-soi": b"\xff\xe0\x00\x10JFIF\x00",
        "nul-bytes": b"\0" * 1024,
        "ff-bytes": b"\xff" * 1024,
    }.items():
        add(f"not-image-{name}", lambda data=data: data, NOT_AN_IMAGE)
    # A DICOM preamble and magic with no data set behind them: not an image (415), or, where DICOM
    # uploads are accepted, a DICOM file that cannot be read (400).
    add("dicom-magic-without-data-set", lambda: b"\0" * 128 + b"DICM" + b"\0" * 60, NOT_AN_IMAGE | INVALID)
    add("not-image-utf16-bom-then-png", lambda: b"\xff\xfe" + base_png(), NOT_AN_IMAGE)
    add("not-image-newline-then-png", lambda: b"\n" + base_png(), NOT_AN_IMAGE)
    add("not-image-gif-header-then-png", lambda: b"GIF89a" + base_png(), NOT_AN_IMAGE)
    add("not-image-zip-of-png", lambda: _zip_holding(base_png()), NOT_AN_IMAGE)
    add("not-image-random-4k", lambda: b"\x00" + noise(1, 4096, seed=9).tobytes(), NOT_AN_IMAGE)

    # Empty and next to empty.
    add("empty", lambda: b"", INVALID)
    add("png-magic-only", lambda: PNG_MAGIC, INVALID)
    add("jpeg-magic-only", lambda: b"\xff\xd8\xff", INVALID)
    add("jpeg-soi-eoi", lambda: b"\xff\xd8\xff\xd9", INVALID)
    add("png-ihdr-iend-no-idat", lambda: PNG_MAGIC + ihdr(8, 8) + IEND, INVALID)
    add("png-zero-length-idat", lambda: PNG_MAGIC + ihdr(8, 8) + chunk(b"IDAT", b"") + IEND, INVALID)

    # Headers declaring absurd or impossible dimensions (the data behind them is tiny).
    tiny = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    for width, height, expect in (
        (0, 0, INVALID), (0, 16, INVALID), (16, 0, INVALID),
        (100_000, 10, TOO_LARGE), (10, 100_000, TOO_LARGE), (8193, 1, TOO_LARGE),
        (20_000, 20_000, TOO_LARGE), (6400, 6400, TOO_LARGE),
        (2**31 - 1, 1, TOO_LARGE), (2**31, 2**31, EITHER), (2**32 - 1, 2**32 - 1, EITHER),
    ):
        add(f"png-header-{width}x{height}",
            lambda w=width, h=height: PNG_MAGIC + ihdr(w, h) + tiny + IEND, expect)
    for width, height, expect in ((65535, 65535, TOO_LARGE), (60000, 10, TOO_LARGE), (10, 9000, TOO_LARGE),
                                  (7000, 7000, TOO_LARGE), (0, 64, EITHER), (64, 0, EITHER)):
        add(f"jpeg-header-{width}x{height}", lambda w=width, h=height: with_sof_size(base_jpeg(), w, h), expect)
    add("progressive-jpeg-header-65535x65535",
        lambda: with_sof_size(base_progressive_jpeg(), 65535, 65535), TOO_LARGE)

    # Real decompression bombs: valid files, every scanline present, that inflate enormously.
    add("bomb-png-gray-8000x6000", lambda: PNG_MAGIC + ihdr(8000, 6000) + zero_idat(8000, 6000, 8) + IEND,
        TOO_LARGE)
    add("bomb-png-1bit-8192x8192", lambda: PNG_MAGIC + ihdr(8192, 8192, 1, 0) + zero_idat(8192, 8192, 1) + IEND,
        TOO_LARGE)
    add("bomb-png-1bit-16384x16384-over-pillow-limit",
        lambda: PNG_MAGIC + ihdr(16384, 16384, 1, 0) + zero_idat(16384, 16384, 1) + IEND, TOO_LARGE)
    add("bomb-png-16bit-6400x6400", lambda: PNG_MAGIC + ihdr(6400, 6400, 16, 0) + zero_idat(6400, 6400, 16) + IEND,
        TOO_LARGE)
    add("bomb-jpeg-gray-6500x6500", lambda: encoded(Image.new("L", (6500, 6500)), "JPEG", quality=10), TOO_LARGE)
    add("large-but-allowed-png-6000x6000", lambda: PNG_MAGIC + ihdr(6000, 6000) + zero_idat(6000, 6000, 8) + IEND, BLANK)
    add("bomb-ztxt-chunk-64mb",
        lambda: with_png_chunk(base_png(), b"zTXt", b"note\0\0" + zlib.compress(b"A" * 64_000_000, 9)))
    add("bomb-iccp-chunk-64mb",
        lambda: with_png_chunk(base_png(), b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * 64_000_000, 9)))
    add("bomb-idat-more-data-than-declared",
        lambda: PNG_MAGIC + ihdr(16, 16) + zero_idat(16, 100_000, 8) + IEND)

    # Pixel modes: valid images that must all be analysed.
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    add("mode-L-png", lambda: encoded(Image.fromarray(gradient), "PNG"), OK)
    add("mode-I16-png", lambda: encoded(Image.fromarray(gradient.astype(np.uint16) * 250), "PNG"), OK)
    add("mode-I16-png-constant", lambda: encoded(Image.fromarray(np.full((32, 32), 40_000, np.uint16)), "PNG"), BLANK)
    add("mode-1-png", lambda: encoded(Image.fromarray(gradient > 128), "PNG"), OK)
    add("mode-2bit-gray-png", lambda: raw_png(8, 4, 2, 0, (b"\0" + b"\x1b\xe4") * 4), OK)
    add("mode-4bit-gray-png", lambda: raw_png(8, 4, 4, 0, (b"\0" + b"\x01\x23\x45\x67") * 4), OK)
    add("mode-16bit-rgb-png", lambda: raw_png(4, 4, 16, 2, (b"\0" + b"\x12\x34" * 12) * 4), BLANK)
    add("mode-16bit-rgba-png", lambda: raw_png(4, 4, 16, 6, (b"\0" + b"\xab\xcd" * 16) * 4), BLANK)
    add("mode-16bit-la-png", lambda: raw_png(4, 4, 16, 4, (b"\0" + b"\xff\xff\x80\x00" * 4) * 4), BLANK)
    add("mode-RGB-png", lambda: encoded(Image.fromarray(noise(32, 32, 3)), "PNG"), OK)
    add("mode-RGBA-png-fully-transparent", lambda: encoded(Image.new("RGBA", (32, 32), (255, 0, 0, 0)), "PNG"), BLANK)
    add("mode-LA-png", lambda: encoded(Image.fromarray(noise(32, 32, 2), mode="LA"), "PNG"), OK)
    add("mode-P-png", lambda: encoded(Image.fromarray(gradient).convert("P"), "PNG"), OK)
    add("mode-P-png-transparent-index",
        lambda: encoded(Image.fromarray(gradient).convert("P"), "PNG", transparency=0), OK)
    add("mode-P-png-alpha-table",
        lambda: encoded(Image.fromarray(gradient).convert("P"), "PNG", transparency=bytes(range(0, 256))), OK)
    add("mode-P-1bit-palette", lambda: raw_png(8, 2, 1, 3, (b"\0\xaa") * 2,
                                                chunk(b"PLTE", b"\0\0\0\xff\xff\xff")), OK)
    add("mode-P-index-beyond-palette", lambda: raw_png(4, 1, 8, 3, b"\0\0\x05\xff\x09",
                                                       chunk(b"PLTE", b"\x10\x20\x30")))
    add("mode-L-png-with-trns", lambda: raw_png(4, 1, 8, 0, b"\0\x00\x40\x80\xff", chunk(b"tRNS", b"\x00\x40")), OK)
    add("mode-RGB-png-with-trns",
        lambda: raw_png(2, 1, 8, 2, b"\0\x01\x02\x03\x04\x05\x06", chunk(b"tRNS", b"\0\x01\0\x02\0\x03")), BLANK)
    add("mode-interlaced-adam7-png", lambda: interlaced_gray(13, 11, 90), BLANK)
    add("mode-gray-jpeg", lambda: encoded(Image.fromarray(gradient), "JPEG"), OK)
    add("mode-CMYK-jpeg", lambda: encoded(Image.fromarray(noise(32, 32, 3)).convert("CMYK"), "JPEG"), OK)
    add("mode-progressive-jpeg", base_progressive_jpeg, OK)
    add("mode-jpeg-subsampling-444", lambda: encoded(Image.fromarray(noise(32, 32, 3)), "JPEG", subsampling=0), OK)
    add("mode-jpeg-with-icc-profile",
        lambda: encoded(Image.fromarray(noise(32, 32, 3)), "JPEG", icc_profile=b"\0" * 128), OK)
    add("mode-png-with-garbage-icc-profile",
        lambda: with_png_chunk(base_png(), b"iCCP", b"icc\0\0" + zlib.compress(b"not a profile")), OK)
    add("mode-mpo-two-frames",
        lambda: encoded(Image.fromarray(noise(16, 16, 3)), "MPO", save_all=True,
                        append_images=[Image.fromarray(noise(16, 16, 3, seed=5))]), OK)

    # Animated PNG: the first frame is analysed.
    add("apng-three-frames",
        lambda: encoded(Image.fromarray(noise(20, 30)), "PNG", save_all=True,
                        append_images=[Image.fromarray(noise(20, 30, seed=s)) for s in (1, 2)], duration=100), OK)
    add("apng-rgba-frames-disposal",
        lambda: encoded(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG", save_all=True, disposal=2, blend=1,
                        append_images=[Image.new("RGBA", (16, 16), (255, 255, 255, 128))]), BLANK)
    add("apng-hidden-default-image",
        lambda: encoded(Image.fromarray(noise(10, 10)), "PNG", save_all=True, default_image=True,
                        append_images=[Image.fromarray(noise(10, 10, seed=4))]), OK)
    add("apng-fctl-larger-than-canvas", _apng_oversized_frame)

    # EXIF orientation: every value, in JPEG (lossy) and in PNG's eXIf chunk (exact).
    for orientation, transform in ORIENT.items():
        add(f"exif-jpeg-orientation-{orientation}",
            lambda o=orientation: encoded(Image.fromarray(MARKED), "JPEG", quality=95, exif=exif_bytes(o)),
            OK, upright=transform(MARKED), tolerance=6.0)
        add(f"exif-png-orientation-{orientation}",
            lambda o=orientation: encoded(Image.fromarray(MARKED), "PNG", exif=exif_bytes(o)),
            OK, upright=transform(MARKED))
    for orientation in (0, 9, 255, 65535):
        add(f"exif-jpeg-orientation-invalid-{orientation}",
            lambda o=orientation: encoded(Image.fromarray(MARKED), "JPEG", quality=95, exif=exif_bytes(o)),
            OK, upright=MARKED, tolerance=6.0)
    # Malformed EXIF blocks: the image itself is fine.
    plain_jpeg = lambda: encoded(Image.fromarray(MARKED), "JPEG", quality=95)  # noqa: E731
    for name, block in {
        "garbage": b"Exif\0\0" + b"\x13\x37" * 40,
        "empty-tiff": b"Exif\0\0",
        "ifd-offset-past-end": b"Exif\0\0II*\0" + struct.pack("<I", 0xFFFFFF00),
        "ifd-count-huge": b"Exif\0\0II*\0" + struct.pack("<IH", 8, 0xFFFF),
        "orientation-as-ascii": b"Exif\0\0MM\0*" + struct.pack(">IHHHII", 8, 1, 0x0112, 2, 4, 0x36000000) + b"\0" * 4,
        "orientation-zero-count": b"Exif\0\0II*\0" + struct.pack("<IHHHII", 8, 1, 0x0112, 3, 0, 0) + b"\0" * 4,
        "orientation-out-of-range-offset":
            b"Exif\0\0II*\0" + struct.pack("<IHHHII", 8, 1, 0x0112, 3, 9, 0xFFFFF000) + b"\0" * 4,
        "self-referencing-next-ifd": b"Exif\0\0II*\0" + struct.pack("<IHHHIHHI", 8, 1, 0x0112, 3, 1, 6, 0, 8),
    }.items():
        add(f"exif-malformed-{name}", lambda block=block: after_soi(plain_jpeg(), jpeg_segment(0xE1, block)))
    # Well-formed EXIF whose tags carry the wrong types: Pillow's exif_transpose raised (a 500)
    # re-encoding such a block after turning the image.
    for name, (tag, kind, value) in {
        "make-as-rational": (0x010F, 5, struct.pack("<II", 1, 2)),
        "resolution-unit-as-ascii": (0x0128, 2, b"ab\0\0"),
        "x-resolution-as-ascii": (0x011A, 2, b"72\0\0"),
    }.items():
        for fmt, quality in (("JPEG", {"quality": 95}), ("PNG", {})):
            add(f"exif-mistyped-{name}-{fmt.lower()}",
                lambda tag=tag, kind=kind, value=value, fmt=fmt, quality=quality: encoded(
                    Image.fromarray(MARKED), fmt, exif=mistyped_exif(tag, kind, value), **quality),
                OK, upright=ORIENT[6](MARKED), tolerance=6.0 if fmt == "JPEG" else 0.0)
    add("exif-png-exif-chunk-garbage", lambda: with_png_chunk(base_png(), b"eXIf", b"\x13\x37" * 30))
    add("xmp-jpeg-garbage-orientation",
        lambda: after_soi(plain_jpeg(), jpeg_segment(
            0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta tiff:Orientation=\"6\"><<<\xff\xfe")))
    add("mpo-jpeg-malformed-mp-header",
        lambda: after_soi(plain_jpeg(), jpeg_segment(0xE2, b"MPF\0MM\0*" + struct.pack(">I", 8) + b"\xff" * 6)))

    # Polyglots: a valid image with something else before, inside or after it.
    add("polyglot-png-then-zip", lambda: base_png() + _zip_holding(b"<?php system($_GET['c']); ?>"), EITHER)
    add("polyglot-png-then-html", lambda: base_png() + b"<html><script>alert(document.cookie)</script></html>", EITHER)
    add("polyglot-jpeg-php-comment",
        lambda: after_soi(base_jpeg(), jpeg_segment(0xFE, b"<?php system($_GET['c']); __halt_compiler(); ?>")), OK)
    add("polyglot-jpeg-html-comment",
        lambda: after_soi(base_jpeg(), jpeg_segment(0xFE, b"<html><script>alert(1)</script>")), OK)
    add("polyglot-jpeg-then-zip", lambda: base_jpeg() + _zip_holding(b"payload"), EITHER)
    add("polyglot-png-text-chunk-script",
        lambda: with_png_chunk(base_png(), b"tEXt", b"Comment\0<script>alert(1)</script>"), OK)
    add("polyglot-png-chunks-after-iend", lambda: base_png() + chunk(b"tEXt", b"k\0v") + chunk(b"IDAT", b"x"), EITHER)
    add("polyglot-png-magic-then-pdf", lambda: PNG_MAGIC + b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", INVALID)
    add("polyglot-jpeg-magic-then-html", lambda: b"\xff\xd8\xff<html><body>hi</body></html>", INVALID)
    add("polyglot-png-unknown-critical-chunk", lambda: with_png_chunk(base_png(), b"EVIL", b"\0" * 16), EITHER)
    add("polyglot-png-private-ancillary-chunk", lambda: with_png_chunk(base_png(), b"evIl", b"\0" * 16), OK)

    # Absurd aspect ratios and the smallest images.
    for width, height, expect in ((1, 5000, BLANK), (5000, 1, BLANK), (1, 8192, BLANK), (8192, 1, BLANK),
                                  (2, 8000, BLANK), (8000, 3, BLANK), (1, 8193, TOO_LARGE), (8192, 4882, BLANK),
                                  (8192, 4883, TOO_LARGE)):  # all black: decoded in full, then refused as blank
        add(f"aspect-png-{width}x{height}",
            lambda w=width, h=height: PNG_MAGIC + ihdr(w, h) + zero_idat(w, h, 8) + IEND, expect)
    add("aspect-jpeg-1x5000", lambda: encoded(Image.fromarray(noise(5000, 1)), "JPEG"), OK)
    add("aspect-jpeg-5000x1", lambda: encoded(Image.fromarray(noise(1, 5000)), "JPEG"), OK)
    add("tiny-png-1x1-gray", lambda: encoded(Image.new("L", (1, 1), 77), "PNG"), BLANK)
    add("tiny-png-1x1-rgba-transparent", lambda: encoded(Image.new("RGBA", (1, 1), (9, 9, 9, 0)), "PNG"), BLANK)
    add("tiny-png-1x1-1bit", lambda: encoded(Image.new("1", (1, 1), 1), "PNG"), BLANK)
    add("tiny-png-1x1-palette", lambda: encoded(Image.new("P", (1, 1), 3), "PNG"), BLANK)
    add("tiny-png-1x1-16bit", lambda: encoded(Image.fromarray(np.array([[65535]], np.uint16)), "PNG"), BLANK)
    add("tiny-jpeg-1x1", lambda: encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "JPEG"), BLANK)
    add("tiny-jpeg-1x1-cmyk", lambda: encoded(Image.new("CMYK", (1, 1), (0, 0, 0, 255)), "JPEG"), BLANK)
    add("tiny-png-2x2", lambda: encoded(Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)), "PNG"), OK)

    # Corrupt chunk CRCs.
    for kind in (b"IHDR", b"IDAT", b"IEND"):
        add(f"crc-png-bad-{kind.decode()}", lambda kind=kind: with_bad_crc(base_png(), kind), EITHER)
    add("crc-png-bad-text-chunk",
        lambda: with_bad_crc(with_png_chunk(base_png(), b"tEXt", b"Comment\0hello"), b"tEXt"), EITHER)
    add("crc-png-bad-plte", lambda: with_bad_crc(encoded(Image.fromarray(gradient).convert("P"), "PNG"), b"PLTE"),
        EITHER)

    # Huge and numerous text chunks (the file stays under the 10 MB upload limit).
    add("text-png-5mb-text-chunk", lambda: with_png_chunk(base_png(), b"tEXt", b"Comment\0" + b"A" * 5_000_000))
    add("text-png-2mb-itxt-chunk", lambda: with_png_chunk(base_png(), b"iTXt", b"XML\0\0\0en\0\0" + b"<" * 2_000_000))
    add("text-png-20000-text-chunks",
        lambda: rebuild_png(png_chunks(base_png())[:1] + [(b"tEXt", b"k%d\0v" % i) for i in range(20_000)]
                            + png_chunks(base_png())[1:]))
    add("text-png-keyword-without-separator", lambda: with_png_chunk(base_png(), b"tEXt", b"K" * 5000), OK)
    add("text-png-ztxt-bad-compression", lambda: with_png_chunk(base_png(), b"zTXt", b"k\0\0" + b"\xde\xad" * 50))
    add("text-jpeg-9mb-comments",
        lambda: after_soi(base_jpeg(), *[jpeg_segment(0xFE, b"C" * 65_000) for _ in range(140)]))

    # Malformed PNG structure.
    rows8 = (b"\0" + bytes(range(8))) * 8
    add("png-bad-filter-type", lambda: raw_png(8, 8, 8, 0, (b"\x07" + bytes(8)) * 8), EITHER)
    add("png-bad-bit-depth", lambda: raw_png(8, 8, 3, 0, rows8), EITHER)
    add("png-bad-colour-type", lambda: raw_png(8, 8, 8, 7, rows8), EITHER)
    add("png-palette-without-plte", lambda: raw_png(8, 8, 8, 3, rows8), EITHER)
    add("png-16bit-palette", lambda: raw_png(8, 8, 16, 3, rows8, chunk(b"PLTE", b"\0" * 768)), EITHER)
    add("png-compression-method-1",
        lambda: PNG_MAGIC + ihdr(8, 8, compression=1) + chunk(b"IDAT", zlib.compress(rows8)) + IEND, EITHER)
    add("png-interlace-method-2",
        lambda: PNG_MAGIC + ihdr(8, 8, interlace=2) + chunk(b"IDAT", zlib.compress(rows8)) + IEND, EITHER)
    add("png-garbage-zlib-stream", lambda: PNG_MAGIC + ihdr(8, 8) + chunk(b"IDAT", b"\x78\x9c" + b"\xff" * 50) + IEND,
        INVALID)
    add("png-idat-before-ihdr",
        lambda: PNG_MAGIC + chunk(b"IDAT", zlib.compress(rows8)) + ihdr(8, 8) + IEND, INVALID)
    add("png-two-ihdr", lambda: PNG_MAGIC + ihdr(8, 8) + ihdr(9000, 9000) + chunk(b"IDAT", zlib.compress(rows8)) + IEND,
        EITHER)
    add("png-idat-split-into-1-byte-chunks",
        lambda: PNG_MAGIC + ihdr(8, 8) + b"".join(chunk(b"IDAT", bytes([b])) for b in zlib.compress(rows8)) + IEND, BLANK)
    add("png-chunk-length-beyond-file", lambda: PNG_MAGIC + ihdr(8, 8) + struct.pack(">I", 0x7FFFFFFF) + b"IDAT\0\0",
        INVALID)
    add("png-chunk-length-over-2gb", lambda: PNG_MAGIC + ihdr(8, 8) + struct.pack(">I", 0xFFFFFFFF) + b"IDAT\0\0",
        INVALID)
    add("png-missing-iend", lambda: PNG_MAGIC + ihdr(8, 8) + chunk(b"IDAT", zlib.compress(rows8)), EITHER)
    add("png-short-scanlines", lambda: raw_png(64, 64, 8, 0, rows8), INVALID)

    # Malformed JPEG structure.
    add("jpeg-without-huffman-tables", lambda: without_segments(base_jpeg(), 0xC4), EITHER)
    add("jpeg-without-quantisation-tables", lambda: without_segments(base_jpeg(), 0xDB), EITHER)
    add("jpeg-without-sof", lambda: without_segments(base_jpeg(), 0xC0), INVALID)
    add("jpeg-12bit-precision", lambda: _sof_byte(base_jpeg(), 4, 12), EITHER)
    add("jpeg-zero-components", lambda: _sof_byte(base_jpeg(), 9, 0), EITHER)
    add("jpeg-lossless-sof3", lambda: base_jpeg().replace(b"\xff\xc0", b"\xff\xc3", 1), EITHER)
    add("jpeg-arithmetic-sof9", lambda: base_jpeg().replace(b"\xff\xc0", b"\xff\xc9", 1), EITHER)
    add("jpeg-segment-length-past-end", lambda: b"\xff\xd8\xff\xe0\xff\xff" + b"JFIF\0" * 4, INVALID)
    add("jpeg-segment-length-zero", lambda: after_soi(base_jpeg(), b"\xff\xe5\x00\x00"), EITHER)
    add("jpeg-scan-all-ff", lambda: base_jpeg()[: base_jpeg().index(b"\xff\xda") + 14] + b"\xff" * 500 + b"\xff\xd9",
        EITHER)
    add("jpeg-only-headers-then-eoi", lambda: base_jpeg()[: base_jpeg().index(b"\xff\xda")] + b"\xff\xd9", INVALID)

    # Bit rot: random bytes of valid files replaced (seeded, so the corpus never changes).
    for seed in range(12):
        add(f"bitrot-png-{seed}", lambda seed=seed: flipped_bytes(base_rgb_png(), seed, 1 + seed % 4))
        add(f"bitrot-jpeg-{seed}", lambda seed=seed: flipped_bytes(base_jpeg(), seed, 1 + seed % 4))
        add(f"bitrot-progressive-jpeg-{seed}", lambda seed=seed: flipped_bytes(base_progressive_jpeg(), seed, 2))
    return cases


def _zip_holding(payload: bytes) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("shell.php", payload)
    return buffer.getvalue()


def _sof_byte(data: bytes, offset: int, value: int) -> bytes:
    at = data.index(b"\xff\xc0")
    return data[: at + offset] + bytes([value]) + data[at + offset + 1 :]


def _apng_oversized_frame() -> bytes:
    """An APNG whose second frame claims to be far larger than the canvas it is drawn on."""
    frames = encoded(Image.fromarray(noise(8, 8)), "PNG", save_all=True,
                     append_images=[Image.fromarray(noise(8, 8, seed=1))])
    chunks = png_chunks(frames)
    second = [i for i, (kind, _) in enumerate(chunks) if kind == b"fcTL"][1]
    payload = bytearray(chunks[second][1])
    payload[4:12] = struct.pack(">II", 60_000, 60_000)
    chunks[second] = (b"fcTL", bytes(payload))
    return rebuild_png(chunks)


CORPUS = corpus()
# Every tenth file, and every file an orientation or aspect check depends on, through the app's route.
LEGACY_SAMPLE = [case for i, case in enumerate(CORPUS) if i % 10 == 0 or case.name in {
    "exif-jpeg-orientation-6", "aspect-png-1x5000", "aspect-png-8192x1", "tiny-png-1x1-gray", "empty",
    "bomb-png-1bit-16384x16384-over-pillow-limit", "mode-I16-png-constant", "apng-three-frames",
}]


# ----------------------------------------------------------------------------------------------
# The tests.

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One app for the whole corpus (loading the models per file would take minutes); the rate
    limit is lifted so that a few hundred uploads in a minute are all served."""
    with unlimited_single_thread_app(tmp_path_factory.mktemp("hostile") / "data") as app:
        yield app


def test_the_corpus_is_large_and_names_are_unique():
    names = [case.name for case in CORPUS]
    assert len(names) >= 200
    assert len(set(names)) == len(names)
    assert 25 <= len(LEGACY_SAMPLE) <= 40


def assert_json_error(response) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def assert_analysis(client, body: dict) -> Image.Image:
    """A well-formed analysis that can be read back; returns its stored original image."""
    assert body["modality"] == "ultrasound"
    probabilities = body["probabilities"]
    assert set(probabilities) == CLASSES
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert body["label"] in probabilities
    assert body["saliency"] is None  # saliency=none was asked for
    assert client.get(f"/v1/analyses/{body['id']}").get_json()["id"] == body["id"]
    stored = client.get(body["images"]["original"])
    assert stored.status_code == 200 and stored.mimetype == "image/png"
    image = Image.open(io.BytesIO(stored.get_data()))
    image.load()
    return image


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CORPUS])
def test_hostile_upload_is_analysed_or_refused_cleanly(client, case: Hostile):
    data = case.build()
    before = record_count(client)
    response = upload(client, data, filename="upload.bin", saliency="none")
    after = record_count(client)

    if case.expect is not None:
        assert response.status_code in case.expect, (response.status_code, response.get_json())
    if response.status_code == 201:
        assert after == before + 1
        stored = assert_analysis(client, response.get_json())
        if case.upright is not None:
            shown = np.asarray(stored.convert("L"), dtype=float)
            assert shown.shape == case.upright.shape
            assert np.abs(shown - case.upright).mean() <= case.tolerance
    else:
        assert_json_error(response)
        assert after == before, "a refused upload stored something"


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in LEGACY_SAMPLE])
def test_hostile_upload_on_the_apps_route_answers_its_envelope(client, case: Hostile):
    data = case.build()
    before = record_count(client)
    response = client.post("/evaluate-image/ultrasound/?extract_roi=false",
                           data={"file": (io.BytesIO(data), "upload.jpg")}, content_type="multipart/form-data")
    after = record_count(client)

    assert response.status_code < 500, (response.status_code, response.get_json())
    body = response.get_json()
    assert set(body) == {"result", "aditionalInfo", "idResult"}
    if case.expect is not None:
        assert response.status_code in {200 if s == 201 else s for s in case.expect}, body
    if response.status_code == 200:
        assert body["result"] == "OK" and body["aditionalInfo"] is None
        assert isinstance(body["idResult"], str) and after == before + 1
        assert client.get(f"/v1/analyses/{body['idResult']}").status_code == 200
    else:
        assert 400 <= response.status_code < 500
        assert body["result"] == "ERROR" and body["idResult"] is None
        assert body["aditionalInfo"] in LEGACY_INFO
        assert after == before, "a refused upload stored something"
