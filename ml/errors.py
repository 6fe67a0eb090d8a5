"""Domain errors raised by `ml`; the HTTP layer maps each kind to a status code."""


class MLError(Exception):
    """Base class: `code` is a stable machine-readable identifier."""

    code = "ml_error"


class UnsupportedImageType(MLError):
    """The bytes are not a PNG or JPEG image (checked by content, not by name), or a DICOM file
    this build cannot decode (its transfer syntax, photometric interpretation or bit depth)."""

    code = "unsupported_media_type"


class InvalidImage(MLError):
    """The bytes claim to be an image but cannot be decoded (truncated, corrupt, empty)."""

    code = "invalid_image"


class FrameOutOfRange(InvalidImage):
    """The frame asked for is not in the multi-frame DICOM file."""

    code = "frame_out_of_range"


class NoImageContent(MLError):
    """The image decodes but shows nothing (blank, one flat grey, a pixel or two): no model can
    say anything about it, and a probability would read as a finding."""

    code = "no_image_content"


class ImageTooLarge(MLError):
    """The image's dimensions are absurd or it is a decompression bomb."""

    code = "image_too_large"


class UnsupportedModality(MLError):
    code = "unsupported_modality"


class ModalityMismatch(MLError):
    """A DICOM file's own Modality is not the modality the analysis was asked for."""

    code = "modality_mismatch"


class FeatureUnavailable(MLError):
    """The request asks for something this build cannot do yet (e.g. ROI extraction)."""

    code = "feature_unavailable"


class ModelUnavailable(MLError):
    """A model is missing, fails its checksum, or failed while running."""

    code = "model_unavailable"


class WeightsTampered(ModelUnavailable):
    """A weights file does not match the sha256 in its model card. Unlike a missing model, which
    leaves the service running but not ready, this is never served around: the service refuses to
    start, so that an operator sees it at deployment."""
