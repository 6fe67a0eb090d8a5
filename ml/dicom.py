"""DICOM bytes -> the same checked grayscale image as a PNG or JPEG upload.

Only the tags that place and present the pixels are looked at (transfer syntax, modality, the
image pixel, modality LUT and VOI LUT modules, pixel spacing); no other tag's value (patient
name, ids, dates, institution...) is used, returned, logged or stored. The picture kept is a PNG
made from the decoded 8-bit pixels alone.
"""
from __future__ import annotations

import io
import logging
import math
import warnings

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import UID, AllTransferSyntaxes, DeflatedExplicitVRLittleEndian

from ml.errors import (
    FrameOutOfRange,
    ImageTooLarge,
    InvalidImage,
    MLError,
    ModalityMismatch,
    UnsupportedImageType,
)
from ml.images import MAX_PIXELS, MAX_SIDE, DecodedImage, encode_png

PREAMBLE = 128
MAGIC = b"DICM"
MAX_FILE_PIXELS = 500_000_000  # rows x columns x frames, checked before any pixel is decoded
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")  # pydicom hands them over as RGB
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights Pillow turns RGB into L with
CENTIMETRE = 3  # Physical Units X/Y Direction of an ultrasound region measured in cm
EXPECTED_MODALITY = {
    "ultrasound": "Modality US",
    "mammography": "Modality MG, or DX/CR with Body Part Examined BREAST",
}

# pydicom's log messages can quote tag values; they stay out of the service's logs.
logging.getLogger("pydicom").propagate = False


def _decodable(uid: UID) -> bool:
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


# Deflated files are left out: pydicom inflates the whole data set in one go, with no bound on
# its size (a decompression bomb).
SUPPORTED_TRANSFER_SYNTAXES = tuple(
    uid for uid in AllTransferSyntaxes if uid != DeflatedExplicitVRLittleEndian and _decodable(uid)
)


def is_dicom(data: bytes) -> bool:
    """True for a DICOM file (Part 10): "DICM" after the 128-byte preamble."""
    return data[PREAMBLE : PREAMBLE + len(MAGIC)] == MAGIC


def decode_dicom(data: bytes, modality: str, frame: int = 0) -> DecodedImage:
    """Decode one frame (0-based) of a DICOM file for an analysis of `modality`.

    Before any pixel is decoded: the transfer syntax must be one this build decodes, the file
    must hold an image whose Modality is `modality`'s, its sizes must be bounded and `frame` must
    exist. Raises an MLError when refused.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings can quote tag values too
        try:
            dataset = _read(data)
            _check_modality(dataset, modality)
            photometric = _check_pixels(dataset, frame)
            levels = _levels(dataset, pixel_array(dataset, index=frame), photometric)
            spacing = _pixel_spacing(dataset)
        except MLError:
            raise
        except Exception as error:  # pydicom and its plugins raise anything on a hostile file
            raise InvalidImage(f"the DICOM file cannot be decoded: {error}") from None
    gray = np.rint(levels * 255).astype(np.uint8)
    return DecodedImage(format="dicom", gray=gray, png=encode_png(gray), pixel_spacing_mm=spacing)


def _read(data: bytes) -> Dataset:
    """The parsed data set, refused when its transfer syntax is not decodable or it has no image.
    The file meta information is read first: a deflated data set is never inflated."""
    stream = io.BytesIO(data)
    stream.seek(PREAMBLE + len(MAGIC))
    meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True,
                        stop_when=lambda tag, vr, length: tag.group != 2)
    syntax = UID(str(meta.get("TransferSyntaxUID", "")).strip())
    if not syntax:
        raise InvalidImage("the DICOM file has no Transfer Syntax UID")
    if syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise UnsupportedImageType(
            f"the DICOM transfer syntax {syntax.name[:80]} is not supported; supported: "
            + "; ".join(uid.name for uid in SUPPORTED_TRANSFER_SYNTAXES)
        )
    dataset = dcmread(io.BytesIO(data), force=False)
    if "PixelData" not in dataset:
        raise InvalidImage("the DICOM file holds no image (no Pixel Data)")
    return dataset


def _text(dataset: Dataset, keyword: str) -> str:
    return str(dataset.get(keyword) or "").strip().upper()[:16]


def _check_modality(dataset: Dataset, modality: str) -> None:
    found, body_part = _text(dataset, "Modality"), _text(dataset, "BodyPartExamined")
    own = None
    if found == "US":
        own = "ultrasound"
    elif found == "MG" or (found in ("DX", "CR") and body_part == "BREAST"):
        own = "mammography"
    if own != modality:
        described = f"Modality {found or '(none)'}"
        if found in ("DX", "CR"):
            described += f" with Body Part Examined {body_part or '(none)'}"
        raise ModalityMismatch(
            f"the DICOM file is not a {modality} image: it has {described}, and {modality} "
            f"needs {EXPECTED_MODALITY.get(modality, 'a known modality')}"
        )


def _check_pixels(dataset: Dataset, frame: int) -> str:
    """Refuse what cannot or must not be decoded; return the photometric interpretation."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames") or 1)
    samples = int(dataset.get("SamplesPerPixel") or 1)
    bits = int(dataset.BitsAllocated)
    photometric = str(dataset.PhotometricInterpretation).strip().upper()
    if photometric not in MONOCHROME + COLOUR or samples != (1 if photometric in MONOCHROME else 3):
        raise UnsupportedImageType(
            f"DICOM images in {photometric[:16]} with {samples} samples per pixel are not supported: "
            f"only {', '.join(MONOCHROME)} (1 sample) and {', '.join(COLOUR)} (3 samples)"
        )
    if bits not in (8, 16):
        raise UnsupportedImageType(f"DICOM images of {bits} bits allocated per sample are not supported, "
                                   "only 8 or 16")
    if rows < 1 or columns < 1 or frames < 1:
        raise InvalidImage("the DICOM image has no pixels")
    pixels = rows * columns
    if rows > MAX_SIDE or columns > MAX_SIDE or pixels > MAX_PIXELS or pixels * frames > MAX_FILE_PIXELS:
        raise ImageTooLarge(
            f"the DICOM image is {columns}x{rows} with {frames} frame(s); at most {MAX_SIDE} px a side, "
            f"{MAX_PIXELS} pixels a frame and {MAX_FILE_PIXELS} pixels in all are accepted"
        )
    if not 0 <= frame < frames:
        raise FrameOutOfRange(f"frame {frame} was asked for; the DICOM file has {frames} frame(s), "
                              f"numbered from 0 to {frames - 1}")
    return photometric


