"""Errors raised by ``index`` (FAISS indexes, fusion, filters, the hybrid retriever)."""

from __future__ import annotations

from schemas.errors import NextTrackError


class RetrievalError(NextTrackError):
    """Base of errors raised by ``index``."""


class InvalidInputError(RetrievalError, ValueError):
    """An argument has the wrong shape, dtype, dimension or value (``k < 1``, NaN, ...)."""


class UnknownItemError(RetrievalError, KeyError):
    """An item index is outside the catalog, or not live where a live item is required."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class IndexBuildError(RetrievalError):
    """An index cannot be built (no vectors, unknown kind, bad parameters)."""


class IndexIOError(RetrievalError):
    """An index cannot be saved or loaded (missing file, bad sidecar, inconsistent state)."""
