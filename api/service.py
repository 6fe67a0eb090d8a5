"""The analysis use case shared by the v1 API and the app's legacy route."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
import uuid

from flask import current_app, g, url_for

from api.errors import APIError
from api.models import get_analyzer
from api.store import get_store
from ml.masks import mask_from_png, mask_from_polygons, mask_png
from ml.pipeline import Analysis, AnalysisOptions, SaliencyFinding
from ml.segmenter.roi import RoiSettings


def read_upload(file_storage) -> bytes:
    """The uploaded file's bytes, refusing a missing part or one over the size limit."""
    if file_storage is None:
        raise APIError(400, "missing_file", "a multipart part named 'file' is required")
    limit = current_app.config["MAX_IMAGE_BYTES"]
    data = file_storage.stream.read(limit + 1)
    if len(data) > limit:
        raise APIError(413, "payload_too_large", f"the image must be at most {limit} bytes")
    return data


def options_from(fields: dict) -> AnalysisOptions:
    """Validated request fields (see AnalysisOptionsSchema) -> the pipeline's options."""
    return AnalysisOptions(
        extract_roi=fields.get("extract_roi", False),
        roi=RoiSettings(
            min_area_fraction=fields.get("roi_min_area", RoiSettings.min_area_fraction),
            confidence_threshold=fields.get("roi_confidence", RoiSettings.confidence_threshold),
            max_rois=fields.get("roi_max", RoiSettings.max_rois),
        ),
        saliency=None if fields.get("saliency", "gradcam") == "none" else fields.get("saliency", "gradcam"),
        saliency_layer=fields.get("saliency_layer", "layer4"),
        saliency_steps=fields.get("saliency_steps", 16),
        operating_point=fields.get("operating_point", "screening"),
    )


def edited_mask_png(edit: dict, shape: tuple[int, int]) -> bytes:
    """A clinician's edited mask (validated by MaskEditSchema) as a binary PNG of the image's size."""
    if "png" in edit:
        try:
            data = base64.b64decode(edit["png"], validate=True)
        except binascii.Error:
            raise APIError(400, "validation_error", "the mask is not valid base64") from None
        return mask_png(mask_from_png(data, shape))
    return mask_png(mask_from_polygons(edit["polygons"], shape))


def _saliency(finding: SaliencyFinding | None) -> dict | None:
    if finding is None:
        return None
    return {"method": finding.method, "target": finding.target,
            "peak": {"x": finding.peak[0], "y": finding.peak[1]}, "grid": finding.grid}


def record_of(analysis: Analysis, options: dict, started: float) -> dict:
    """The stored form of an analysis: JSON-able, image names rather than bytes."""
    rois = None
    if analysis.rois is not None:
        rois = [
            {
                "index": roi.index,
                "box": dict(zip(("x0", "y0", "x1", "y1"), roi.box)),
                "area": roi.area,
                "confidence": roi.confidence,
                "label": roi.label,
                "probabilities": roi.probabilities,
                "saliency": _saliency(roi.saliency),
                "images": sorted(n for n in analysis.images if n.startswith(f"roi{roi.index}.")
                                 or n.startswith(f"roi{roi.index}_")),
            }
            for roi in analysis.rois
        ]
    return {
        "id": str(uuid.uuid4()),
        "modality": analysis.modality,
        "label": analysis.label,
        "probabilities": analysis.probabilities,
        "threshold": analysis.threshold,
        "operating_point": analysis.operating_point,
        "risk": {"birads_category": analysis.risk.category, "likelihood_of_malignancy": analysis.risk.likelihood,
                 "caution": analysis.risk.caution},
        "low_confidence": analysis.reliability["low_confidence"],
        "reliability_note": analysis.reliability["note"],
        "extract_roi": analysis.rois is not None,
        "options": options,
        "model": {"name": analysis.model_name, "version": analysis.model_version},
        "segmenter": analysis.segmenter,
        "saliency": _saliency(analysis.saliency),
        "rois": rois,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "stage_ms": analysis.stage_ms,
        "image": {"width": analysis.image.width, "height": analysis.image.height},
        "images": list(analysis.images),
    }


def analyse(data: bytes, modality: str, options: dict) -> tuple[Analysis, dict]:
    """Run the pipeline; returns the analysis and the record that would store it."""
    started = time.perf_counter()
    analysis = get_analyzer().analyse(data, modality, options_from(options))
    g.stage_ms = analysis.stage_ms  # for the access log and metrics
    return analysis, record_of(analysis, options, started)


def store(user_id: str, analysis: Analysis, record: dict) -> None:
    """Store the record with all its images; either everything is stored or nothing is."""
    get_store().save_analysis(user_id, record, analysis.images)


def present_feedback(analysis_id: str, feedback: dict) -> dict:
    return {**feedback, "masks": {kind: url_for("analyses.image", analysis_id=analysis_id, name=name)
                                  for kind, name in feedback.get("masks", {}).items()}}


def present(record: dict) -> dict:
    """A stored record as the v1 API shows it: image names become owner-only URLs."""
    def link(name: str) -> str:
        return url_for("analyses.image", analysis_id=record["id"], name=name)

    shown = dict(record)
    if "feedback" in record:
        shown["feedback"] = [present_feedback(record["id"], f) for f in record["feedback"]]
    shown["images"] = {name.rsplit(".", 1)[0]: link(name) for name in record["images"]}
    if record.get("rois"):
        shown["rois"] = [{**roi, "images": {n.rsplit(".", 1)[0]: link(n) for n in roi["images"]}}
                         for roi in record["rois"]]
    return shown
