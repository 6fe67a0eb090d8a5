"""Ultrasound screenshots: the scan area is found, calipers and text are found and inpainted,
and an analysis reports the crop with every position in the whole image's pixels."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import SHARED_DATA, png_bytes, upload
from ml.datasets import load_gray
from ml.screen import Box, clean_scan, find_marks, find_scan_area, inpaint
from ml.screenshots import PASTE_AT, draw_calipers, measured_scan, scanner_screenshot

SCAN = SHARED_DATA / "busbra" / "images" / "bus_0002-l.png"
@pytest.fixture(scope="module")
def scan() -> np.ndarray:
    return load_gray(SCAN)


def test_a_synthetic_screenshot_crops_back_to_the_scan_area(scan):
    found = find_scan_area(scanner_screenshot(scan))
    x, y = PASTE_AT
    expected = Box(x, y, x + scan.shape[1] - 1, y + scan.shape[0] - 1)
    for side in ("x0", "y0", "x1", "y1"):
        assert abs(getattr(found, side) - getattr(expected, side)) <= 3, (found, expected)


@pytest.mark.parametrize("at", [(180, 60), (400, 250)])
def test_the_crop_follows_the_scan_wherever_it_sits(scan, at):
    found = find_scan_area(scanner_screenshot(scan, at))
    assert abs(found.x0 - at[0]) <= 3 and abs(found.y0 - at[1]) <= 3
    assert abs(found.x1 - (at[0] + scan.shape[1] - 1)) <= 3 and abs(found.y1 - (at[1] + scan.shape[0] - 1)) <= 3


def test_an_image_that_is_all_scan_is_left_whole_or_nearly(scan):
    found = find_scan_area(scan)
    assert found.width * found.height >= 0.9 * scan.size


def test_a_flat_image_is_not_cropped():
    flat = np.full((200, 300), 90, dtype=np.uint8)
    assert find_scan_area(flat) == Box(0, 0, 299, 199)


def test_drawn_calipers_are_found_and_inpainted(scan):
    points = [(80, 120), (190, 140), (130, 260)]
    marked = draw_calipers(scan, points)
    marks = find_marks(marked)
    for x, y in points:
        assert marks[y, x] and marks[y - 4, x] and marks[y, x + 4], (x, y)
    drawn = marked != scan
    assert marks[drawn].mean() > 0.9  # nearly every drawn pixel is found
    # ...and nothing new elsewhere (this BUS-BRA image carries calipers and text of its own).
    near = np.zeros_like(drawn)
    for x, y in points:
        near[y - 8 : y + 9, x - 8 : x + 9] = True
    own = find_marks(scan)
    assert own.sum() > 0 and own[int(0.8 * scan.shape[0]), :].any()  # its burned-in label
    assert (marks & ~near & ~own).sum() < 0.002 * scan.size
    cleaned = inpaint(marked, marks)
    assert np.abs(cleaned[drawn].astype(int) - scan[drawn].astype(int)).mean() < 40
    assert (cleaned[drawn] == 255).mean() < 0.05


def test_a_measured_scan_has_calipers_at_the_lesions_widest_row_and_its_text():
    scan = np.full((120, 160), 70, dtype=np.uint8)
    lesion = np.zeros(scan.shape, dtype=bool)
    lesion[40:70, 50:80] = True
    lesion[55, 45:95] = True  # the widest row
    measured = measured_scan(scan, lesion)
    assert measured[55, 45] == measured[55, 94] == measured[50, 45] == 255  # a "+" on each end
    assert (measured[100:, :80] > 200).sum() > 20  # "D1 ..." in the lower left corner
    changed = measured != scan
    assert changed[30:80, 35:105].sum() + changed[100:, :80].sum() == changed.sum()  # nothing elsewhere
    assert (measured_scan(scan, np.zeros_like(lesion)) == scan).all()


def test_a_screenshot_is_sized_to_hold_its_scan():
    tall = np.full((520, 600), 90, dtype=np.uint8)
    shot = scanner_screenshot(tall)
    x, y = PASTE_AT
    assert shot.shape == (y + 520 + 40, x + 600 + 70)
    assert (shot[y : y + 520, x : x + 600] == 90).all()
    assert scanner_screenshot(np.full((200, 300), 90, dtype=np.uint8)).shape == (640, 860)


def test_burned_in_text_is_found(scan):
    picture = Image.fromarray(scan)
    ImageDraw.Draw(picture).text((60, 330), "MAMA ESQ 12.3MM", fill=255, font=ImageFont.load_default())
    marked = np.array(picture)
    drawn = marked != scan
    assert find_marks(marked)[drawn].mean() > 0.6


def test_the_scan_itself_is_hardly_touched(scan):
    cleaned = clean_scan(scan, crop=False)
    assert cleaned.marked_pixels < 0.02 * scan.size
    assert (cleaned.gray[~cleaned.marks] == scan[~cleaned.marks]).all()


def test_clean_scan_crops_and_inpaints_a_screenshot(scan):
    marked = draw_calipers(scan, [(100, 150), (200, 150)])
    result = clean_scan(scanner_screenshot(marked))
    assert result.gray.shape == (result.area.height, result.area.width)
    assert abs(result.gray.shape[0] - scan.shape[0]) <= 6 and abs(result.gray.shape[1] - scan.shape[1]) <= 6
    assert result.marked_pixels > 0
    x, y = 100 + PASTE_AT[0] - result.area.x0, 150 + PASTE_AT[1] - result.area.y0
    assert result.marks[y, x] and result.gray[y, x] < 250


def test_an_analysis_reports_the_scan_area_and_keeps_positions_in_image_pixels(client, scan):
    shot = scanner_screenshot(draw_calipers(scan, [(100, 150), (200, 150)]))
    body = upload(client, png_bytes(shot), extract_roi="true", screen_crop="true").get_json()
    area = body["scan_area"]
    assert abs(area["x0"] - PASTE_AT[0]) <= 3 and abs(area["y0"] - PASTE_AT[1]) <= 3
    assert body["marks_removed"] > 0 and body["options"]["screen_crop"] is True
    assert body["image"] == {"width": shot.shape[1], "height": shot.shape[0]}
    peak = body["saliency"]["peak"]
    assert area["x0"] <= peak["x"] <= area["x1"] and area["y0"] <= peak["y"] <= area["y1"]
    grid = np.array(body["saliency"]["grid"])
    assert max(grid.shape) == 32 and grid.shape[1] > grid.shape[0]  # over the whole (wide) screenshot
    for roi in body["rois"]:
        box = roi["box"]
        assert area["x0"] <= box["x0"] <= box["x1"] <= area["x1"] and area["y0"] <= box["y0"] <= box["y1"] <= area["y1"]
    assert "scan" in body["images"]


def test_screen_crop_is_off_by_default_and_ignored_for_mammography(client, scan, mias_png):
    for fields in ({}, {"screen_crop": "false"}):
        body = upload(client, png_bytes(scanner_screenshot(scan)), saliency="none", **fields).get_json()
        assert body["scan_area"] is None and body["marks_removed"] is None and "scan" not in body["images"]
        assert body["options"]["screen_crop"] is False
    body = upload(client, mias_png, modality="mammography", screen_crop="true", saliency="none").get_json()
    assert body["scan_area"] is None


def test_screen_crop_is_validated_and_documented(client, busbra_png):
    response = upload(client, busbra_png, screen_crop="sometimes")
    assert response.status_code == 400 and "screen_crop" in str(response.get_json()["error"])
    spec = client.get("/v1/openapi.json").get_json()
    assert "screen_crop" in str(spec) and "scan_area" in str(spec["components"]["schemas"]["Analysis"])


def test_a_correction_classifies_its_roi_as_the_analysis_did_with_or_without_marks(client, scan):
    """An analysis made with screen_crop has its ROI corrections classified with the calipers
    inpainted too: on an image marked inside the lesion, the two corrections differ."""
    x0, y0, x1, y1 = 133, 141, 221, 191  # the lesion's outline box in bus_0002-l.png
    marked = draw_calipers(scan, [(x0 + 3, y0 + 3), (x1 - 3, y1 - 3), (x0 + 3, y1 - 3), (x1 - 3, y0 + 3)])
    corrected = {}
    for screen_crop in ("true", "false"):
        created = upload(client, png_bytes(marked), saliency="none", screen_crop=screen_crop).get_json()
        response = client.post(f"/v1/analyses/{created['id']}/roi",
                               json={"box": {"x0": x0, "y0": y0, "x1": x1, "y1": y1}})
        assert response.status_code == 201
        corrected[screen_crop] = response.get_json()["probabilities"]["malignant"]
    assert corrected["true"] != pytest.approx(corrected["false"], abs=1e-4)


def test_a_correction_on_a_screenshot_works_in_the_scan_area_as_its_analysis_did(scan):
    """With screen_crop, a correction is segmented and classified in the cleaned scan area (the
    analysis' image embedding is reused) and comes back in the screenshot's own pixels."""
    from api.config import from_environment
    from ml.pipeline import AnalysisOptions, Analyzer
    from ml.roi_classification import context_box

    analyzer = Analyzer.from_weights(from_environment()["WEIGHTS_DIR"])
    shot = scanner_screenshot(draw_calipers(scan, [(100, 150), (200, 150)]))
    png = png_bytes(shot)
    analysis = analyzer.analyse(png, "ultrasound", AnalysisOptions(extract_roi=True, saliency=None, screen_crop=True))
    segmenter = analyzer.models["ultrasound"].segmenter
    cached = segmenter.cached_images()
    x0, y0, x1, y1 = 133, 141, 221, 191  # the lesion's outline box in bus_0002-l.png
    box = np.array([x0 + PASTE_AT[0], y0 + PASTE_AT[1], x1 + PASTE_AT[0], y1 + PASTE_AT[1]], dtype=np.float32)
    finding, images = analyzer.correct_roi(png, "ultrasound", box, None, None, screen_crop=True)
    assert segmenter.cached_images() == cached  # the analysis' embedding, not the screenshot's
    area = analysis.scan_area
    rx0, ry0, rx1, ry1 = finding.box
    assert area.x0 <= rx0 <= rx1 <= area.x1 and area.y0 <= ry0 <= ry1 <= area.y1
    overlap = max(0, min(rx1, box[2]) - max(rx0, box[0])) * max(0, min(ry1, box[3]) - max(ry0, box[1]))
    assert overlap >= 0.5 * (box[2] - box[0]) * (box[3] - box[1])  # the lesion, in the screenshot's pixels
    mask = np.asarray(Image.open(io.BytesIO(images["_mask.png"])))
    assert mask.shape == shot.shape and (mask > 0).sum() == finding.area
    # the crop the ROI was classified on lies in the scan area: no menus, rulers or text beside it
    classifier = analyzer.models["ultrasound"].classifier
    cx0, cy0, cx1, cy1 = context_box((rx0 - area.x0, ry0 - area.y0, rx1 - area.x0, ry1 - area.y0),
                                     (area.height, area.width), classifier.roi_margin)
    crop = np.asarray(Image.open(io.BytesIO(images[".png"])))
    assert crop.shape == (cy1 - cy0 + 1, cx1 - cx0 + 1)
