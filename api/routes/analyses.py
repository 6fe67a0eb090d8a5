"""JSON API v1: analyses, their images and feedback."""
from __future__ import annotations

import datetime as dt

from flask import Response
from flask.views import MethodView

from api.auth import current_user
from api.errors import APIError
from api.extensions import Blueprint
from api.schemas import (
    AnalysisRequestSchema,
    AnalysisPageSchema,
    AnalysisSchema,
    ApiErrorSchema,
    FeedbackRequestSchema,
    FeedbackSchema,
    PageArgsSchema,
    RETRY_AFTER,
    UNAUTHORIZED,
    RerunRequestSchema,
    RoiCorrectionRequestSchema,
    RoiSchema,
)
from api.service import (
    NOT_FOUND,
    analyse,
    correct_roi,
    edited_mask_png,
    owned_record,
    present,
    present_feedback,
    present_roi,
    read_upload,
    rerun as rerun_analysis,
    store,
)
from api.store import get_store

blp = Blueprint("analyses", __name__, url_prefix="/v1/analyses",
                description="Analyses of breast images, owned by the caller")

MASK_KINDS = ("missed_lesions", "ignore_regions")


@blp.route("")
class Analyses(MethodView):
    @blp.arguments(AnalysisRequestSchema, location="multipart")
    @blp.response(201, AnalysisSchema)
    @blp.alt_response(400, schema=ApiErrorSchema,
                      description="invalid field, corrupt image, DICOM modality mismatch or frame out of range")
    @blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
    @blp.alt_response(413, schema=ApiErrorSchema,
                      description="PNG/JPEG over 10 MB, DICOM over its limit (50 MB), or absurd dimensions")
    @blp.alt_response(415, schema=ApiErrorSchema,
                      description="not PNG, JPEG or DICOM (by content), or a DICOM encoding not supported")
    @blp.alt_response(422, schema=ApiErrorSchema, description="the image shows no content (blank or flat grey)")
    @blp.alt_response(429, schema=ApiErrorSchema, headers=RETRY_AFTER, description="over the rate limit")
    @blp.alt_response(501, schema=ApiErrorSchema, description="no ROI segmenter installed for the modality")
    @blp.alt_response(503, schema=ApiErrorSchema, description="model or store unavailable")
    def post(self, form: dict):
        """Analyse an image: classify it and store the result."""
        user_id = current_user()
        data = read_upload(form.pop("file"))
        modality = form.pop("modality")
        analysis, record = analyse(data, modality, form)
        store(user_id, analysis, record)
        return present(record)

    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, AnalysisPageSchema)
    @blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
    def get(self, args: dict):
        """The caller's history, newest first."""
        items, total = get_store().list_analyses(current_user(), args["limit"], args["offset"])
        return {"items": [present(r) for r in items], "total": total, **args}


@blp.route("/<string:analysis_id>")
class Analysis(MethodView):
    @blp.response(200, AnalysisSchema)
    @blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
    @blp.alt_response(404, schema=ApiErrorSchema)
    def get(self, analysis_id: str):
        """One analysis of the caller's, with its feedback."""
        return present(owned_record(current_user(), analysis_id))

    @blp.response(204)
    @blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
    @blp.alt_response(404, schema=ApiErrorSchema)
    def delete(self, analysis_id: str):
        """Soft delete: the analysis leaves the history, as in the app."""
        if not get_store().deactivate(current_user(), analysis_id):
            raise APIError(404, "not_found", NOT_FOUND)
        return None


@blp.route("/<string:analysis_id>/feedback", methods=["POST"])
@blp.arguments(FeedbackRequestSchema)
@blp.response(201, FeedbackSchema)
@blp.alt_response(400, schema=ApiErrorSchema, description="invalid label, comment or mask")
@blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
@blp.alt_response(404, schema=ApiErrorSchema)
def feedback(body: dict, analysis_id: str):
    """Record the clinician's verdict and edited masks; earlier feedback is kept, never overwritten."""
    record = owned_record(current_user(), analysis_id)
    shape = (record["image"]["height"], record["image"]["width"])
    masks = {kind: edited_mask_png(body.pop(kind), shape) for kind in MASK_KINDS if kind in body}
    entry = {**body, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")}
    stored = get_store().add_feedback(current_user(), analysis_id, entry, masks)
    if stored is None:
        raise APIError(404, "not_found", NOT_FOUND)
    return present_feedback(analysis_id, stored)


@blp.route("/<string:analysis_id>/rerun", methods=["POST"])
@blp.arguments(RerunRequestSchema)
@blp.response(201, AnalysisSchema)
@blp.alt_response(400, schema=ApiErrorSchema, description="an option out of range, or not an option")
@blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
@blp.alt_response(404, schema=ApiErrorSchema)
@blp.alt_response(429, schema=ApiErrorSchema, headers=RETRY_AFTER, description="over the rate limit")
@blp.alt_response(501, schema=ApiErrorSchema, description="no ROI segmenter installed for the modality")
@blp.alt_response(503, schema=ApiErrorSchema, description="model or store unavailable")
def rerun(changes: dict, analysis_id: str):
    """Analyse the stored image again with new options: a new analysis, linked by `rerun_of`.

    Options left out keep the original analysis' values. Nothing is uploaded again; the
    classification and the saliency map are reused when the options do not change them (`reused`
    says what was). The original analysis, its feedback and its images stay as they were."""
    user_id = current_user()
    analysis, record = rerun_analysis(user_id, owned_record(user_id, analysis_id), changes)
    store(user_id, analysis, record)
    return present(record)


@blp.route("/<string:analysis_id>/roi", methods=["POST"])
@blp.arguments(RoiCorrectionRequestSchema)
@blp.response(201, RoiSchema)
@blp.alt_response(400, schema=ApiErrorSchema)
@blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
@blp.alt_response(404, schema=ApiErrorSchema)
@blp.alt_response(422, schema=ApiErrorSchema, description="the prompt points at no lesion")
@blp.alt_response(501, schema=ApiErrorSchema, description="no ROI segmenter installed for the modality")
def roi(prompt: dict, analysis_id: str):
    """Correct an ROI with a box and/or positive and negative clicks; stored with the analysis."""
    record = owned_record(current_user(), analysis_id)
    stored = correct_roi(current_user(), record, prompt)
    return present_roi(analysis_id, stored)


@blp.route("/<string:analysis_id>/images/<string:name>")
@blp.doc(responses={200: {"description": "PNG image", "content": {"image/png": {}}}})
@blp.alt_response(401, schema=ApiErrorSchema, description=UNAUTHORIZED)
@blp.alt_response(404, schema=ApiErrorSchema)
def image(analysis_id: str, name: str):
    """A stored image of the caller's analysis, served only to its owner."""
    data = get_store().read_image(current_user(), analysis_id, name)
    if data is None:
        raise APIError(404, "not_found", "no such image for this user")
    response = Response(data, mimetype="image/png")
    response.headers["Cache-Control"] = "private, no-store"
    return response
