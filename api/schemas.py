"""Marshmallow schemas for every request and response body; the OpenAPI document is built from them."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from ml.cards import MODALITIES

CLASSES = ("normal", "benign", "malignant")


class StrictSchema(Schema):
    class Meta:
        ordered = True


# Requests

class UploadSchema(StrictSchema):
    file = fields.Raw(
        required=True,
        metadata={"type": "string", "format": "binary", "description": "PNG or JPEG, at most 10 MB"},
    )


class AnalysisRequestSchema(UploadSchema):
    modality = fields.String(required=True, validate=validate.OneOf(MODALITIES))
    extract_roi = fields.Boolean(load_default=False)


class PageArgsSchema(StrictSchema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class FeedbackRequestSchema(StrictSchema):
    label = fields.String(required=True, validate=validate.OneOf(CLASSES),
                          metadata={"description": "the correct label, in the clinician's judgement"})
    comment = fields.String(load_default="", validate=validate.Length(max=5000))


class LegacyArgsSchema(StrictSchema):
    extract_roi = fields.Boolean(load_default=False)


# Responses

class ModelRefSchema(StrictSchema):
    name = fields.String(required=True)
    version = fields.String(required=True)


class FeedbackSchema(StrictSchema):
    version = fields.Integer(required=True, metadata={"description": "1 for the first, then 2, ..."})
    label = fields.String(required=True)
    comment = fields.String(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})


class AnalysisSchema(StrictSchema):
    id = fields.String(required=True)
    modality = fields.String(required=True, validate=validate.OneOf(MODALITIES))
    label = fields.String(required=True, validate=validate.OneOf(CLASSES))
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float(), required=True,
                                metadata={"description": "class -> probability; they sum to 1"})
    threshold = fields.Float(required=True,
                             metadata={"description": "p(malignant) at or above which the label is malignant"})
    extract_roi = fields.Boolean(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    duration_ms = fields.Float(required=True)
    images = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "image name -> URL, served to the owner only"})
    feedback = fields.List(fields.Nested(FeedbackSchema))


class AnalysisPageSchema(StrictSchema):
    items = fields.List(fields.Nested(AnalysisSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class HealthSchema(StrictSchema):
    status = fields.String(required=True)
    auth_mode = fields.String(required=True, validate=validate.OneOf(("local", "firebase")))
    message = fields.String()


class ReadySchema(StrictSchema):
    ready = fields.Boolean(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class ModelCardSchema(StrictSchema):
    modality = fields.String(required=True)
    name = fields.String(required=True)
    version = fields.String(required=True)
    classes = fields.List(fields.String(), required=True)
    threshold = fields.Float(required=True)
    metrics = fields.Dict(required=True)
    intended_use = fields.String(required=True)


class ModelListSchema(StrictSchema):
    models = fields.List(fields.Nested(ModelCardSchema), required=True)


class LegacyEnvelopeSchema(StrictSchema):
    result = fields.String(required=True, validate=validate.OneOf(("OK", "ERROR")))
    aditionalInfo = fields.String(allow_none=True, required=True)
    idResult = fields.String(allow_none=True, required=True)


class ApiErrorDetailSchema(StrictSchema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class ApiErrorSchema(StrictSchema):
    error = fields.Nested(ApiErrorDetailSchema, required=True)
