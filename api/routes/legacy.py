"""The existing BraNet app's route, with its envelope, served by the same pipeline and store."""
from __future__ import annotations

from flask import request

from api.auth import current_user
from api.errors import APIError
from api.extensions import Blueprint
from api.schemas import RETRY_AFTER, AnalysisOptionsSchema, LegacyArgsSchema, LegacyEnvelopeSchema, UploadSchema
from api.service import analyse, read_upload, store
from ml.cards import MODALITIES

blp = Blueprint("legacy", __name__, description="The route the existing mobile app calls")


@blp.route("/evaluate-image/<string:modality>/", methods=["POST"])
@blp.arguments(LegacyArgsSchema, location="query")
# The file part is read by hand so that a missing one answers the app's own "NO DATA UPLOAD".
@blp.doc(requestBody={"required": True, "content": {"multipart/form-data": {"schema": UploadSchema}}})
@blp.response(200, LegacyEnvelopeSchema)
@blp.alt_response(400, schema=LegacyEnvelopeSchema)
@blp.alt_response(401, schema=LegacyEnvelopeSchema)
@blp.alt_response(413, schema=LegacyEnvelopeSchema)
@blp.alt_response(415, schema=LegacyEnvelopeSchema)
@blp.alt_response(422, schema=LegacyEnvelopeSchema, description="NO ROI FOUND, or NO IMAGE CONTENT (a blank image)")
@blp.alt_response(429, schema=LegacyEnvelopeSchema, headers=RETRY_AFTER, description="over the rate limit")
@blp.alt_response(501, schema=LegacyEnvelopeSchema)
@blp.alt_response(503, schema=LegacyEnvelopeSchema)
def evaluate_image(args: dict, modality: str):
    """Analyse an image; the app then reads the result from its history."""
    user_id = current_user()
    modality = modality.lower()
    if modality not in MODALITIES:
        raise APIError(400, "unsupported_modality", f"modality must be one of {list(MODALITIES)}")
    data = read_upload(request.files.get("file"))
    options = AnalysisOptionsSchema().load({"extract_roi": args["extract_roi"]})  # the rest at defaults
    analysis, record = analyse(data, modality, options)
    if analysis.rois == []:
        # The app shows its "no ROI found" alert; there is nothing for it to read, so nothing is stored.
        raise APIError(422, "no_roi_found", "ROI extraction found no lesion in the image")
    store(user_id, analysis, record)
    return {"result": "OK", "aditionalInfo": None, "idResult": record["id"]}
