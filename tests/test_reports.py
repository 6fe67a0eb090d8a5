"""Structured reports: JSON and printable HTML, owner-only, sizes in millimetres from DICOM spacing."""
from __future__ import annotations

import base64
import io
import re
import uuid

import numpy as np
import pytest
from PIL import Image

from api.routes.reports import ReportSchema
from conftest import SHARED_DATA, copy_to_another_owner, upload
from ml.datasets import load_gray
from test_dicom import dicom_file

SPACING = (0.1, 0.2)  # mm per pixel: rows, columns
COMMENT = '<script>alert("x")</script> & <b>fibroadenoma</b>'


@pytest.fixture(scope="module")
def busbra_dicom() -> tuple[bytes, tuple[int, int, int, int]]:
    """A BUS-BRA image as an ultrasound DICOM with a known pixel spacing, and its lesion's box."""
    gray = load_gray(SHARED_DATA / "busbra" / "images" / "bus_0002-l.png")
    mask = np.asarray(Image.open(SHARED_DATA / "busbra" / "masks" / "mask_0002-l.png").convert("L")) > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    data = dicom_file(gray, "US", PixelSpacing=list(SPACING))
    return data, (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


@pytest.fixture
def analysed(client, busbra_dicom) -> dict:
    """A DICOM analysis with automatic ROIs, a clinician's ROI, and feedback with markup in it."""
    data, (x0, y0, x1, y1) = busbra_dicom
    response = upload(client, data, filename="scan.dcm", extract_roi="true")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    correction = client.post(f"/v1/analyses/{body['id']}/roi",
                             json={"box": {"x0": x0, "y0": y0, "x1": x1, "y1": y1}})
    assert correction.status_code == 201, correction.get_json()
    feedback = client.post(f"/v1/analyses/{body['id']}/feedback", json={"label": "benign", "comment": COMMENT})
    assert feedback.status_code == 201
    return client.get(f"/v1/analyses/{body['id']}").get_json()


def test_json_report_follows_its_schema_with_sizes_in_millimetres(client, analysed):
    response = client.get(f"/v1/analyses/{analysed['id']}/report")
    assert response.status_code == 200 and response.mimetype == "application/json"
    report = response.get_json()
    assert ReportSchema().validate(report) == {}
    assert report["id"] == analysed["id"] and report["result"]["label"] == analysed["label"]
    assert report["result"]["probabilities"] == analysed["probabilities"]
    assert report["result"]["risk"] == analysed["risk"] and report["result"]["risk"]["caution"]
    assert report["models"]["classifier"] == analysed["model"]
    assert report["image"]["pixel_spacing_mm"] == list(SPACING)
    assert report["image"]["width_mm"] == pytest.approx(analysed["image"]["width"] * SPACING[1], abs=0.01)
    assert report["image"]["height_mm"] == pytest.approx(analysed["image"]["height"] * SPACING[0], abs=0.01)
    assert report["rois"], "the clinician's ROI at least"
    for roi in report["rois"]:
        box = roi["box"]
        assert roi["width_mm"] == pytest.approx((box["x1"] - box["x0"] + 1) * SPACING[1], abs=0.01)
        assert roi["height_mm"] == pytest.approx((box["y1"] - box["y0"] + 1) * SPACING[0], abs=0.01)
        assert roi["area_mm2"] == pytest.approx(roi["area"] * SPACING[0] * SPACING[1], abs=0.01)
    assert [f["comment"] for f in report["feedback"]] == [COMMENT]
    assert report["options"]["extract_roi"] is True and report["saliency"]["method"] == "gradcam"
    assert report["images"]["original"].startswith(f"/v1/analyses/{analysed['id']}/images/")
    assert client.get(report["images"]["original"]).status_code == 200


def test_png_report_has_no_millimetres(client, busbra_png):
    body = upload(client, busbra_png, extract_roi="true", screen_crop="true").get_json()
    report = client.get(f"/v1/analyses/{body['id']}/report").get_json()
    assert ReportSchema().validate(report) == {}
    assert report["image"]["pixel_spacing_mm"] is None and report["image"]["width_mm"] is None
    assert all(roi["width_mm"] is None and roi["area_mm2"] is None for roi in report["rois"])
    assert report["image"]["scan_area"] == body["scan_area"] and report["image"]["marks_removed"] > 0
    page = client.get(f"/v1/analyses/{body['id']}/report.html").get_data(as_text=True)
    assert "pixel spacing unknown" in page and "calipers and text inpainted" in page


def test_html_report_is_printable_self_contained_and_escapes_comments(client, analysed):
    response = client.get(f"/v1/analyses/{analysed['id']}/report.html")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert "img-src data:" in response.headers["Content-Security-Policy"]
    assert "script-src" not in response.headers["Content-Security-Policy"]
    page = response.get_data(as_text=True)
    assert "<script" not in page  # the comment's markup is text, not markup
    assert "&lt;script&gt;alert(" in page and "&lt;b&gt;fibroadenoma&lt;/b&gt;" in page and "&amp; " in page
    assert "@media print" in page
    assert analysed["risk"]["birads_category"] in page and analysed["risk"]["caution"] in page
    assert analysed["model"]["version"] in page
    # The images are inlined, decodable PNGs: nothing is fetched when it is printed.
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) >= 3  # original, saliency, contours (and ROI crops)
    original = Image.open(io.BytesIO(base64.b64decode(sources[0])))
    assert original.size == (analysed["image"]["width"], analysed["image"]["height"])
    assert not re.search(r'src="(?!data:)', page)
    roi = analysed["rois"][-1]
    width_mm = (roi["box"]["x1"] - roi["box"]["x0"] + 1) * SPACING[1]
    assert f"{width_mm:.1f} &times;" in page and "mm&sup2;" in page


def test_reports_are_owner_only(app, client, analysed):
    foreign = copy_to_another_owner(app, analysed["id"])
    for suffix in ("report", "report.html"):
        response = client.get(f"/v1/analyses/{foreign['id']}/{suffix}")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
        assert client.get(f"/v1/analyses/{uuid.uuid4()}/{suffix}").status_code == 404
    assert client.delete(f"/v1/analyses/{analysed['id']}").status_code == 204
    assert client.get(f"/v1/analyses/{analysed['id']}/report").status_code == 404
    assert client.get(f"/v1/analyses/{analysed['id']}/report.html").status_code == 404


def test_reports_are_in_the_openapi_document(client):
    spec = client.get("/v1/openapi.json").get_json()
    paths = spec["paths"]
    json_op = paths["/v1/analyses/{analysis_id}/report"]["get"]
    html_op = paths["/v1/analyses/{analysis_id}/report.html"]["get"]
    assert "Report" in str(json_op["responses"]["200"]) and {"401", "404"} <= set(json_op["responses"])
    assert "text/html" in html_op["responses"]["200"]["content"] and "404" in html_op["responses"]
