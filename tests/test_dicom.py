"""DICOM uploads: files written with pydicom from the shared PNGs analyse like those PNGs, are
checked against the requested modality, bounded in size, and leave no patient data behind."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from api import create_app
from api.service import record_of, roi_record
from conftest import record_count, upload
from ml.dicom import decode_dicom, is_dicom
from ml.errors import FrameOutOfRange, ImageTooLarge, InvalidImage, ModalityMismatch, UnsupportedImageType
from ml.images import DecodedImage, decode
from ml.pipeline import Analysis, RoiFinding
from ml.risk import birads_category

PATIENT_NAME, PATIENT_ID = "DOE^JANE", "PID-12345"
SOP_CLASS = {"US": UltrasoundImageStorage, "MG": DigitalMammographyXRayImageStorageForPresentation,
             "DX": DigitalMammographyXRayImageStorageForPresentation}


def dicom_file(pixels: np.ndarray, modality: str, photometric: str = "MONOCHROME2", bits_stored: int = 8,
               syntax: str = ExplicitVRLittleEndian, **tags) -> bytes:
    """A DICOM file (Part 10) holding `pixels` (rows, columns[, samples] or frames first), with a
    patient name and id, and any other `tags` by keyword."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    multi_frame = pixels.ndim == 3 and photometric.startswith("MONOCHROME") or pixels.ndim == 4
    sop_class = SOP_CLASS.get(modality, SecondaryCaptureImageStorage)
    if multi_frame:
        sop_class = UltrasoundMultiFrameImageStorage
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID = sop_class
    dataset.Modality = modality
    dataset.PatientName, dataset.PatientID = PATIENT_NAME, PATIENT_ID
    dataset.set_pixel_data(pixels, photometric, bits_stored)
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    if syntax in (RLELossless, JPEG2000Lossless):
        dataset.compress(syntax, pixels)
    elif syntax == JPEGBaseline8Bit:  # Pillow writes the JPEG; pydicom only wraps it
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = syntax
    else:
        dataset.file_meta.TransferSyntaxUID = syntax
        if syntax == ExplicitVRBigEndian and pixels.dtype.itemsize > 1:
            dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()  # not swapped for us
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def gray_of(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("L"))


def stored_original(client, body: dict) -> np.ndarray:
    response = client.get(body["images"]["original"])
    assert response.status_code == 200
    return gray_of(response.data)


@pytest.fixture(scope="module")
def busbra(shared_data) -> np.ndarray:
    return gray_of((shared_data / "busbra" / "images" / "bus_0002-l.png").read_bytes())


@pytest.fixture(scope="module")
def mias(shared_data) -> np.ndarray:
    return gray_of((shared_data / "mias" / "images" / "mdb001.png").read_bytes())


# Unit tests of ml/dicom.py

def test_is_dicom_by_the_magic_after_the_preamble(busbra):
    assert is_dicom(dicom_file(busbra, "US"))
    assert not is_dicom(b"DICM" + b"\0" * 200) and not is_dicom(b"\0" * 128 + b"DIC")


def test_monochrome1_is_inverted_so_that_higher_is_brighter():
    ramp = np.tile(np.arange(0, 256, 5, dtype=np.uint8), (8, 1))
    decoded = decode_dicom(dicom_file(ramp, "US", photometric="MONOCHROME1"), "ultrasound")
    assert np.array_equal(decoded.gray, 255 - ramp)
    deep = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))
    windowed = decode_dicom(dicom_file(deep, "MG", "MONOCHROME1", 12, WindowCenter=2048, WindowWidth=4096),
                            "mammography")
    assert np.array_equal(windowed.gray, np.rint((1 - deep / 4095) * 255))  # stored 0 is white


def test_window_maps_its_range_to_black_and_white_and_clips_outside():
    stored = np.array([[0, 1000, 1500, 2000, 2500, 3000, 4095]], dtype=np.uint16)
    # LINEAR window over 1500..2500 (centre 2000.5, width 1001): below is black, above is white.
    decoded = decode_dicom(dicom_file(stored, "MG", bits_stored=12, WindowCenter=2000.5, WindowWidth=1001),
                           "mammography")
    assert decoded.gray.tolist() == [[0, 0, 0, 128, 255, 255, 255]]


def test_rescale_comes_before_the_window():
    stored = np.array([[0, 100, 200, 300]], dtype=np.uint16)
    # Rescaled values -1000..-700; the window is given in rescaled units.
    decoded = decode_dicom(dicom_file(stored, "MG", bits_stored=12, RescaleSlope=1, RescaleIntercept=-1000,
                                      WindowCenter=-849.5, WindowWidth=301), "mammography")
    assert decoded.gray.tolist() == [[0, 85, 170, 255]]