def _levels(dataset: Dataset, samples: np.ndarray, photometric: str) -> np.ndarray:
    """Decoded samples -> grey levels in 0..1, higher = brighter, as a viewer presents them.

    Monochrome: Modality LUT or rescale, then the VOI LUT or window (whose output range spans
    0..1); without either, 8-bit pixels are taken as they are (as a PNG's) and deeper ones
    scaled by their own range. MONOCHROME1 is inverted. Colour: BT.601 luma.
    """
    if photometric not in MONOCHROME:
        return (samples.astype(np.float64) @ LUMA) / (2 ** int(dataset.BitsStored) - 1)
    values = _modality_values(dataset, samples)
    if dataset.get("VOILUTSequence") or ("WindowCenter" in dataset and "WindowWidth" in dataset):
        # The VOI's output range, from the lowest and highest values the file can store.
        extremes = apply_voi_lut(_modality_values(dataset, _stored_extremes(dataset)), dataset)
        values = apply_voi_lut(values, dataset)
        low, high = float(extremes.min()), float(extremes.max())
    elif values.dtype == np.uint8 and int(dataset.BitsStored) == 8:
        low, high = 0.0, 255.0
    else:
        low, high = float(values.min()), float(values.max())
    levels = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros(values.shape)
    return 1.0 - levels if photometric == "MONOCHROME1" else levels


def _stored_extremes(dataset: Dataset) -> np.ndarray:
    bits = int(dataset.BitsStored)
    if dataset.get("PixelRepresentation") == 1:  # signed
        return np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.int64)
    return np.array([0, 2**bits - 1], dtype=np.int64)


def _modality_values(dataset: Dataset, samples: np.ndarray) -> np.ndarray:
    values = apply_modality_lut(samples, dataset)
    if dataset.get("VOILUTSequence") and values.dtype.kind == "f":
        values = np.rint(values).astype(np.int64)  # a VOI LUT is indexed by whole numbers
    return values


def _pixel_spacing(dataset: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: Pixel Spacing, else the ultrasound regions measured in cm
    when they agree; None when unknown, invalid or ambiguous."""
    try:
        spacing = dataset.get("PixelSpacing")
        if spacing is not None and len(spacing) == 2 and _positive(float(spacing[0]), float(spacing[1])):
            return float(spacing[0]), float(spacing[1])
        found = {
            (float(region.PhysicalDeltaY) * 10, float(region.PhysicalDeltaX) * 10)
            for region in dataset.get("SequenceOfUltrasoundRegions") or []
            if region.get("PhysicalUnitsXDirection") == CENTIMETRE == region.get("PhysicalUnitsYDirection")
        }
    except (AttributeError, TypeError, ValueError):
        return None
    if len(found) == 1:
        (row, column), = found
        if _positive(row, column):
            return row, column
    return None


def _positive(*values: float) -> bool:
    return all(math.isfinite(value) and value > 0 for value in values)
