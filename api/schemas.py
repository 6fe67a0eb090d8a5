"""Marshmallow schemas for every request and response body; the OpenAPI document is built from them."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, missing, validate, validates_schema

from ml.cards import MODALITIES
from ml.pipeline import AnalysisOptions
from ml.saliency import GRADCAM_LAYERS

DEFAULTS = AnalysisOptions()  # the pipeline's defaults are the API's defaults

CLASSES = ("normal", "benign", "malignant")


class StrictSchema(Schema):
    class Meta:
        ordered = True


# Requests

class UploadSchema(StrictSchema):
    file = fields.Raw(
        required=True,
        metadata={"type": "string", "format": "binary",
                  "description": "PNG or JPEG, at most 10 MB; or a DICOM file, at most 50 MB by default "
                                 "(BRANET_MAX_DICOM_BYTES). The type is decided by content."},
    )


class AnalysisOptionsSchema(StrictSchema):
    """Options of an analysis; the ranges and defaults appear in the OpenAPI document."""

    extract_roi = fields.Boolean(load_default=False, metadata={"description": "find lesion ROIs and classify each"})
    saliency = fields.String(load_default=DEFAULTS.saliency, validate=validate.OneOf(("gradcam", "integrated_gradients", "none")),
                             metadata={"description": "saliency method; none turns saliency off"})
    saliency_layer = fields.String(load_default=DEFAULTS.saliency_layer, validate=validate.OneOf(GRADCAM_LAYERS),
                                   metadata={"description": "Grad-CAM's block: multiscale multiplies layer4's map by "
                                             "those of layers 3, 2 and 1 (sharper); layer3 is finer, layer4 coarser"})
    saliency_steps = fields.Integer(load_default=DEFAULTS.saliency_steps, validate=validate.Range(min=4, max=64),
                                    metadata={"description": "integration steps of integrated gradients"})
    roi_min_area = fields.Float(load_default=DEFAULTS.roi.min_area_fraction, validate=validate.Range(min=0.0, max=0.5),
                                metadata={"description": "smallest ROI, as a fraction of the image area"})
    roi_confidence = fields.Float(load_default=DEFAULTS.roi.confidence_threshold, validate=validate.Range(min=0.0, max=1.0),
                                  metadata={"description": "smallest mean lesion probability inside an ROI"})
    roi_max = fields.Integer(load_default=DEFAULTS.roi.max_rois, validate=validate.Range(min=1, max=20),
                             metadata={"description": "most ROIs returned, most confident first"})
    operating_point = fields.String(load_default=DEFAULTS.operating_point,
                                    validate=validate.OneOf(("screening", "balanced")),
                                    metadata={"description": "screening: sensitivity >= 0.95 for malignancy; "
                                              "balanced: maximum sensitivity + specificity"})
    dicom_frame = fields.Integer(load_default=DEFAULTS.dicom_frame, validate=validate.Range(min=0, max=10000),
                                 metadata={"description": "the frame of a multi-frame DICOM file to analyse (0-based, "
                                           "e.g. in an ultrasound cine loop); 400 when the file has no such "
                                           "frame; ignored for PNG and JPEG"})
    screen_crop = fields.Boolean(load_default=DEFAULTS.screen_crop,
                                 metadata={"description": "ultrasound: find the scan area of a scanner screenshot "
                                           "and analyse only it, with calipers and burned-in text inpainted "
                                           "(`scan_area`, `marks_removed`). Turn it on for screenshots of the scanner's "
                                           "screen: held out, their AUC for malignancy is 0.89 with it, 0.71 without; "
                                           "a bare scan gains nothing. Ignored for mammography"})


class AnalysisRequestSchema(UploadSchema, AnalysisOptionsSchema):
    modality = fields.String(required=True, validate=validate.OneOf(MODALITIES))


class RerunRequestSchema(AnalysisOptionsSchema):
    """New options for an analysis' stored image: the same fields and ranges as the upload's, each
    optional; a field left out keeps the original analysis' value. `dicom_frame` is not one of them
    (the frame was chosen at upload; only its pixels are stored)."""

    class Meta(StrictSchema.Meta):
        exclude = ("dicom_frame",)

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        field_obj.load_default = missing  # left out: the original analysis' value, not the default


class PageArgsSchema(StrictSchema):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class MaskEditSchema(StrictSchema):
    """A region drawn by the clinician: a PNG mask of the image's size, or polygons; not both."""

    png = fields.String(metadata={"description": "base64 PNG, the analysed image's size; non-zero marks the region"})
    polygons = fields.List(
        fields.List(fields.List(fields.Float(), validate=validate.Length(equal=2)), validate=validate.Length(min=3)),
        validate=validate.Length(min=1, max=50),
        metadata={"description": "polygons as [[x, y], ...] in image pixels"},
    )

    @validates_schema
    def exactly_one(self, data: dict, **kwargs) -> None:
        if ("png" in data) == ("polygons" in data):
            raise ValidationError("give either png or polygons")


