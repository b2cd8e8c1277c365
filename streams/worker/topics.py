"""The worker's raw topics: bytes in, bytes out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.worker.core import WorkerCore


def raw_topic(worker: WorkerCore, name: str) -> Any:
    """A bytes-in, bytes-out topic of the worker's app (like the play topics), declared (if
    Faust ever creates it) with the project's topic configs (``min.insync.replicas``)."""
    return worker.app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        config=worker.settings.topic_config,
    )


def as_bytes(value: Any) -> bytes:
    """A record key or value as bytes (``None`` gives ``b""``)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)
