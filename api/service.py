"""The analysis use case shared by the v1 API and the app's legacy route."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import time
import uuid

import numpy as np

from flask import current_app, g, url_for

from api.errors import APIError
from api.models import get_analyzer
from api.schemas import AnalysisOptionsSchema
from api.store import get_store
from ml.dicom import PREAMBLE, is_dicom
from ml.masks import mask_from_png, mask_from_polygons, mask_png
from ml.pipeline import Analysis, AnalysisOptions, Reuse, RoiFinding, SaliencyFinding
from ml.segmenter.roi import RoiSettings


NOT_FOUND = "no such analysis for this user"


def owned_record(user_id: str, analysis_id: str) -> dict:
    """The user's active analysis, or 404: another user's analysis is as absent as a deleted one."""
    record = get_store().get_analysis(user_id, analysis_id)
    if record is None:
        raise APIError(404, "not_found", NOT_FOUND)
    return record


def read_upload(file_storage) -> bytes:
    """The uploaded file's bytes, refusing a missing part or one over the size limit of its type:
    MAX_DICOM_BYTES for a DICOM file (by its first bytes), else MAX_IMAGE_BYTES."""
    if file_storage is None:
        raise APIError(400, "missing_file", "a multipart part named 'file' is required")
    head = file_storage.stream.read(PREAMBLE + 4)
    dicom = is_dicom(head)
    limit = current_app.config["MAX_DICOM_BYTES" if dicom else "MAX_IMAGE_BYTES"]
    data = head + file_storage.stream.read(max(limit + 1 - len(head), 0))
    if len(data) > limit:
        kind = "a DICOM file" if dicom else "a PNG or JPEG image"
        raise APIError(413, "payload_too_large", f"{kind} must be at most {limit} bytes")
    return data


def options_from(fields: dict) -> AnalysisOptions:
    """Request fields loaded by AnalysisOptionsSchema (every default filled) -> the pipeline's options."""
    return AnalysisOptions(
        extract_roi=fields["extract_roi"],
        roi=RoiSettings(min_area_fraction=fields["roi_min_area"], confidence_threshold=fields["roi_confidence"],
                        max_rois=fields["roi_max"]),
        saliency=None if fields["saliency"] == "none" else fields["saliency"],
        saliency_layer=fields["saliency_layer"],
        saliency_steps=fields["saliency_steps"],
        operating_point=fields["operating_point"],
        dicom_frame=fields["dicom_frame"],
        screen_crop=fields["screen_crop"],
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


def roi_record(roi: RoiFinding, source: str, prompt: dict | None = None,
               pixel_spacing_mm: tuple[float, float] | None = None) -> dict:
    record = {
        "index": roi.index,
        "source": source,
        "box": dict(zip(("x0", "y0", "x1", "y1"), roi.box)),
        "area": roi.area,
        "area_mm2": round(roi.area * pixel_spacing_mm[0] * pixel_spacing_mm[1], 3) if pixel_spacing_mm else None,
        "confidence": roi.confidence,
        "label": roi.label,
        "probabilities": roi.probabilities,
        "threshold": roi.threshold,
        "saliency": _saliency(roi.saliency),
    }
    if prompt is not None:
        record["prompt"] = prompt
    return record


def record_of(analysis: Analysis, options: dict, started: float) -> dict:
    """The stored form of an analysis: JSON-able, image names rather than bytes."""
    rois = None
    if analysis.rois is not None:
        rois = [
            {
                **roi_record(roi, "automatic", pixel_spacing_mm=analysis.image.pixel_spacing_mm),
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
        "pixel_spacing_mm": list(analysis.image.pixel_spacing_mm) if analysis.image.pixel_spacing_mm else None,
        "images": list(analysis.images),
        "scan_area": analysis.scan_area.to_dict() if analysis.scan_area is not None else None,
        "marks_removed": analysis.marks_removed,
    }


def analyse(data: bytes, modality: str, options: dict) -> tuple[Analysis, dict]:
    """Run the pipeline; returns the analysis and the record that would store it."""
    started = time.perf_counter()
    analysis = get_analyzer().analyse(data, modality, options_from(options))
    g.stage_ms = analysis.stage_ms  # for the access log and metrics
    return analysis, record_of(analysis, options, started)


def rerun(user_id: str, source: dict, changes: dict) -> tuple[Analysis, dict]:
    """Analyse a stored analysis' image again with `changes` to its options (the rest kept).

    Returns a new analysis and its record, linked by `rerun_of` to the first analysis of the image;
    the source record is left exactly as it was. Reused rather than computed again: the stored
    image (nothing is uploaded or decoded from DICOM again; its pixel spacing is carried over), the
    classifier's probabilities when the model serving now is the one that made them (the operating
    point only moves the threshold), and the saliency map and its overlay when the method, its
    parameters and the explained class are unchanged. ROIs are found again; the segmenter's image
    embedding is cached by image content, so that part too is reused within a process."""
    started = time.perf_counter()
    image = get_store().read_image(user_id, source["id"], "original.png")
    if image is None:
        raise APIError(404, "not_found", NOT_FOUND)
    # Defaults fill the options a record made before they existed lacks; such a record's results
    # are not reused, since the option may change what the models see.
    defaults = AnalysisOptionsSchema().load({})
    previous = {**defaults, **source.get("options", {})}
    fields = {**previous, **changes}
    saliency, overlay = source.get("saliency"), None
    if saliency is not None and "saliency.png" in source["images"]:
        overlay = get_store().read_image(user_id, source["id"], "saliency.png")
    reuse = Reuse(
        model=(source["model"]["name"], source["model"]["version"]),
        probabilities=source["probabilities"],
        options=options_from(previous),
        saliency=SaliencyFinding(saliency["method"], saliency["target"],
                                 (saliency["peak"]["x"], saliency["peak"]["y"]), saliency["grid"]) if saliency else None,
        saliency_png=overlay,
    )
    if not defaults.keys() <= source.get("options", {}).keys():
        reuse = None
    analysis = get_analyzer().analyse(image, source["modality"], options_from(fields), reuse)
    if source.get("pixel_spacing_mm"):
        spacing = tuple(source["pixel_spacing_mm"])
        analysis = dataclasses.replace(analysis, image=dataclasses.replace(analysis.image, pixel_spacing_mm=spacing))
    g.stage_ms = analysis.stage_ms
    record = record_of(analysis, fields, started)
    record["rerun_of"] = source.get("rerun_of") or source["id"]
    record["reused"] = ["image", *analysis.reused]
    return analysis, record


def store(user_id: str, analysis: Analysis, record: dict) -> None:
    """Store the record with all its images; either everything is stored or nothing is."""
    get_store().save_analysis(user_id, record, analysis.images)


def present_feedback(analysis_id: str, feedback: dict) -> dict:
    links = _links(analysis_id, list(feedback["masks"].values()))
    return {**feedback, "masks": {kind: links[name.rsplit(".", 1)[0]] for kind, name in feedback["masks"].items()}}


def _links(analysis_id: str, names: list[str]) -> dict[str, str]:
    """Image names -> owner-only URLs, keyed by the name without its extension."""
    return {name.rsplit(".", 1)[0]: url_for("analyses.image", analysis_id=analysis_id, name=name) for name in names}


def present_roi(analysis_id: str, roi: dict) -> dict:
    return {**roi, "images": _links(analysis_id, roi["images"])}


def present(record: dict) -> dict:
    """A stored record as the v1 API shows it: image names become owner-only URLs."""
    shown = dict(record)
    if "feedback" in record:
        shown["feedback"] = [present_feedback(record["id"], f) for f in record["feedback"]]
    shown["images"] = _links(record["id"], record["images"])
    if record.get("rois"):
        shown["rois"] = [present_roi(record["id"], roi) for roi in record["rois"]]
    return shown


def correct_roi(user_id: str, record: dict, prompt: dict) -> dict:
    """A clinician's prompt -> a new ROI stored with the analysis; the analysis turns malignant
    when the new ROI is. 422 when the prompt points at no lesion (nothing stored)."""
    image = get_store().read_image(user_id, record["id"], "original.png")
    box = None
    if "box" in prompt:
        box = np.array([prompt["box"][k] for k in ("x0", "y0", "x1", "y1")], dtype=np.float32)
    points = labels = None
    if "points" in prompt:
        points = np.array([[p["x"], p["y"]] for p in prompt["points"]], dtype=np.float32)
        labels = np.array([1 if p["positive"] else 0 for p in prompt["points"]])
    result = get_analyzer().correct_roi(image, record["modality"], box, points, labels, prompt["operating_point"],
                                        screen_crop=record.get("options", {}).get("screen_crop", False))
    if result is None:
        raise APIError(422, "no_roi_found", "the prompt points at no lesion; nothing was stored")
    finding, images = result
    label = "malignant" if finding.label == "malignant" else record["label"]
    roi = roi_record(finding, "correction", prompt, record.get("pixel_spacing_mm"))
    stored = get_store().add_roi(user_id, record["id"], roi, images, label)
    if stored is None:
        raise APIError(404, "not_found", NOT_FOUND)
    return stored