class FeedbackRequestSchema(StrictSchema):
    label = fields.String(required=True, validate=validate.OneOf(CLASSES),
                          metadata={"description": "the correct label, in the clinician's judgement"})
    comment = fields.String(load_default="", validate=validate.Length(max=5000))
    missed_lesions = fields.Nested(MaskEditSchema, metadata={"description": "lesions the model missed"})
    ignore_regions = fields.Nested(MaskEditSchema,
                                   metadata={"description": "regions the model should not have used"})


class LegacyArgsSchema(StrictSchema):
    extract_roi = fields.Boolean(load_default=False)


# Responses

class ModelRefSchema(StrictSchema):
    name = fields.String(required=True)
    version = fields.String(required=True)


class PointSchema(StrictSchema):
    x = fields.Integer(required=True)
    y = fields.Integer(required=True)


class BoxSchema(StrictSchema):
    x0 = fields.Integer(required=True)
    y0 = fields.Integer(required=True)
    x1 = fields.Integer(required=True)
    y1 = fields.Integer(required=True)


class RiskSchema(StrictSchema):
    birads_category = fields.String(required=True, validate=validate.OneOf(("3", "4A", "4B", "4C", "5")),
                                    metadata={"description": "BI-RADS-like category from the calibrated p(malignant)"})
    likelihood_of_malignancy = fields.String(required=True, metadata={"description": "the ACR range of the category"})
    caution = fields.String(required=True)


class ImageSizeSchema(StrictSchema):
    width = fields.Integer(required=True)
    height = fields.Integer(required=True)


class SaliencySchema(StrictSchema):
    method = fields.String(required=True)
    target = fields.String(required=True, metadata={"description": "the class explained"})
    peak = fields.Nested(PointSchema, required=True, metadata={"description": "maximum, in image pixels"})
    grid = fields.List(fields.List(fields.Float()), required=True,
                       metadata={"description": "low-resolution map over the image (rows of 0..1 values)"})


class PromptPointSchema(StrictSchema):
    x = fields.Float(required=True)
    y = fields.Float(required=True)
    positive = fields.Boolean(load_default=True, metadata={"description": "false: a negative click (not lesion)"})


class RoiCorrectionRequestSchema(StrictSchema):
    """A clinician's prompt in image pixels: a box, clicks, or both."""

    box = fields.Nested(BoxSchema)
    points = fields.List(fields.Nested(PromptPointSchema), validate=validate.Length(min=1, max=20))
    operating_point = fields.String(load_default="screening", validate=validate.OneOf(("screening", "balanced")))

    @validates_schema
    def some_prompt(self, data: dict, **kwargs) -> None:
        if "box" not in data and "points" not in data:
            raise ValidationError("give a box, points, or both")
        box = data.get("box")
        if box and (box["x1"] < box["x0"] or box["y1"] < box["y0"]):
            raise ValidationError("the box must have x0 <= x1 and y0 <= y1", field_name="box")


class RoiSchema(StrictSchema):
    index = fields.Integer(required=True)
    source = fields.String(required=True, validate=validate.OneOf(("automatic", "correction")))
    box = fields.Nested(BoxSchema, required=True, metadata={"description": "inclusive, image pixels"})
    area = fields.Integer(required=True, metadata={"description": "pixels"})
    area_mm2 = fields.Float(allow_none=True, metadata={"description": "square millimetres, from the DICOM file's "
                                                       "pixel spacing; null when it is unknown"})
    confidence = fields.Float(required=True)
    label = fields.String(required=True, validate=validate.OneOf(CLASSES))
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    threshold = fields.Float(metadata={"description": "the ROI is malignant when its probability of malignancy reaches "
                                       "this: the threshold of ROI crops at the analysis' operating point, fitted "
                                       "apart from the whole image's (README, ROI classification)"})
    saliency = fields.Nested(SaliencySchema, allow_none=True)
    prompt = fields.Dict(metadata={"description": "the clinician's prompt, for corrections"})
    images = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class FeedbackSchema(StrictSchema):
    version = fields.Integer(required=True, metadata={"description": "1 for the first, then 2, ..."})
    label = fields.String(required=True)
    comment = fields.String(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    masks = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                        metadata={"description": "edited mask kind -> URL of its PNG"})


