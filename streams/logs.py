"""Log formats: ``LOG_FORMAT=text`` (Faust's default, human-readable) or ``json`` (one JSON
object per line, for log shippers), and the library loggers kept quiet (:data:`QUIET_LOGGERS`).

Only entry points (the CLI, the worker) configure logging; library code never does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ["exc"]}`` per record, one line each."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        obj: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exc"] = record.exc_text
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(obj, default=str).decode("utf-8")


#: Library loggers held at a higher level than ``LOG_LEVEL``: ``faiss.loader`` logs six INFO
#: lines on every import of FAISS (each instruction set it tries: "Loading faiss with AVX512
#: support", "Could not load library with AVX512 support due to: ...", ...); a real failure
#: to load raises instead.
QUIET_LOGGERS: dict[str, str] = {"faiss.loader": "WARNING"}


def quiet_library_loggers() -> None:
    """Set the levels of :data:`QUIET_LOGGERS`. For entry points, before FAISS is imported
    (the loader logs at import time); a later :func:`logging.config.dictConfig` with
    ``disable_existing_loggers=False`` (Faust's, :func:`logging_config`'s) keeps them."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def logging_config(level: str, log_format: str) -> dict[str, Any] | None:
    """A :func:`logging.config.dictConfig` for ``faust.Worker(logging_config=...)``; ``None``
    for ``text`` (Faust's own coloured format; the levels set by
    :func:`quiet_library_loggers` survive it). The ``json`` config sets
    :data:`QUIET_LOGGERS` itself."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "level": level,
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {name: {"level": quiet} for name, quiet in QUIET_LOGGERS.items()},
        "root": {"level": level, "handlers": ["default"]},
    }
