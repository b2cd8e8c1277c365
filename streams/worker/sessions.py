"""The ``sessions`` table's storage options and reading a session's stored state."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from faust.types import EventT

from serving.state import SessionState
from streams.worker.faust_context import event_context

log = logging.getLogger(__name__)

#: RocksDB options of the worker's tables (one database per table partition). Faust's
#: defaults (64 MB write buffers x 3 and a 2 GB block cache per database) are sized for
#: big servers; a session state is a few hundred bytes and every read is recent, so small
#: buffers keep a worker's memory bounded (the changelog is the source of truth anyway).
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 1024 * 1024,
    "target_file_size_base": 16 * 1024 * 1024,
}


def read_session(table: Any, session_id: str, event: EventT | None = None) -> SessionState | None:
    """The stored state of ``session_id`` in the ``sessions`` table, or ``None``.

    Under ``event`` (a record co-partitioned with ``plays``: same key, same partition count)
    the store looks in that partition only. If that finds nothing (or there is no event), the
    read runs with *no* current event, where the stores search every partition held by this
    worker (RocksDB: ``_get`` falls back to all partition DBs; memory: one dict).
    """
    key = session_id.encode("utf-8")
    raw = None
    if event is not None:
        with event_context(event):
            raw = table.get(key)
    if raw is None:
        raw = contextvars.Context().run(table.get, key)
    return decode_state(raw, session_id)


def decode_state(raw: bytes | None, session_id: str) -> SessionState | None:
    """A stored state's bytes as a :class:`SessionState`; ``None`` when there are none or
    they cannot be read (logged: the session starts afresh)."""
    if raw is None:
        return None
    try:
        return SessionState.from_bytes(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("session %s: unreadable stored state (%s); starting afresh", session_id, exc)
        return None
