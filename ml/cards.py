"""Model cards: the JSON file beside each weights file, and the checksum that binds them."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from ml.errors import ModelUnavailable, WeightsTampered

# The model each modality serves, by card name (weights/<name>.json).
MODALITY_MODELS = {
    "ultrasound": "branet-us-resnet18",
    "mammography": "branet-mg-resnet18",
}
MODALITIES = tuple(MODALITY_MODELS)
# The lesion segmenter each modality serves, when its card is present.
SEGMENTER_MODELS = {
    "ultrasound": "branet-us-sam-small",
    "mammography": "branet-mg-sam-small",
}


def finds_rois_without_prompt(segmenter_card: dict) -> bool:
    """Whether a segmenter's automatic mode passed its held-out validation (`ml.segmenter.train`
    writes `automatic_rois`); a card without the field, from before it was written, finds ROIs."""
    return segmenter_card.get("automatic_rois", True)


LICENCES = {
    "busbra": "BUS-BRA dataset licence (permissive, MIT-style); cite Gomez-Flores et al., "
    "Medical Physics 2023",
    "busi": "CC0 1.0; cite Al-Dhabyani et al., Data in Brief 28 (2020) 104863",
    "mias": "MIAS licence: research use only, no rent, lease or sale; cite Suckling et al., "
    "The Mammographic Image Analysis Society digital mammogram database, 1994",
}
INTENDED_USE = (
    "Decision support for clinicians reading breast images, not a diagnosis. Every result must be "
    "reviewed by a qualified clinician."
)


def provenance(weights_path: Path, datasets: list[str]) -> dict:
    """The fields every model card ends with: data and licences, intended use, the weights' checksum."""
    return {
        "data": {name: LICENCES[name] for name in datasets},
        "intended_use": INTENDED_USE,
        "weights_file": weights_path.name,
        "sha256": sha256_of(weights_path),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(weights_dir: Path, name: str) -> dict:
    path = Path(weights_dir) / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelUnavailable(f"model card {path} is missing") from None
    except json.JSONDecodeError as error:
        raise ModelUnavailable(f"model card {path} is not valid JSON: {error}") from None


def verified_weights_path(weights_dir: Path, card: dict) -> Path:
    """The weights file named by the card, after checking its sha256 against the card."""
    path = Path(weights_dir) / card["weights_file"]
    if not path.is_file():
        raise ModelUnavailable(f"weights file {path} is missing")
    actual = sha256_of(path)
    if actual != card["sha256"]:
        raise WeightsTampered(
            f"weights file {path} has sha256 {actual}, its card says {card['sha256']}; refusing it"
        )
    return path


def card_for_weights(weights: Path) -> dict:
    """The card in the weights file's folder that names it (`weights_file`)."""
    weights = Path(weights)
    for path in sorted(weights.parent.glob("*.json")):
        try:
            card = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(card, dict) and card.get("weights_file") == weights.name:
            return card
    raise ModelUnavailable(f"no model card in {weights.parent} names {weights.name}")


def available_cards(weights_dir: Path) -> list[dict]:
    """Every model card in the folder whose weights file exists and matches its sha256, by name:
    the shipped models and their fine-tuned versions. Unreadable or failing cards are left out
    (`flask weights verify` names them)."""
    cards = []
    for path in sorted(Path(weights_dir).glob("*.json")):
        try:
            card = json.loads(path.read_text())
            if isinstance(card, dict) and {"name", "version", "modality", "weights_file", "sha256"} <= card.keys():
                verified_weights_path(weights_dir, card)
                cards.append(card)
        except (OSError, json.JSONDecodeError, ModelUnavailable):
            continue
    return cards


def write_card(weights_dir: Path, card: dict) -> Path:
    path = Path(weights_dir) / f"{card['name']}.json"
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path
