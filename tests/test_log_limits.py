"""Broker outages stay quiet: repeated client errors are logged once per interval."""

from __future__ import annotations

import logging

import pytest

from streams.kafka.log_limits import RepeatLimiter, limit_repeats


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeats_are_dropped_then_summarised(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    suppressed: list[int] = []
    limiter = RepeatLimiter(30.0, clock=clock, on_suppressed=suppressed.append)
    logger = logging.getLogger("aiokafka.test_outage")
    logger.addFilter(limiter)
    try:
        with caplog.at_level(logging.INFO, logger="aiokafka.test_outage"):
            for node in range(1000):  # one template, many nodes: one kind
                logger.error("Unable to connect to node %s", node)
                clock.now += 0.01
            logger.warning("Heartbeat failed")  # another kind: passes
            logger.info("informational lines are never limited")
            logger.info("informational lines are never limited")
            clock.now = 31.0
            logger.error("Unable to connect to node %s", 7)
    finally:
        logger.removeFilter(limiter)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "Unable to connect to node 0"
    assert "Heartbeat failed" in lines
    assert lines.count("informational lines are never limited") == 2
    assert lines[-1] == (
        "Unable to connect to node 7 [999 similar messages suppressed in the last 30s]"
    )
    assert len(lines) == 5 and sum(suppressed) == 999


def test_limit_repeats_reaches_child_loggers() -> None:
    child = logging.getLogger("aiokafka.some.child")
    other = logging.getLogger("nexttrack.not_noisy")
    limiter = RepeatLimiter()
    attached = limit_repeats(limiter, prefixes=("aiokafka",))
    try:
        assert child in attached and limiter in child.filters
        assert other not in attached and limiter not in other.filters
    finally:
        for logger in attached:
            logger.removeFilter(limiter)
