"""One upload, start to end: bytes -> checked image -> classification, ROIs, saliency -> `Analysis`.

Everything returned is plain Python and numpy; the HTTP layer stores and renders it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ml import overlays
from ml.cards import MODALITY_MODELS, SEGMENTER_MODELS, finds_rois_without_prompt
from ml.classifier import Classifier, Prediction
from ml.decision import MALIGNANT, decide
from ml.errors import FeatureUnavailable, MLError, ModelUnavailable, UnsupportedModality
from ml.images import DecodedImage, decode, require_content
from ml.risk import RiskCategory, birads_category
from ml.saliency import GRADCAM_LAYERS, GRID_SIDE, Explainer, SaliencyMap
from ml.screen import Box, clean_scan
from ml.segmenter.build import load_carded_segmenter, load_segmenter
from ml.segmenter.roi import Roi, RoiSettings, Segmenter


@contextmanager
def model_failures(what: str):
    """Any failure inside a model surfaces as ModelUnavailable: an error, never a label."""
    try:
        yield
    except MLError:
        raise
    except Exception as error:
        raise ModelUnavailable(f"{what} failed: {error}") from error


@dataclass(frozen=True)
class AnalysisOptions:
    extract_roi: bool = False
    roi: RoiSettings = RoiSettings()
    saliency: str | None = "gradcam"  # None: no saliency
    saliency_layer: str = GRADCAM_LAYERS[0]  # Grad-CAM's block, or "multiscale"
    saliency_steps: int = 16  # integrated gradients' steps
    operating_point: str = "screening"  # or "balanced"
    dicom_frame: int = 0  # the frame of a multi-frame DICOM file (0-based)
    # Ultrasound: crop to the scan area and inpaint calipers and text first. Off by default: with
    # the shipped networks (trained on uncleaned images) it measured no better out of fold.
    screen_crop: bool = False


@dataclass(frozen=True)
class SaliencyFinding:
    method: str
    target: str
    peak: tuple[int, int]
    grid: list[list[float]]

    @classmethod
    def of(cls, saliency: SaliencyMap) -> "SaliencyFinding":
        return cls(saliency.method, saliency.target, saliency.peak, np.round(saliency.grid, 3).tolist())


@dataclass(frozen=True)
class RoiFinding:
    index: int
    box: tuple[int, int, int, int]
    area: int
    confidence: float
    label: str
    probabilities: dict[str, float]
    threshold: float  # the ROI crops' malignancy threshold at the analysis' operating point
    saliency: SaliencyFinding | None


@dataclass(frozen=True)
class Analysis:
    modality: str
    label: str
    probabilities: dict[str, float]
    threshold: float
    operating_point: str
    model_name: str
    model_version: str
    image: DecodedImage
    stage_ms: dict[str, float]
    risk: RiskCategory | None = None
    reliability: dict = field(default_factory=dict)  # the model card's low_confidence flag and note
    saliency: SaliencyFinding | None = None
    rois: list[RoiFinding] | None = None  # None when not asked for; [] when none was found
    segmenter: dict | None = None  # name and version
    images: dict[str, bytes] = field(default_factory=dict)  # name -> PNG, "original.png" first
    reused: tuple[str, ...] = ()  # the stages taken from an earlier analysis (`Reuse`) rather than computed
    scan_area: Box | None = None  # with screen_crop: the scan area the models saw, in image pixels
    marks_removed: int | None = None  # with screen_crop: pixels of calipers and text inpainted


@dataclass(frozen=True)
class Reuse:
    """What an earlier analysis of the same image computed, for a rerun with other options.

    Used only when `model` (name, version) is the classifier serving now: then the image's
    probabilities are taken as they are (the operating point only moves the threshold), and its
    saliency when the method, its parameters and the explained class are the same."""

    model: tuple[str, str]
    probabilities: dict[str, float]
    options: AnalysisOptions
    saliency: SaliencyFinding | None = None
    saliency_png: bytes | None = None  # its overlay


def _same_saliency(a: AnalysisOptions, b: AnalysisOptions) -> bool:
    """Whether two option sets ask for the same saliency map (only the method's own parameters count)."""
    if a.saliency != b.saliency:
        return False
    if a.saliency == "gradcam":
        return a.saliency_layer == b.saliency_layer
    return a.saliency != "integrated_gradients" or a.saliency_steps == b.saliency_steps


def _in_image(roi: Roi, area: Box, shape: tuple[int, int]) -> Roi:
    """An ROI found inside the scan area, in the whole image's pixels."""
    x0, y0, x1, y1 = roi.box
    mask = np.zeros(shape, dtype=bool)
    mask[area.slices()] = roi.mask
    return replace(roi, box=(x0 + area.x0, y0 + area.y0, x1 + area.x0, y1 + area.y0), mask=mask)


def _saliency_in_image(heat: SaliencyMap, area: Box, shape: tuple[int, int]) -> SaliencyMap:
    """A saliency map of the scan area, placed in the whole image (zero outside the scan area);
    its grid and peak are over the whole image, as without cropping."""
    full = np.zeros(shape, dtype=np.float32)
    full[area.slices()] = heat.full
    scale = GRID_SIDE / max(shape)
    grid_shape = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
    grid = F.adaptive_avg_pool2d(torch.from_numpy(full)[None, None], grid_shape)[0, 0].numpy()
    return replace(heat, full=full, grid=grid, peak=(heat.peak[0] + area.x0, heat.peak[1] + area.y0))


@dataclass
class ModalityModels:
    classifier: Classifier
    explainer: Explainer
    segmenter: Segmenter | None = None
    segmenter_card: dict | None = None

    def check_finds_rois(self, modality: str) -> None:
        """Raise FeatureUnavailable unless the segmenter finds lesions without a prompt. One whose
        automatic mode failed its held-out validation (card: `automatic_rois` false) serves prompt
        corrections only: its "no ROI found" would read as a breast without a finding."""
        if self.segmenter is None:
            raise FeatureUnavailable(f"no ROI segmenter is installed for {modality}")
        if not finds_rois_without_prompt(self.segmenter_card or {}):
            raise FeatureUnavailable(f"the {modality} segmenter finds no lesion without a prompt: it answers "
                                     "only a box or clicks on a lesion (an ROI correction)")


class Analyzer:
    """Holds each modality's models, loaded once per process."""

    def __init__(self, models: dict[str, ModalityModels]) -> None:
        self.models = models

    @classmethod
    def from_weights(cls, weights_dir: Path, official_sam: tuple[str, Path] | None = None,
                     classifiers: dict[str, str] | None = None) -> "Analyzer":
        """Load every modality's classifier and, where its card exists, its segmenter.

        `classifiers` = {modality: card name} serves another classifier than the shipped one
        (`MODALITY_MODELS`), e.g. a fine-tuned version.

        `official_sam` = (architecture, checkpoint) runs an official SAM checkpoint for every
        modality instead of our own segmenters.
        """
        models = {}
        for modality, name in MODALITY_MODELS.items():
            classifier = Classifier.load(weights_dir, (classifiers or {}).get(modality, name))
            entry = ModalityModels(classifier=classifier, explainer=Explainer.for_classifier(classifier))
            if official_sam is not None:
                architecture, checkpoint = official_sam
                entry.segmenter = Segmenter(load_segmenter(architecture, Path(checkpoint)))
                entry.segmenter_card = {"name": f"sam-{architecture}", "version": Path(checkpoint).name}
            elif (Path(weights_dir) / f"{SEGMENTER_MODELS[modality]}.json").exists():
                model, entry.segmenter_card = load_carded_segmenter(weights_dir, SEGMENTER_MODELS[modality])
                entry.segmenter = Segmenter.for_card(model, entry.segmenter_card)
            models[modality] = entry
        return cls(models)

    def model_cards(self) -> list[dict]:
        cards = []
        for entry in self.models.values():
            cards.append(entry.classifier.card)
            if entry.segmenter_card and "modality" in entry.segmenter_card:
                cards.append(entry.segmenter_card)
        return cards

    def analyse(self, data: bytes, modality: str, options: AnalysisOptions = AnalysisOptions(),
                reuse: Reuse | None = None) -> Analysis:
        """Decode, classify, and optionally find ROIs and explain. Raises an `MLError`;
        a failure is never a result. `reuse`: an earlier analysis of the same image (a rerun)."""
        if modality not in self.models:
            raise UnsupportedModality(f"modality must be one of {sorted(self.models)}, not {modality!r}")
        models = self.models[modality]
        if options.extract_roi:
            models.check_finds_rois(modality)
        stage_ms: dict[str, float] = {}

        @contextmanager
        def timed(name: str):
            started = time.perf_counter()
            try:
                yield
            finally:
                elapsed = (time.perf_counter() - started) * 1000
                stage_ms[name] = round(stage_ms.get(name, 0.0) + elapsed, 2)

        @contextmanager
        def stage(name: str):
            with timed(name), model_failures(name):
                yield

        with timed("decode"):
            image = decode(data, modality, options.dicom_frame)
            require_content(image.gray)
        gray = image.gray
        # What the models see: with screen_crop (ultrasound), the scan area with its marks
        # inpainted; every position returned is mapped back to the image's own pixels.
        cleaned = None
        if options.screen_crop and modality == "ultrasound":
            with stage("screen"):
                cleaned = clean_scan(gray)
        seen = cleaned.gray if cleaned is not None else gray
        classifier = models.classifier
        if reuse is not None and (reuse.model != (classifier.name, classifier.version)
                                  or reuse.options.screen_crop != options.screen_crop):
            reuse = None  # computed by another model, or on other pixels
        reused: list[str] = []
        with stage("classify"):
            if reuse is not None:
                probabilities = dict(reuse.probabilities)
                prediction = Prediction(decide(probabilities, classifier.thresholds[options.operating_point]),
                                        probabilities)
                reused.append("classification")
            else:
                (prediction,) = classifier.predict([seen], options.operating_point)
        images = {"original.png": image.png}
        if cleaned is not None:
            images["scan.png"] = overlays.png(cleaned.gray)  # the pixels the models saw
        label = prediction.label

        rois = None
        if options.extract_roi:
            with stage("roi"):
                found = models.segmenter.find_rois(seen, options.roi)
                crops = [classifier.roi_crop(seen, roi.box) for roi in found]
                if cleaned is not None:
                    found = [_in_image(roi, cleaned.area, gray.shape) for roi in found]
                roi_predictions = classifier.predict_rois(crops, options.operating_point)
            if any(p.label == MALIGNANT for p in roi_predictions):
                label = MALIGNANT  # the image is malignant when any of its lesions is

        saliency = None
        explain = lambda picture, target: models.explainer.explain(
            picture, target, options.saliency, options.saliency_layer, options.saliency_steps)
        if (options.saliency and reuse is not None and reuse.saliency is not None and reuse.saliency_png
                and reuse.saliency.target == label and _same_saliency(options, reuse.options)):
            saliency, images["saliency.png"] = reuse.saliency, reuse.saliency_png
            reused.append("saliency")
        elif options.saliency:
            with stage("saliency"):
                heat = explain(seen, label)
                if cleaned is not None:
                    heat = _saliency_in_image(heat, cleaned.area, gray.shape)
                saliency = SaliencyFinding.of(heat)
                images["saliency.png"] = overlays.png(overlays.heat_overlay(gray, heat.full))

        if options.extract_roi:
            rois = []
            roi_threshold = classifier.roi_calibration.thresholds[options.operating_point]
            for index, (roi, crop, roi_prediction) in enumerate(zip(found, crops, roi_predictions)):
                roi_saliency = None
                if options.saliency:
                    with stage("saliency"):
                        roi_heat = explain(crop, roi_prediction.label)
                        roi_saliency = SaliencyFinding.of(roi_heat)
                        images[f"roi{index}_saliency.png"] = overlays.png(overlays.heat_overlay(crop, roi_heat.full))
                images[f"roi{index}.png"] = overlays.png(crop)
                images[f"roi{index}_mask.png"] = overlays.png((roi.mask * 255).astype(np.uint8))
                rois.append(RoiFinding(index, roi.box, roi.area, roi.confidence, roi_prediction.label,
                                       roi_prediction.probabilities, roi_threshold, roi_saliency))
            if rois:
                images["contours.png"] = overlays.png(
                    overlays.contours(gray, [roi.mask for roi in found], [r.label for r in rois]))

        segmenter_card = models.segmenter_card if options.extract_roi else None
        return Analysis(
            modality=modality,
            label=label,
            probabilities=prediction.probabilities,
            threshold=classifier.thresholds[options.operating_point],
            operating_point=options.operating_point,
            risk=birads_category(prediction.probabilities[MALIGNANT]),
            reliability=classifier.reliability,
            model_name=classifier.name,
            model_version=classifier.version,
            image=image,
            stage_ms=stage_ms,
            saliency=saliency,
            rois=rois,
            segmenter={"name": segmenter_card["name"], "version": segmenter_card["version"]} if segmenter_card else None,
            images=images,
            reused=tuple(reused),
            scan_area=cleaned.area if cleaned is not None else None,
            marks_removed=cleaned.marked_pixels if cleaned is not None else None,
        )

    def correct_roi(self, image_png: bytes, modality: str, box: np.ndarray | None, points: np.ndarray | None,
                    labels: np.ndarray | None, operating_point: str = "screening",
                    screen_crop: bool = False) -> tuple[RoiFinding, dict[str, bytes]] | None:
        """A clinician's box and/or clicks -> the ROI they point at, classified, with its crop and
        mask PNGs (named by suffix: ".png", "_mask.png"); None when the prompt finds no lesion.
        The image embedding is reused from the analysis while it is in the segmenter's cache.
        `screen_crop` (the analysis' option): as in the analysis, the ROI is found and classified
        in the scan area with its calipers and text inpainted; its box and mask come back in the
        image's own pixels."""
        models = self.models[modality]
        if models.segmenter is None:
            raise FeatureUnavailable(f"no ROI segmenter is installed for {modality}")
        gray = decode(image_png).gray
        cleaned = clean_scan(gray) if screen_crop and modality == "ultrasound" else None
        seen = gray
        if cleaned is not None:  # the prompt in the scan area's pixels
            seen, offset = cleaned.gray, np.array([cleaned.area.x0, cleaned.area.y0], dtype=np.float32)
            box = None if box is None else box - np.tile(offset, 2)
            points = None if points is None else points - offset
        with model_failures("ROI correction"):
            roi = models.segmenter.prompted_roi(seen, box, points, labels)
            if roi is None:
                return None
            crop = models.classifier.roi_crop(seen, roi.box)
            (prediction,) = models.classifier.predict_rois([crop], operating_point)
        if cleaned is not None:
            roi = _in_image(roi, cleaned.area, gray.shape)
        finding = RoiFinding(0, roi.box, roi.area, roi.confidence, prediction.label, prediction.probabilities,
                             models.classifier.roi_calibration.thresholds[operating_point], None)
        return finding, {".png": overlays.png(crop), "_mask.png": overlays.png((roi.mask * 255).astype(np.uint8))}