def test_voi_lut_sequence_is_applied():
    stored = np.array([[0, 1365, 2730, 4095]], dtype=np.uint16)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 12]
    lut.add_new("LUTData", "US", list(range(4095, -1, -1)))  # an inverting LUT
    decoded = decode_dicom(dicom_file(stored, "MG", bits_stored=12, VOILUTSequence=[lut],
                                      RescaleSlope=1, RescaleIntercept=0), "mammography")
    assert decoded.gray.tolist() == [[255, 170, 85, 0]]


def test_sixteen_bits_without_window_are_scaled_by_their_range():
    stored = np.array([[100, 200, 300]], dtype=np.uint16)
    assert decode_dicom(dicom_file(stored, "US", bits_stored=16), "ultrasound").gray.tolist() == [[0, 128, 255]]


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                                    RLELossless, JPEG2000Lossless], ids=lambda uid: uid.name)
@pytest.mark.parametrize("bits", [8, 16])
def test_transfer_syntaxes_decode_exactly(busbra, syntax, bits):
    pixels = busbra if bits == 8 else busbra.astype(np.uint16) * 257
    decoded = decode_dicom(dicom_file(pixels, "US", bits_stored=bits, syntax=syntax), "ultrasound")
    expected = busbra if bits == 8 else np.rint((busbra - 29.0) * 255 / (254 - 29)).astype(np.uint8)
    assert (busbra.min(), busbra.max()) == (29, 254)
    assert decoded.format == "dicom" and np.array_equal(decoded.gray, expected)


def test_jpeg_baseline_decodes_close_to_the_original(busbra):
    decoded = decode_dicom(dicom_file(busbra, "US", syntax=JPEGBaseline8Bit), "ultrasound")
    assert np.abs(decoded.gray.astype(int) - busbra).mean() < 2


