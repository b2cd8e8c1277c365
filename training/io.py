"""Fast JSONL reading and writing of play events and catalog tracks (orjson).

Files are UTF-8, one JSON object per line, ``\\n`` separated, with a trailing newline.
Writers go through a temporary file in the same directory and rename it into place, so a
crashed run never leaves a half-written ``events.jsonl`` that looks complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from schemas import EVENT_TYPES, PLAY_SCHEMA, PlayEvent, SchemaError, Track
from schemas.validation import MAX_STRING_CHARS
from training.errors import DataError

logger = logging.getLogger(__name__)

#: Lines buffered before one ``write`` call.
_CHUNK = 8192


#: Fields the fast path understands; a record with any other key goes through ``from_dict``.
_FAST_KEYS = frozenset(
    {"schema", "event_id", "user_id", "session_id", "track_id", "event_type", "ts", "ms_played"}
)


def _ok_id(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_STRING_CHARS


def event_from_obj(obj: dict[str, Any]) -> PlayEvent:
    """``PlayEvent.from_dict(obj)``, about three times faster for the common plain record.

    Records with only the usual fields and well-typed values are built directly; anything
    else (extra fields, ``context``, any doubtful value) goes through ``from_dict``, which
    validates fully and raises the precise :class:`SchemaError`.
    """
    if obj.keys() <= _FAST_KEYS and obj.get("schema") == PLAY_SCHEMA:
        ts, ms, event_type = obj.get("ts"), obj.get("ms_played"), obj.get("event_type")
        eid, uid, sid, tid = (obj.get(k) for k in ("event_id", "user_id", "session_id", "track_id"))
        if (
            type(ts) is int
            and ts >= 0
            and (ms is None or (type(ms) is int and ms >= 0))
            and event_type in EVENT_TYPES
            and _ok_id(eid)
            and _ok_id(uid)
            and _ok_id(sid)
            and _ok_id(tid)
        ):
            return PlayEvent(eid, uid, sid, tid, event_type, ts, ms)  # type: ignore[arg-type]
    return PlayEvent.from_dict(obj)


def iter_events(path: str | os.PathLike[str]) -> Iterator[PlayEvent]:
    """Yield the events of a JSONL file one by one, validated against ``play/v1``.

    Blank lines are ignored. A malformed line raises :class:`DataError` naming the file and the
    line number.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read events file {path}: {exc.strerror or exc}") from None
    with fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = orjson.loads(line)
                if not isinstance(obj, dict):
                    raise SchemaError("not_object", "expected a JSON object")
                yield event_from_obj(obj)
            except (orjson.JSONDecodeError, SchemaError) as exc:
                raise DataError(f"{path}:{line_no}: not a valid play event: {exc}") from None


def read_events(path: str | os.PathLike[str]) -> list[PlayEvent]:
    """Read every event of a JSONL file, in file order (see :func:`iter_events`)."""
    return list(iter_events(path))


def _write_lines(path: str | os.PathLike[str], lines: Iterable[bytes]) -> int:
    """Write ``lines`` (without newlines) atomically to ``path``; returns the line count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            buf: list[bytes] = []
            for line in lines:
                buf.append(line)
                if len(buf) >= _CHUNK:
                    fh.write(b"\n".join(buf) + b"\n")
                    count += len(buf)
                    buf.clear()
            if buf:
                fh.write(b"\n".join(buf) + b"\n")
                count += len(buf)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; a data file is for everyone to read
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count


def write_events(path: str | os.PathLike[str], events: Iterable[PlayEvent]) -> int:
    """Write events (``PlayEvent.to_dict`` per line) in the order given; returns the count.

    ``events`` may be a generator, so a large dataset can be streamed without holding every
    event object at once.
    """
    count = _write_lines(path, (orjson.dumps(e.to_dict()) for e in events))
    logger.debug("wrote %d events to %s", count, path)
    return count


def write_tracks(path: str | os.PathLike[str], tracks: Iterable[Track]) -> int:
    """Write a catalog (``Track.to_dict`` per line, row i = item index i); returns the count.

    Read it back with :func:`schemas.read_catalog`.
    """
    count = _write_lines(path, (orjson.dumps(t.to_dict()) for t in tracks))
    logger.debug("wrote %d tracks to %s", count, path)
    return count


def sessions_from_events(events: Iterable[PlayEvent]) -> dict[str, list[PlayEvent]]:
    """Group events by ``session_id``, each session's events ordered by ``ts``.

    Sessions appear in order of their first event in the input; events with equal ``ts`` keep
    their input order (the sort is stable).
    """
    sessions: dict[str, list[PlayEvent]] = {}
    for event in events:
        bucket = sessions.get(event.session_id)
        if bucket is None:
            sessions[event.session_id] = [event]
        else:
            bucket.append(event)
    for bucket in sessions.values():
        if any(bucket[i].ts > bucket[i + 1].ts for i in range(len(bucket) - 1)):
            bucket.sort(key=lambda e: e.ts)
    return sessions
