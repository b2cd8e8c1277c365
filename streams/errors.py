"""Errors raised by the streaming layer."""

from __future__ import annotations

from schemas.errors import NextTrackError


class StreamsError(NextTrackError):
    """Base of errors raised by ``streams``."""


class ConfigError(StreamsError):
    """Settings are invalid; the message names each variable."""
