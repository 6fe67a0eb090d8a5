"""Structured report of an analysis: JSON, and printable HTML with its images inlined."""
from __future__ import annotations

import base64
import datetime as dt

from flask import Response, render_template
from marshmallow import fields

from api.auth import current_user
from api.extensions import Blueprint
from api.schemas import (
    ApiErrorSchema,
    BoxSchema,
    FeedbackSchema,
    ImageSizeSchema,
    ModelRefSchema,
    RiskSchema,
    SaliencySchema,
    StrictSchema,
    UNAUTHORIZED,
)
from api.service import owned_record, present
from api.store import get_store

blp = Blueprint("reports", __name__, url_prefix="/v1/analyses",
                description="Structured reports of the caller's analyses (JSON and printable HTML)")

DISCLAIMER = ("Decision support for clinicians, not a diagnosis. The category and probabilities come from a "
              "model alone and must be read with the images and the clinical context.")
# Images shown in the HTML report, in this order, with their captions.
FIGURES = (("original.png", "Image as uploaded"), ("scan.png", "Scan area analysed (calipers and text inpainted)"),
           ("saliency.png", "Saliency: where the classifier looked"), ("contours.png", "Regions of interest"))


# Response schema

class ReportResultSchema(StrictSchema):
    label = fields.String(required=True)
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    threshold = fields.Float(required=True)
    operating_point = fields.String(required=True)
    risk = fields.Nested(RiskSchema, required=True)
    low_confidence = fields.Boolean(required=True)
    reliability_note = fields.String(required=True)


class ReportImageSchema(ImageSizeSchema):
    pixel_spacing_mm = fields.List(fields.Float(), allow_none=True, required=True,
                                   metadata={"description": "[row, column] mm per pixel (DICOM); null when unknown"})
    width_mm = fields.Float(allow_none=True, required=True)
    height_mm = fields.Float(allow_none=True, required=True)
    scan_area = fields.Nested(BoxSchema, allow_none=True, required=True)
    marks_removed = fields.Integer(allow_none=True, required=True)


class ReportRoiSchema(StrictSchema):
    index = fields.Integer(required=True)
    source = fields.String(required=True)
    label = fields.String(required=True)
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    confidence = fields.Float(required=True)
    box = fields.Nested(BoxSchema, required=True, metadata={"description": "inclusive, image pixels"})
    area = fields.Integer(required=True, metadata={"description": "pixels"})
    width_mm = fields.Float(allow_none=True, required=True,
                            metadata={"description": "the box's width in mm; null when the spacing is unknown"})
    height_mm = fields.Float(allow_none=True, required=True,
                             metadata={"description": "the box's height in mm; null when the spacing is unknown"})
    area_mm2 = fields.Float(allow_none=True, required=True)
    saliency = fields.Nested(SaliencySchema, allow_none=True)
    images = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class ReportModelsSchema(StrictSchema):
    classifier = fields.Nested(ModelRefSchema, required=True)
    segmenter = fields.Nested(ModelRefSchema, allow_none=True, required=True)


class ReportSchema(StrictSchema):
    id = fields.String(required=True)
    modality = fields.String(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    generated_at = fields.String(required=True, metadata={"format": "date-time"})
    result = fields.Nested(ReportResultSchema, required=True)
    image = fields.Nested(ReportImageSchema, required=True)
    rois = fields.List(fields.Nested(ReportRoiSchema), allow_none=True, required=True,
                       metadata={"description": "null when ROIs were not asked for"})
    saliency = fields.Nested(SaliencySchema, allow_none=True, required=True)
    models = fields.Nested(ReportModelsSchema, required=True)
    options = fields.Dict(required=True)
    feedback = fields.List(fields.Nested(FeedbackSchema), required=True)
    images = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "image name -> URL, served to the owner only"})
    disclaimer = fields.String(required=True)


# Building the report

def _mm(pixels: int, spacing: float | None) -> float | None:
    return round(pixels * spacing, 2) if spacing else None


def build_report(record: dict) -> dict:
    """A stored record (with its feedback) as a report; image names become owner-only URLs."""
    shown = present(record)
    spacing = record.get("pixel_spacing_mm")
    row_mm, col_mm = (spacing[0], spacing[1]) if spacing else (None, None)
    rois = None
    if shown.get("rois") is not None:
        rois = []
        for roi in shown["rois"]:
            box = roi["box"]
            rois.append({
                "index": roi["index"], "source": roi["source"], "label": roi["label"],
                "probabilities": roi["probabilities"], "confidence": roi["confidence"], "box": box,
                "area": roi["area"],
                "width_mm": _mm(box["x1"] - box["x0"] + 1, col_mm),
                "height_mm": _mm(box["y1"] - box["y0"] + 1, row_mm),
                "area_mm2": roi.get("area_mm2"),
                "saliency": roi.get("saliency"), "images": roi["images"],
            })
    return {
        "id": record["id"],
        "modality": record["modality"],
        "created_at": record["created_at"],
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "result": {key: record[key] for key in ("label", "probabilities", "threshold", "operating_point", "risk",
                                                "low_confidence", "reliability_note")},
        "image": {
            "width": record["image"]["width"], "height": record["image"]["height"],
            "pixel_spacing_mm": spacing,
            "width_mm": _mm(record["image"]["width"], col_mm), "height_mm": _mm(record["image"]["height"], row_mm),
            "scan_area": record.get("scan_area"), "marks_removed": record.get("marks_removed"),
        },
        "rois": rois,
        "saliency": record.get("saliency"),
        "models": {"classifier": record["model"], "segmenter": record.get("segmenter")},
        "options": record.get("options", {}),
        "feedback": shown.get("feedback", []),
        "images": shown["images"],
        "disclaimer": DISCLAIMER,
    }



def _inline(user_id: str, analysis_id: str, name: str) -> str | None:
    """A stored PNG as a data: URI, so that the printed report needs nothing else."""
    data = get_store().read_image(user_id, analysis_id, name)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii") if data else None


# Routes

@blp.route("/<string:analysis_id>/report")
@blp.response(200, ReportSchema)
@blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
@blp.alt_response(404, schema=ApiErrorSchema)
def report(analysis_id: str):
    """A structured report of one of the caller's analyses: result, risk category, images, ROIs with
    sizes in millimetres where the pixel spacing is known, saliency, models, options and feedback."""
    return build_report(owned_record(current_user(), analysis_id))


@blp.route("/<string:analysis_id>/report.html")
@blp.doc(responses={200: {"description": "printable HTML report, images inlined", "content": {"text/html": {}}}})
@blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
@blp.alt_response(404, schema=ApiErrorSchema)
def report_html(analysis_id: str):
    """The same report as a printable HTML page (print CSS; images inlined, nothing fetched)."""
    user_id = current_user()
    record = owned_record(current_user(), analysis_id)
    content = build_report(record)
    stored = set(record["images"])
    figures = [(caption, _inline(user_id, analysis_id, name)) for name, caption in FIGURES if name in stored]
    roi_images = {}
    for roi in record.get("rois") or []:
        index = roi["index"]
        roi_images[index] = {suffix: _inline(user_id, analysis_id, f"roi{index}{suffix}")
                             for suffix in (".png", "_saliency.png") if f"roi{index}{suffix}" in roi.get("images", [])}
    html = render_template("report.html", report=content, figures=figures, roi_images=roi_images)
    response = Response(html, mimetype="text/html")
    # Only the page's own inline styles and inlined images; no script, nothing fetched.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'")
    response.headers["Cache-Control"] = "private, no-store"
    return response
