"""The storage interface: records of analyses, their images, and clinicians' feedback.

Records are plain JSON-able dicts shaped like the v1 analysis (`id`, `created_at` ISO 8601 UTC,
...). Every method takes the owner's user id; an analysis is invisible to anyone else, and a
soft-deleted analysis is invisible to everyone. Implementations: `SQLiteStore` (embedded default)
and, for production, a Firebase one.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator


class StoreError(Exception):
    """The store could not complete an operation; nothing was left half-written. `reason`:
    `disk_full`, `read_only` or `unavailable` (anything else), for the API's answer."""

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class Store(ABC):
    @abstractmethod
    def save_analysis(self, owner: str, record: dict, images: dict[str, bytes]) -> None:
        """Persist a record and its images (name -> PNG bytes) all together, or nothing."""

    @abstractmethod
    def get_analysis(self, owner: str, analysis_id: str) -> dict | None:
        """The active record with its `feedback` list (oldest first), or None."""

    @abstractmethod
    def list_analyses(self, owner: str, limit: int, offset: int) -> tuple[list[dict], int]:
        """A page of the owner's active records, newest first, and how many there are in all."""

    @abstractmethod
    def deactivate(self, owner: str, analysis_id: str) -> bool:
        """Soft delete, as the app does. False when there was no such active analysis."""

    @abstractmethod
    def add_feedback(self, owner: str, analysis_id: str, feedback: dict,
                     masks: dict[str, bytes] | None = None) -> dict | None:
        """Append feedback (never overwriting earlier feedback) with its edited masks (kind -> PNG),
        all together or nothing. Returns it with its `version` and `masks` (kind -> image name)."""

    @abstractmethod
    def add_roi(self, owner: str, analysis_id: str, roi: dict, images: dict[str, bytes], label: str) -> dict | None:
        """Append an ROI (e.g. a clinician's correction) to the analysis with its images (name suffix
        -> PNG, stored as roi{index}{suffix}) and set the analysis' label; all or nothing.
        Returns the ROI with its `index` and `images`, or None when there is no such analysis."""

    @abstractmethod
    def read_image(self, owner: str, analysis_id: str, name: str) -> bytes | None:
        """One stored image (the analysis' or its feedback's) of an active analysis of the owner."""

    @abstractmethod
    def check_writable(self) -> None:
        """Raise StoreError when the store cannot take writes now (readiness probe)."""

    @abstractmethod
    def feedback_records(self, modality: str | None = None) -> Iterator[tuple[str, dict]]:
        """(owner, record with its `feedback`) of every active analysis that has feedback, oldest
        first, optionally of one modality; read its images with `read_image(owner, ...)`. For
        exporting feedback as training data (`python -m ml.feedback export`), never for answering a
        request: it crosses owners. Soft-deleted analyses are left out."""
