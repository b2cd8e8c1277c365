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


#: Exit status of a command whose credentials the Kafka broker refused (sysexits' EX_NOPERM).
EXIT_BROKER_AUTH_FAILED = 77


class BrokerCertificateError(BrokerUnreachableError):
    """The broker's TLS certificate was not trusted (signed by a CA other than
    ``KAFKA_SSL_CAFILE``'s, or not naming the address): no connection, exit status 69, one
    line that says to check the CA file."""

    def __init__(self, bootstrap_servers: str, reason: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers
        because = f" ({reason})" if reason else ""
        StreamsError.__init__(
            self,
            f"cannot trust the Kafka broker at {bootstrap_servers}: its TLS certificate did not "
            f"verify{because}; check KAFKA_SSL_CAFILE (the CA certificate that signed the "
            "broker's, e.g. DATA_DIR/security/ca.pem of `nexttrack broker up --secure`) and "
            "that the address is one the certificate names",
        )


class BrokerAuthenticationError(StreamsError):
    """The broker refused the client's SASL credentials (or mechanism). One line, exit status
    :data:`EXIT_BROKER_AUTH_FAILED`; not a :class:`BrokerUnreachableError`, so nothing waits
    for it to pass (credentials do not get better with time)."""

    exit_status = EXIT_BROKER_AUTH_FAILED

    def __init__(self, bootstrap_servers: str, reason: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers
        because = f" ({reason})" if reason else ""
        super().__init__(
            f"the Kafka broker at {bootstrap_servers} refused the credentials{because}: check "
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM (the password "
            "is not shown)"
        )


#: Top-level modules of the ``train`` extra (``pip install 'nexttrack-streams[train]'``) ->
#: the distribution that provides each. The worker imports none of them; training, evaluation,
#: data generation and import, and the demo, bench and chaos tools do.
TRAIN_EXTRA_MODULES = {
    "torch": "torch",
    "lightfm": "rectools-lightfm",
    "scipy": "scipy",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
}
#: How to install them, as the error message says it.
TRAIN_EXTRA_INSTALL = "pip install 'nexttrack-streams[train]'"


class TrainingExtrasMissingError(StreamsError):
    """A command needs a module of the ``train`` extra that is not installed (a worker-only
    install: ``pip install .``). One line: the command, the missing module, how to install
    the extra. Exit status 2, as an invalid setting: the command cannot run as installed."""

    exit_status = 2

    def __init__(self, command: str, module: str) -> None:
        self.command = command
        self.module = module
        super().__init__(
            f"{command} needs the training extras (missing module {module}): {TRAIN_EXTRA_INSTALL}"
        )

    @classmethod
    def from_import_error(
        cls, exc: ModuleNotFoundError, command: str
    ) -> TrainingExtrasMissingError | None:
        """The error for ``exc`` when the module it did not find belongs to the ``train``
        extra (``torch.nn`` counts as ``torch``); ``None`` for any other module."""
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
            return None
        return cls(command, exc.name or "")