def test_rgb_becomes_luma(busbra):
    rgb = np.stack([busbra, busbra // 2, np.zeros_like(busbra)], axis=-1)
    decoded = decode_dicom(dicom_file(rgb, "US", photometric="RGB"), "ultrasound")
    expected = np.rint(0.299 * busbra + 0.587 * (busbra // 2))
    assert np.abs(decoded.gray.astype(int) - expected).max() <= 1


def test_stored_png_is_the_pixels_only(busbra):
    decoded = decode_dicom(dicom_file(busbra, "US"), "ultrasound")
    assert np.array_equal(gray_of(decoded.png), busbra)
    assert PATIENT_NAME.encode() not in decoded.png and PATIENT_ID.encode() not in decoded.png


def region(delta_x_cm: float, delta_y_cm: float, units: int = 3) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta_x_cm, delta_y_cm
    return item


def test_pixel_spacing_in_millimetres():
    pixels = np.zeros((4, 4), dtype=np.uint8)
    from_tag = decode_dicom(dicom_file(pixels, "MG", PixelSpacing=[0.07, 0.08]), "mammography")
    assert from_tag.pixel_spacing_mm == (0.07, 0.08)
    from_regions = decode_dicom(dicom_file(pixels, "US", SequenceOfUltrasoundRegions=[region(0.01, 0.02)]),
                                "ultrasound")
    assert from_regions.pixel_spacing_mm == pytest.approx((0.2, 0.1))
    doppler = region(0.01, 0.5, units=7)  # seconds and cm/s: not a distance
    both = decode_dicom(dicom_file(pixels, "US", SequenceOfUltrasoundRegions=[region(0.01, 0.02), doppler]),
                        "ultrasound")
    assert both.pixel_spacing_mm == pytest.approx((0.2, 0.1))
    ambiguous = decode_dicom(dicom_file(pixels, "US", SequenceOfUltrasoundRegions=[region(0.01, 0.01),
                                                                                     region(0.02, 0.02)]), "ultrasound")
    assert ambiguous.pixel_spacing_mm is None
    assert decode_dicom(dicom_file(pixels, "US"), "ultrasound").pixel_spacing_mm is None


@pytest.mark.parametrize(("modality", "tags", "requested"), [
    ("MG", {}, "ultrasound"),
    ("US", {}, "mammography"),
    ("DX", {"BodyPartExamined": "CHEST"}, "mammography"),
    ("MR", {}, "mammography"),
])
def test_modality_must_match(modality, tags, requested):
    with pytest.raises(ModalityMismatch):
        decode_dicom(dicom_file(np.zeros((4, 4), dtype=np.uint8), modality, **tags), requested)


def test_dx_of_the_breast_is_mammography():
    decoded = decode_dicom(dicom_file(np.zeros((4, 4), dtype=np.uint8), "DX", BodyPartExamined="BREAST"),
                           "mammography")
    assert decoded.gray.shape == (4, 4)


def test_sizes_are_bounded_before_decoding():
    small = dicom_file(np.zeros((4, 4), dtype=np.uint8), "US")
    dataset = dcmread(io.BytesIO(small))
    dataset.Rows = dataset.Columns = 4000  # 16 million pixels a frame: accepted alone
    dataset.NumberOfFrames = 40  # 640 million pixels announced, 16 bytes present
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(ImageTooLarge):
        decode_dicom(buffer.getvalue(), "ultrasound")


def test_refusals_by_kind(busbra):
    with pytest.raises(FrameOutOfRange):
        decode_dicom(dicom_file(np.stack([busbra] * 2), "US"), "ultrasound", frame=2)
    with pytest.raises(UnsupportedImageType, match="RLE Lossless"):  # the message lists what is supported
        decode_dicom(dicom_file(busbra, "US", syntax=DeflatedExplicitVRLittleEndian), "ultrasound")
    truncated = dicom_file(busbra, "US")[:-5000]
    with pytest.raises(InvalidImage):
        decode_dicom(truncated, "ultrasound")
    with pytest.raises(InvalidImage):
        decode_dicom(b"\0" * 128 + b"DICM" + b"\xff" * 64, "ultrasound")


def test_dicom_is_refused_where_no_modality_is_given(busbra):
    """Masks and stored images are decoded without a modality: DICOM stays refused there."""
    with pytest.raises(UnsupportedImageType):
        decode(dicom_file(busbra, "US"))


def test_record_has_spacing_and_roi_areas_in_square_millimetres():
    gray = np.zeros((20, 30), dtype=np.uint8)
    roi = RoiFinding(0, (1, 2, 5, 6), 25, 0.9, "benign", {"normal": 0.1, "benign": 0.8, "malignant": 0.1}, 0.09, None)
    analysis = Analysis(
        modality="ultrasound", label="benign", probabilities=roi.probabilities, threshold=0.2,
        operating_point="screening", model_name="m", model_version="1",
        image=DecodedImage("dicom", gray, b"", pixel_spacing_mm=(0.1, 0.2)), stage_ms={},
        risk=birads_category(0.1), reliability={"low_confidence": False, "note": ""}, rois=[roi],
    )
    record = record_of(analysis, {}, 0.0)
    assert record["pixel_spacing_mm"] == [0.1, 0.2]
    assert record["rois"][0]["area_mm2"] == pytest.approx(0.5)
    assert roi_record(roi, "correction")["area_mm2"] is None


# Through the API

@pytest.fixture(scope="module")
def variants(busbra, mias) -> dict:
    """name -> (original gray, modality, DICOM file) holding the same pixels."""
    deep = (mias.astype(np.uint16) * 16 + 7)  # 12 bits; rescaled 8p, windowed back to p
    return {
        "us-monochrome2-8bit": (busbra, "ultrasound", dicom_file(
            busbra, "US", SequenceOfUltrasoundRegions=[region(0.01, 0.01)])),
        "mg-monochrome2-16bit-rescale-window": (mias, "mammography", dicom_file(
            deep, "MG", bits_stored=12, RescaleSlope=0.5, RescaleIntercept=-3.5, WindowCenter=1020.5,
            WindowWidth=2041, PixelSpacing=[0.2, 0.2])),
        "mg-monochrome1": (mias, "mammography", dicom_file(
            255 - mias, "DX", photometric="MONOCHROME1", BodyPartExamined="BREAST")),
        "us-rle-lossless": (busbra, "ultrasound", dicom_file(busbra, "US", syntax=RLELossless)),
    }


@pytest.mark.parametrize("name", ["us-monochrome2-8bit", "mg-monochrome2-16bit-rescale-window", "mg-monochrome1",
                                  "us-rle-lossless"])
def test_dicom_analyses_like_its_png(client, variants, name):
    gray, modality, data = variants[name]
    from_png = upload(client, _png(gray), modality=modality, saliency="none").get_json()
    response = upload(client, data, modality=modality, filename="scan.dcm", saliency="none")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["label"] == from_png["label"]
    for kind, probability in from_png["probabilities"].items():
        assert body["probabilities"][kind] == pytest.approx(probability, abs=0.02)
    assert np.abs(stored_original(client, body).astype(int) - gray).max() <= 1  # the same pixels
    assert body["image"] == {"width": gray.shape[1], "height": gray.shape[0]}
    spacing = {"us-monochrome2-8bit": [0.1, 0.1], "mg-monochrome2-16bit-rescale-window": [0.2, 0.2]}.get(name)
    assert body["pixel_spacing_mm"] == (pytest.approx(spacing) if spacing else None)
    assert from_png["pixel_spacing_mm"] is None


def _png(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG")
    return buffer.getvalue()


def test_multi_frame_ultrasound_picks_the_frame(client, busbra):
    frames = np.stack([np.fliplr(busbra), busbra, 255 - busbra])
    data = dicom_file(frames, "US")
    first = upload(client, data, saliency="none").get_json()
    assert np.array_equal(stored_original(client, first), frames[0])
    picked = upload(client, data, saliency="none", dicom_frame="1").get_json()
    assert np.array_equal(stored_original(client, picked), busbra)
    assert picked["options"]["dicom_frame"] == 1
    out_of_range = upload(client, data, saliency="none", dicom_frame="3")
    assert out_of_range.status_code == 400
    error = out_of_range.get_json()["error"]
    assert error["code"] == "frame_out_of_range" and "0 to 2" in error["message"]
    assert record_count(client) == 2
    assert upload(client, data, dicom_frame="10001").status_code == 400  # over the field's range


def _files(folder) -> list:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_modality_mismatch_is_400_and_stores_nothing(app, client, mias):
    response = upload(client, dicom_file(mias, "MG"), modality="ultrasound")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "modality_mismatch" and "Modality MG" in error["message"]
    assert record_count(client) == 0
    assert not [path for path in _files(app.config["DATA_DIR"]) if "images" in path.parts]
    legacy = client.post("/evaluate-image/ultrasound/?extract_roi=false", content_type="multipart/form-data",
                         data={"file": (io.BytesIO(dicom_file(mias, "MG")), "scan.dcm")})
    assert legacy.status_code == 400
    assert legacy.get_json() == {"result": "ERROR", "aditionalInfo": "MODALITY MISMATCH", "idResult": None}


def test_patient_data_leaves_no_trace(app, client, busbra, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    data = dicom_file(busbra, "US", InstitutionName="Hospital", StudyDescription="BREAST US",
                      SequenceOfUltrasoundRegions=[region(0.01, 0.01)])
    assert PATIENT_NAME.encode() in data and PATIENT_ID.encode() in data
    response = upload(client, data, filename=f"{PATIENT_ID}.dcm", saliency="none")
    assert response.status_code == 201
    record = client.get(f"/v1/analyses/{response.get_json()['id']}")
    for text in (response.get_data(as_text=True), record.get_data(as_text=True)):
        assert PATIENT_NAME not in text and PATIENT_ID not in text
    files = _files(app.config["DATA_DIR"])
    assert any(path.suffix == ".png" for path in files)
    for path in files:
        content = path.read_bytes()
        assert PATIENT_NAME.encode() not in content and PATIENT_ID.encode() not in content, path
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_dicom_without_pixel_data_is_400(client):
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID = UltrasoundImageStorage
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID = "1.2.3.4"
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Modality = "US"
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    response = upload(client, buffer.getvalue())
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_image"
    assert record_count(client) == 0


@pytest.fixture(scope="module")
def cine(busbra) -> bytes:
    """A 12 MB ultrasound cine loop: over the PNG/JPEG limit, under the DICOM one."""
    data = dicom_file(np.stack([busbra] * 124), "US")
    assert 12 * 1024 * 1024 < len(data) < 13 * 1024 * 1024
    return data


def test_twelve_megabyte_dicom_is_accepted(client, cine, busbra):
    response = upload(client, cine, saliency="none", dicom_frame="123")
    assert response.status_code == 201, response.get_json()
    assert np.array_equal(stored_original(client, response.get_json()), busbra)


def test_dicom_over_its_limit_is_413(monkeypatch, tmp_path, cine):
    limit = 11 * 1024 * 1024
    monkeypatch.setenv("BRANET_MAX_DICOM_BYTES", str(limit))
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data"})
    assert app.config["MAX_DICOM_BYTES"] == limit
    client = app.test_client()
    just_over = upload(client, cine[: limit + 1])  # inside the body limit: refused as it is read
    assert just_over.status_code == 413
    assert just_over.get_json()["error"]["code"] == "payload_too_large"
    assert "DICOM" in just_over.get_json()["error"]["message"]
    whole = upload(client, cine)  # 12 MB: refused from Content-Length, before the body is read
    assert whole.status_code == 413 and "error" in whole.get_json()
    assert record_count(client) == 0


def test_default_limits(app):
    assert app.config["MAX_IMAGE_BYTES"] == 10 * 1024 * 1024
    assert app.config["MAX_DICOM_BYTES"] == 50 * 1024 * 1024
    assert app.config["MAX_CONTENT_LENGTH"] > 50 * 1024 * 1024