class AnalysisSchema(StrictSchema):
    id = fields.String(required=True)
    modality = fields.String(required=True, validate=validate.OneOf(MODALITIES))
    label = fields.String(required=True, validate=validate.OneOf(CLASSES))
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float(), required=True,
                                metadata={"description": "class -> probability; they sum to 1"})
    threshold = fields.Float(required=True,
                             metadata={"description": "p(malignant) at or above which the label is malignant"})
    extract_roi = fields.Boolean(required=True)
    operating_point = fields.String(required=True)
    risk = fields.Nested(RiskSchema, required=True)
    low_confidence = fields.Boolean(required=True,
                                    metadata={"description": "the model's cross-validated accuracy is low: a weak hint only"})
    reliability_note = fields.String(required=True)
    options = fields.Dict(required=True, metadata={"description": "the options the analysis ran with"})
    model = fields.Nested(ModelRefSchema, required=True)
    segmenter = fields.Nested(ModelRefSchema, allow_none=True)
    saliency = fields.Nested(SaliencySchema, allow_none=True)
    rois = fields.List(fields.Nested(RoiSchema), allow_none=True,
                       metadata={"description": "null unless extract_roi; empty when no lesion was found"})
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    duration_ms = fields.Float(required=True)
    image = fields.Nested(ImageSizeSchema, required=True)
    pixel_spacing_mm = fields.List(fields.Float(), allow_none=True,
                                   metadata={"description": "[row, column] spacing in mm per pixel, from the DICOM "
                                             "file (Pixel Spacing or its ultrasound regions); null when unknown"})
    images = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "image name -> URL, served to the owner only"})
    feedback = fields.List(fields.Nested(FeedbackSchema))
    scan_area = fields.Nested(BoxSchema, allow_none=True,
                              metadata={"description": "screen_crop: the scan area the models saw (inclusive, image "
                                        "pixels); null without it. ROI boxes, masks and saliency stay in the whole "
                                        "image's pixels (saliency is zero outside the scan area)"})
    marks_removed = fields.Integer(allow_none=True,
                                   metadata={"description": "screen_crop: pixels of calipers and burned-in text "
                                             "inpainted inside the scan area; null without it"})
    rerun_of = fields.String(metadata={"description": "reruns only: the analysis whose uploaded image was "
                                       "analysed again (the first one, when a rerun is rerun)"})
    reused = fields.List(fields.String(validate=validate.OneOf(("image", "classification", "saliency"))),
                         metadata={"description": "reruns only: what was taken from the original analysis "
                                   "instead of being computed again"})


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
    kind = fields.String(required=True, validate=validate.OneOf(("classifier", "segmenter")))
    modality = fields.String(required=True)
    name = fields.String(required=True)
    version = fields.String(required=True)
    classes = fields.List(fields.String(), metadata={"description": "classifiers only"})
    threshold = fields.Float(metadata={"description": "classifiers only: the screening threshold"})
    thresholds = fields.Dict(keys=fields.String(), values=fields.Float(),
                             metadata={"description": "classifiers only: threshold per operating point"})
    low_confidence = fields.Boolean(metadata={"description": "classifiers only"})
    automatic_rois = fields.Boolean(metadata={"description": "segmenters only: whether it finds ROIs without a "
                                              "prompt (extract_roi); false: it answers ROI corrections only"})
    metrics = fields.Dict(required=True)
    intended_use = fields.String(required=True)
    served = fields.Boolean(required=True, metadata={"description": "whether analyses use this model now"})
    parent = fields.Nested(ModelRefSchema, allow_none=True,
                           metadata={"description": "fine-tuned classifiers: the model they were fine-tuned from"})
    fine_tuning = fields.Dict(metadata={"description": "fine-tuned classifiers: the feedback data set and recipe"})


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


# Documented with every 401 of the v1 routes.
UNAUTHORIZED = "missing or invalid ID token (Firebase mode)"

# Documented with every 429 (rate limit), which always carries it.
RETRY_AFTER = {"Retry-After": {"description": "seconds until the rate limit lets the caller in again",
                               "required": True, "schema": {"type": "integer", "minimum": 0}}}


class ApiErrorSchema(StrictSchema):
    error = fields.Nested(ApiErrorDetailSchema, required=True)
