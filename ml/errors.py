"""Domain errors raised by `ml`; the HTTP layer maps each kind to a status code."""


class MLError(Exception):
    """Base class: `code` is a stable machine-readable identifier."""

    code = "ml_error"


class UnsupportedImageType(MLError):
    """The bytes are not a PNG or JPEG image (checked by content, not by name)."""

    code = "unsupported_media_type"


class InvalidImage(MLError):
    """The bytes claim to be an image but cannot be decoded (truncated, corrupt, empty)."""

    code = "invalid_image"


class ImageTooLarge(MLError):
    """The image's dimensions are absurd or it is a decompression bomb."""

    code = "image_too_large"


class UnsupportedModality(MLError):
    code = "unsupported_modality"


class FeatureUnavailable(MLError):
    """The request asks for something this build cannot do yet (e.g. ROI extraction)."""

    code = "feature_unavailable"


class ModelUnavailable(MLError):
    """A model is missing, fails its checksum, or failed while running."""

    code = "model_unavailable"
