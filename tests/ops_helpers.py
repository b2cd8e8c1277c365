"""Helpers for the operations tests against a real worker: HTTP calls, Prometheus parsing,
waiting for records."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from streams.kafka.clients import Record
from tests.worker_helpers import StreamEnv


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return orjson.loads(self.body)


def http(
    base: str,
    path: str,
    *,
    key: str | None = None,
    method: str = "GET",
    data: bytes | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP request; any status is returned, not raised."""
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())
    except OSError as exc:  # refused, reset, timed out: no answer at all
        return Reply(0, {}, str(exc).encode())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """``{(sample name, labels): value}`` of a Prometheus text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def wait_for(
    check: Callable[[], object], *, timeout: float = 60.0, interval: float = 0.5, what: str = ""
) -> object:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or check} (last: {last!r})")


async def wait_until_async(
    check: Callable[[], object], *, timeout: float = 60.0, interval: float = 0.02, what: str = ""
) -> object:
    """``wait_for`` inside an event loop: await (so the agents under test run) until ``check``
    returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = check()
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what or check} (last: {last!r})"
            )
        await asyncio.sleep(interval)


def wait_records(
    env: StreamEnv,
    topic: str,
    done: Callable[[list[Record]], bool],
    *,
    timeout: float = 60.0,
) -> list[Record]:
    """Read ``topic`` from the beginning until ``done(records)``; fail after ``timeout``."""
    return env.read(topic, done, timeout=timeout)


def changelog_acks(worker: Any, *, at_once: bool = True) -> list[asyncio.Future[Any]]:
    """Agent unit tests run without a broker, where Faust's producer never sends the tables'
    changelog records. Stand in for Kafka: every changelog record is acknowledged at once
    (``at_once``), or kept in the returned list for the test to acknowledge."""
    held: list[asyncio.Future[Any]] = []

    def send_soon(fut: asyncio.Future[Any]) -> None:
        if at_once:
            fut.set_result(None)
        else:
            held.append(fut)

    worker.app.producer.send_soon = send_soon
    return held


async def no_commits(topic: str) -> dict[int, int]:
    """A committed-offsets lookup for workers without a broker (agent unit tests)."""
    return {}


@dataclass
class Sent:
    """One record handed to a :class:`FakePublisher`."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None


class FakePublisher:
    """Stands in for :class:`streams.delivery.publisher.BatchPublisher` in agent unit tests (no
    broker): keeps every record handed over and delivers each batch at once (``at_once``),
    or holds it in :attr:`held` for the test to :meth:`deliver` or :meth:`fail`."""

    def __init__(self, *, at_once: bool = True) -> None:
        self.at_once = at_once
        self.sent: list[Sent] = []
        #: Batches not yet settled: the future, its metadata once delivered, its records.
        self.held: list[tuple[asyncio.Future[Any], Any, list[Sent]]] = []
        self._next: dict[tuple[str, int], int] = {}

    def values(self, topic: str) -> list[bytes | None]:
        return [s.value for s in self.sent if s.topic == topic]

    async def publish(self, topic: str, records: Any) -> list[asyncio.Future[Any]]:
        return [d.future for d in await self.publish_to(topic, 0, records)]

    async def publish_to(self, topic: str, partition: int, records: Any) -> list[Any]:
        from types import SimpleNamespace

        from streams.delivery.publisher import Delivery

        batch = [Sent(topic, partition, key, value) for key, value in records]
        self.sent.extend(batch)
        base = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = base + len(batch)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        metadata = SimpleNamespace(topic=topic, partition=partition, offset=base)
        if self.at_once:
            future.set_result(metadata)
        else:
            self.held.append((future, metadata, batch))
        return [Delivery(topic, partition, len(batch), future)]

    def deliver(self, index: int) -> None:
        """Deliver held batch ``index`` (numbered in the order they were handed over)."""
        future, metadata, _ = self.held[index]
        future.set_result(metadata)

    def fail(self, index: int, error: Exception) -> None:
        self.held[index][0].set_exception(error)

    async def stop(self) -> None:
        pass
