"""Readiness checks: a raw TCP connect and a Kafka metadata request through aiokafka."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def probe_broker_async(
    bootstrap_servers: str, timeout: float = 5.0, client_kwargs: Mapping[str, Any] | None = None
) -> bool:
    """Whether the cluster at ``bootstrap_servers`` answers a metadata request listing at
    least one broker within ``timeout`` seconds (``client_kwargs``: the security settings of
    a secured broker, :meth:`deploy.kafka.security.BrokerSecurity.client_kwargs`)."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=max(1000, int(timeout * 1000)),
        client_id="nexttrack-broker-probe",
        **(client_kwargs or {}),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return bool(client.cluster.brokers())
    except Exception as exc:  # KafkaError, OSError, TimeoutError: all mean "not ready"
        logger.debug("metadata probe of %s failed: %r", bootstrap_servers, exc)
        return False
    finally:
        try:
            await client.close()
        except Exception:
            pass


def probe_broker(
    bootstrap_servers: str, timeout: float = 5.0, client_kwargs: Mapping[str, Any] | None = None
) -> bool:
    """Synchronous :func:`probe_broker_async`; works inside or outside a running event loop
    (inside one, the probe runs on a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(probe_broker_async(bootstrap_servers, timeout, client_kwargs))
    probe = probe_broker_async(bootstrap_servers, timeout, client_kwargs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, probe).result()
