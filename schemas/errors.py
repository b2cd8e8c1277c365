"""The project's root exception and the schema errors.

Every error the project raises on purpose derives from :class:`NextTrackError`, so a caller can
catch one type. Each package adds a small subclass of its own (``encoders.errors``,
``index.errors``, ``training.errors``, ``streams.errors``).
"""

from __future__ import annotations


class NextTrackError(Exception):
    """Root of every error raised on purpose by NextTrack Streams."""


class SchemaError(NextTrackError):
    """A record does not match its schema.

    ``reason`` is a short machine-readable code (used as the dead-letter reason and as a metric
    label); ``field`` names the offending field when there is one.
    """

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return self.message
