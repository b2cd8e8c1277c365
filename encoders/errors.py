"""Errors raised by session encoders."""

from __future__ import annotations

from schemas.errors import NextTrackError


class EncoderError(NextTrackError):
    """Base of errors raised by ``encoders``."""


class EncoderStateError(EncoderError):
    """A serialised state does not fit this encoder (wrong size, dtype or version)."""


class EncoderInputError(EncoderError):
    """A step got item indices that do not fit (wrong shape or dtype, out of range)."""
