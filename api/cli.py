"""`flask --app api weights ...`: check the weights against their model cards; fetch SAM checkpoints."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

import click
import requests
from flask import current_app
from flask.cli import AppGroup

from ml.cards import MODALITY_MODELS, read_card, sha256_of
from ml.errors import ModelUnavailable

SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
# The official file names end with the first hex digits of the file's sha256.
SAM_CHECKPOINTS = {
    "sam-vit-b": "sam_vit_b_01ec64.pth",
    "sam-vit-l": "sam_vit_l_0b3195.pth",
    "sam-vit-h": "sam_vit_h_4b8939.pth",
}
DOWNLOAD_TIMEOUT = (10, 60)  # seconds to connect, and at most between two chunks
CHUNK_BYTES = 1 << 20

weights = AppGroup("weights", help="Check the model weights against their cards; fetch checkpoints.")


def check_model(weights_dir: Path, name: str) -> tuple[str, str]:
    """(status, detail) of one model: OK, MISSING (card or file), INVALID (card) or MISMATCH."""
    if not (weights_dir / f"{name}.json").is_file():
        return "MISSING", f"no model card {name}.json"
    try:
        card = read_card(weights_dir, name)
    except ModelUnavailable as error:
        return "INVALID", str(error)
    if not isinstance(card, dict) or not {"weights_file", "sha256"} <= card.keys():
        return "INVALID", f"model card {name}.json has no weights_file and sha256"
    path = weights_dir / card["weights_file"]
    if not path.is_file():
        return "MISSING", f"{card['weights_file']} does not exist"
    actual = sha256_of(path)
    if actual != card["sha256"]:
        return "MISMATCH", f"{card['weights_file']} has sha256 {actual}, its card says {card['sha256']}"
    return "OK", f"{card['weights_file']} sha256 {actual}"


@weights.command("verify")
def verify() -> None:
    """Check every model card's weights file against the card's sha256 (and that both models exist)."""
    weights_dir = Path(current_app.config["WEIGHTS_DIR"])
    names = sorted({card.stem for card in weights_dir.glob("*.json")} | set(MODALITY_MODELS.values()))
    failed = 0
    for name in names:
        status, detail = check_model(weights_dir, name)
        failed += status != "OK"
        click.echo(f"{status:<8} {name}: {detail}")
    if failed:
        raise click.ClickException(
            f"{failed} of {len(names)} models in {weights_dir} failed verification; the service refuses them"
        )
    click.echo(f"all {len(names)} models in {weights_dir} match their cards")


@weights.command("fetch")
@click.argument("name", type=click.Choice(sorted(SAM_CHECKPOINTS)))
def fetch(name: str) -> None:
    """Download an official Segment Anything checkpoint into the weights folder.

    The file is streamed to a hidden temporary file beside its target, checked against the
    sha256 prefix in its official name, then renamed into place: a failed or interrupted
    download leaves nothing behind.
    """
    filename = SAM_CHECKPOINTS[name]
    sha256_prefix = filename.removesuffix(".pth").rsplit("_", 1)[1]
    weights_dir = Path(current_app.config["WEIGHTS_DIR"])
    target = weights_dir / filename
    if target.is_file() and sha256_of(target).startswith(sha256_prefix):
        click.echo(f"{target} is already present and its sha256 starts with {sha256_prefix}")
        return
    weights_dir.mkdir(parents=True, exist_ok=True)
    url = SAM_BASE_URL + filename
    handle = tempfile.NamedTemporaryFile(dir=weights_dir, prefix=f".{filename}.", suffix=".part", delete=False)
    partial = Path(handle.name)
    try:
        with handle:
            digest = _download(url, handle)
        if not digest.startswith(sha256_prefix):
            raise click.ClickException(
                f"{url} has sha256 {digest}, not starting with {sha256_prefix}; the download was discarded"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    click.echo(f"saved {target} (sha256 {digest})")


def _download(url: str, out: BinaryIO) -> str:
    """Stream `url` into `out`; its sha256. Any network failure is one line, no traceback."""
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT) as response:
            response.raise_for_status()
            size = int(response.headers.get("Content-Length") or 0)
            with click.progressbar(length=size, label=f"downloading {url}", file=sys.stderr) as progress:
                for chunk in response.iter_content(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
    except requests.RequestException as error:
        raise click.ClickException(f"cannot download {url}: {_reason(error)}") from None
    return digest.hexdigest()


def _reason(error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        connect, read = DOWNLOAD_TIMEOUT
        return f"timed out ({connect} s to connect, {read} s between chunks)"
    if isinstance(error, requests.ConnectionError):
        return "the host cannot be reached (is there internet access from this machine?)"
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"the server answered HTTP {error.response.status_code}"
    return type(error).__name__
