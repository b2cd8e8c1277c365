"""Keeping a broker outage quiet in the log: repeated client errors become one line per
interval plus a summary.

While Kafka is unreachable, aiokafka and Faust log every retry of every connection (about
1,600 lines a second were seen), which buries the first, useful message and fills disks.
:class:`RepeatLimiter` lets the first record of each kind through, drops its repeats for
``interval`` seconds, then logs how many were dropped together with the next one. A record's
kind is its logger and its message *template* (``record.msg`` before ``%`` formatting), so
the same failure on another node or partition still counts as a repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

#: Loggers whose repeated warnings and errors are limited (and their children).
NOISY_LOGGERS = ("aiokafka", "kafka", "faust.transport", "faust.tables", "mode")


class RepeatLimiter(logging.Filter):
    """Passes the first WARNING+ record of each kind per ``interval`` seconds; counts the
    rest and reports them with the next record of that kind that passes."""

    def __init__(
        self,
        interval: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_suppressed: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.on_suppressed = on_suppressed
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        first, dropped = self._seen.get(key, (None, 0))
        if first is not None and now - first < self.interval:
            self._seen[key] = (first, dropped + 1)
            if self.on_suppressed is not None:
                self.on_suppressed(1)
            return False
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar messages suppressed in the last "
            record.msg += f"{self.interval:g}s]"
        if len(self._seen) > 10_000:  # bound memory: forget kinds not seen for a while
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.interval}
        return True


def limit_repeats(
    limiter: RepeatLimiter, prefixes: Iterable[str] = NOISY_LOGGERS
) -> list[logging.Logger]:
    """Attach ``limiter`` to every existing logger under ``prefixes`` (a logger's filters see
    only records logged on that very logger, so each child needs it); returns them."""
    prefixes = tuple(prefixes)
    attached = []
    names = [*prefixes, *logging.Logger.manager.loggerDict]
    for name in dict.fromkeys(names):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            logger = logging.getLogger(name)
            if limiter not in logger.filters:
                logger.addFilter(limiter)
            attached.append(logger)
    log.debug("repeat limiter on %d loggers", len(attached))
    return attached
