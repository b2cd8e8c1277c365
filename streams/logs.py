"""Log formats: ``LOG_FORMAT=text`` (Faust's default, human-readable) or ``json`` (one JSON
object per line, for log shippers)."""

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


def logging_config(level: str, log_format: str) -> dict[str, Any] | None:
    """A :func:`logging.config.dictConfig` for ``faust.Worker(logging_config=...)``; ``None``
    for ``text`` (Faust's own coloured format)."""
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
        "root": {"level": level, "handlers": ["default"]},
    }
