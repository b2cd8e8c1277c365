"""Connecting to Kafka: starting an aiokafka client with one clear error when it cannot
(no broker answers, a certificate not trusted, credentials refused), and waiting out a
broker that cannot be reached for a while."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from streams.errors import (
    BrokerAuthenticationError,
    BrokerCertificateError,
    BrokerUnreachableError,
    StreamsError,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


#: A client of aiokafka: started with ``start()``, closed with ``stop()`` or ``close()``.
Client = AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient


class _BootstrapFailures(logging.Filter):
    """Holds back aiokafka's ``Unable connect to "host:port": reason`` errors while a client
    bootstraps, so that an unreachable broker is reported once, by
    :class:`BrokerUnreachableError`, with the reason."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Unable connect to"):
            self.records.append(record)
            return False
        return True

    def reasons(self) -> str:
        """The distinct reasons, e.g. ``[Errno 111] Connect call failed ('127.0.0.1', 1)``."""
        found = [r.getMessage().split('": ', 1)[-1] for r in self.records]
        return "; ".join(dict.fromkeys(found))

    def errors(self) -> list[BaseException]:
        """The exceptions aiokafka logged (the last argument of each message)."""
        return [r.args[-1] for r in self.records if r.args and isinstance(r.args, tuple)]


#: aiokafka's errors for credentials or a SASL mechanism the broker refused.
_AUTH_ERRORS = (
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


def bootstrap_failure(address: str, errors: list[BaseException], reason: str) -> StreamsError:
    """The error for a client that could not bootstrap from ``address``, given the errors of
    its connection attempts: refused credentials, a certificate not trusted, or (anything
    else) no broker reachable, for ``reason``."""
    refused = [e for e in errors if isinstance(e, _AUTH_ERRORS)]
    if refused:
        return BrokerAuthenticationError(address, str(refused[0]))
    untrusted = [e for e in errors if isinstance(e, ssl.SSLCertVerificationError)]
    if untrusted:
        return BrokerCertificateError(address, untrusted[0].verify_message or str(untrusted[0]))
    return BrokerUnreachableError(address, reason)


async def start_client(
    client: Client, settings: Settings, bootstrap_servers: str | None = None
) -> None:
    """``await client.start()``, or :class:`BrokerUnreachableError` naming the address (and
    why) when no broker answers there within ``KAFKA_CONNECT_TIMEOUT`` seconds
    (:class:`BrokerCertificateError` when its TLS certificate is not trusted,
    :class:`BrokerAuthenticationError` when it refuses the SASL credentials); the client
    is closed first, so nothing is left to warn about it. Hosts of the address that failed
    while another answered are logged as warnings."""
    aiokafka_log = logging.getLogger("aiokafka")
    failures = _BootstrapFailures()
    aiokafka_log.addFilter(failures)
    timeout = settings.kafka_connect_timeout
    try:
        await asyncio.wait_for(client.start(), timeout)
    except (KafkaConnectionError, TimeoutError) as exc:
        try:
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        except Exception:  # closing what never opened: its error is not the one to report
            log.debug("closing an unstarted %s failed", type(client).__name__, exc_info=True)
        address = bootstrap_servers or settings.kafka_bootstrap_servers
        reason = failures.reasons()
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout:g} s (KAFKA_CONNECT_TIMEOUT)"
        raise bootstrap_failure(address, failures.errors(), reason) from exc
    finally:
        aiokafka_log.removeFilter(failures)
    for record in failures.records:
        log.warning("%s", record.getMessage())


async def while_unreachable(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    first_wait: float = 0.5,
    max_wait: float = 5.0,
) -> T:
    """``await call()``, called again for as long as no broker answers (a broker restart,
    a network cut): waits ``first_wait`` seconds, then twice as long each time up to
    ``max_wait``, logging each failure as a warning that names ``what``. Only a broker that
    cannot be reached, or an error aiokafka marks retriable, is waited out; any other error
    is raised at once. Cancellation (a worker shutting down) ends the wait."""
    wait = first_wait
    while True:
        try:
            return await call()
        except (BrokerUnreachableError, KafkaError) as exc:
            if isinstance(exc, KafkaError) and not exc.retriable:
                raise
            log.warning("%s: no broker answers (%s); trying again in %.1fs", what, exc, wait)
        await asyncio.sleep(wait)
        wait = min(max_wait, wait * 2)
