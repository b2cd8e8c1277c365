"""Errors raised by ``training`` (data generation, import, splits, model training)."""

from __future__ import annotations

from schemas.errors import NextTrackError


class TrainingError(NextTrackError):
    """Base of errors raised by ``training``."""


class DataError(TrainingError):
    """Input data or a data parameter is unusable: a missing or unreadable file, a malformed
    line in one of our own JSONL files, or an out-of-range option (the message says which)."""
