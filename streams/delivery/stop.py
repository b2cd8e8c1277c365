"""Stopping the process when a batch cannot be completed (nothing acked, nothing committed)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: Exit status of a worker that stopped because a batch could not be completed.
EXIT_BATCH_FAILED = 70


def exit_process(agent: str, n_events: int, error: BaseException) -> None:
    """Log why and end the process without running any more code (no ack, no commit)."""
    log.critical(
        "agent %s could not complete a batch of %d events (%s: %s); stopping the worker "
        "without committing them, they are read again after the restart",
        agent,
        n_events,
        type(error).__name__,
        error,
        exc_info=error,
    )
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    os._exit(EXIT_BATCH_FAILED)
