"""Errors raised by the single-node Kafka launcher (``deploy.kafka``).

Every one derives from :class:`BrokerError`, itself a
:class:`~schemas.errors.NextTrackError`, so the CLI prints them as one clear line and callers
can catch a single type.
"""

from __future__ import annotations

from schemas.errors import NextTrackError


class BrokerError(NextTrackError):
    """Base of errors raised while fetching, starting, probing or stopping the broker."""


class JavaNotFoundError(BrokerError):
    """No usable ``java`` binary (missing, not executable, or ``java -version`` fails)."""


class MavenError(BrokerError):
    """``mvn`` failed or timed out while fetching the Kafka jars; the message ends with its
    output tail."""


class MavenNotFoundError(MavenError):
    """No ``mvn`` binary to fetch the Kafka jars with."""


class PortInUseError(BrokerError):
    """A port the broker must listen on is already taken."""


class BrokerAlreadyRunningError(BrokerError):
    """A broker recorded in the data directory is still running."""


class BrokerStartTimeout(BrokerError):
    """The broker did not answer a metadata request in time; the message ends with its log
    tail."""


class BrokerExitedError(BrokerError):
    """The broker process (or the storage formatter) exited early; the message ends with its
    log tail."""
