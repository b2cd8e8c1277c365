"""Errors raised by the streaming layer."""

from __future__ import annotations

from schemas.errors import NextTrackError


class StreamsError(NextTrackError):
    """Base of errors raised by ``streams``."""


class ConfigError(StreamsError):
    """Settings are invalid; the message names each variable."""


#: Exit status of a command that cannot reach a Kafka broker (sysexits' EX_UNAVAILABLE); 2 is
#: an invalid configuration or argument, 70 a worker batch that could not be completed.
EXIT_BROKER_UNREACHABLE = 69


class BrokerUnreachableError(StreamsError):
    """No Kafka broker answered at the bootstrap address. The message is one line: the
    address and what to check. The CLI exits with :attr:`exit_status`."""

    exit_status = EXIT_BROKER_UNREACHABLE

    def __init__(self, bootstrap_servers: str, reason: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers
        because = f" ({reason})" if reason else ""
        super().__init__(
            f"cannot reach a Kafka broker at {bootstrap_servers}{because}: check that a broker "
            "runs there and listens on that address (`nexttrack broker status` for a local one), "
            "the --bootstrap-server option or KAFKA_BOOTSTRAP_SERVERS, and "
            "KAFKA_SECURITY_PROTOCOL"
        )
