"""Errors raised by ``serving`` (loading artifacts, the online core)."""

from __future__ import annotations

from schemas.errors import NextTrackError


class ServingError(NextTrackError):
    """Base of errors raised by ``serving``."""
