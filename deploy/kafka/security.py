"""A secured broker: SASL (SCRAM-SHA-512 or PLAIN) over TLS on the client listener.

``nexttrack broker up --secure`` makes, on the first start from a data directory, a throw-away
certificate authority and a server certificate signed by it (with ``openssl``: an RSA key per
certificate, the server's valid for ``localhost``, ``127.0.0.1`` and the broker's host), and
two users with random passwords: ``admin`` (the broker's own inter-broker connections) and
``nexttrack`` (the clients). They live in ``<data_dir>/security/`` (mode 0700):

- ``ca.pem``: the CA certificate, the client's ``KAFKA_SSL_CAFILE``;
- ``ca-key.pem``, ``server.pem`` (the server's key, certificate and the CA's, the PEM keystore
  Kafka reads), ``security.json`` (mechanism, users, passwords), all mode 0600;
- ``client.env``: the ``KAFKA_*`` settings a client needs, mode 0600 (it holds the password).

SCRAM users are written into the KRaft metadata when the storage is formatted
(``kafka-storage format --add-scram``), so they exist from the broker's first second; PLAIN
users are listed in the listener's JAAS configuration. The controller listener stays
PLAINTEXT on the broker's host. Later starts reuse the material as it is.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from deploy.kafka.errors import BrokerError

logger = logging.getLogger(__name__)

Mechanism = Literal["SCRAM-SHA-512", "PLAIN"]
MECHANISMS: tuple[str, ...] = ("SCRAM-SHA-512", "PLAIN")
SECURITY_DIR = "security"
#: The listener clients reach, in ``listeners`` and ``listener.security.protocol.map``.
LISTENER = "SASL_SSL"
CLIENT_USER = "nexttrack"
ADMIN_USER = "admin"
#: Days the throw-away certificates are valid.
CERT_DAYS = 365


class SecurityError(BrokerError):
    """The security material cannot be made or read (no ``openssl``, a failed command, a data
    directory secured another way)."""


@dataclass(frozen=True)
class BrokerSecurity:
    """The users and files of a secured broker (see the module docstring)."""

    directory: str
    mechanism: str
    username: str
    password: str
    admin_username: str
    admin_password: str

    def __repr__(self) -> str:  # never show a password in a log or a traceback
        return (
            f"BrokerSecurity(directory={self.directory!r}, mechanism={self.mechanism!r}, "
            f"username={self.username!r})"
        )

    @property
    def ca_file(self) -> Path:
        return Path(self.directory) / "ca.pem"

    @property
    def keystore_file(self) -> Path:
        return Path(self.directory) / "server.pem"

    @property
    def env_file(self) -> Path:
        return Path(self.directory) / "client.env"

    def client_env(self) -> dict[str, str]:
        """The settings (environment variables) of a client of this broker."""
        return {
            "KAFKA_SECURITY_PROTOCOL": LISTENER,
            "KAFKA_SASL_MECHANISM": self.mechanism,
            "KAFKA_SASL_USERNAME": self.username,
            "KAFKA_SASL_PASSWORD": self.password,
            "KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka keyword arguments of a client (the launcher's readiness probe)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return {
            "security_protocol": LISTENER,
            "ssl_context": context,
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users (none for PLAIN)."""
        if self.mechanism == "PLAIN":
            return []
        return [
            f"--add-scram={self.mechanism}=[name={user},password={password}]"
            for user, password in (
                (self.admin_username, self.admin_password),
                (self.username, self.password),
            )
        ]

    def properties(self, host: str, port: int, controller_port: int) -> dict[str, str | int]:
        """``server.properties`` entries (overriding the PLAINTEXT defaults): a SASL_SSL client
        and inter-broker listener on ``host:port``, the controller PLAINTEXT."""
        mech = self.mechanism.lower()
        if self.mechanism == "PLAIN":
            module = "org.apache.kafka.common.security.plain.PlainLoginModule"
            users = (
                f' user_{self.admin_username}="{self.admin_password}"'
                f' user_{self.username}="{self.password}"'
            )
        else:
            module = "org.apache.kafka.common.security.scram.ScramLoginModule"
            users = ""
        jaas = (
            f'{module} required username="{self.admin_username}" '
            f'password="{self.admin_password}"{users};'
        )
        return {
            "listeners": f"{LISTENER}://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"{LISTENER}://{host}:{port}",
            "inter.broker.listener.name": LISTENER,
            "listener.security.protocol.map": f"{LISTENER}:{LISTENER},CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": self.mechanism,
            "sasl.mechanism.inter.broker.protocol": self.mechanism,
            f"listener.name.{LISTENER.lower()}.{mech}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore_file),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }


def security_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / SECURITY_DIR


def load_security(data_dir: Path | str) -> BrokerSecurity | None:
    """The security of the broker in ``data_dir``; ``None`` for a PLAINTEXT one."""
    path = security_dir(data_dir) / "security.json"
    if not path.is_file():
        return None
    try:
        return BrokerSecurity(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise SecurityError(f"cannot read {path}: {exc}") from None


def ensure_security(
    data_dir: Path | str, mechanism: str = "SCRAM-SHA-512", host: str = "127.0.0.1"
) -> BrokerSecurity:
    """The security material of ``data_dir``: read when there, else made now (a fresh CA,
    server certificate and passwords). A data directory whose storage is already formatted
    without security cannot be secured (its SCRAM users would be missing)."""
    if mechanism not in MECHANISMS:
        raise SecurityError(f"SASL mechanism {mechanism!r}: use one of {', '.join(MECHANISMS)}")
    data_dir = Path(data_dir)
    found = load_security(data_dir)
    if found is not None:
        if found.mechanism != mechanism:
            raise SecurityError(
                f"the broker in {data_dir} uses {found.mechanism}, not {mechanism}; use "
                f"--sasl-mechanism {found.mechanism} or another --data-dir"
            )
        return found
    if (data_dir / "kafka-logs" / "meta.properties").is_file():
        raise SecurityError(
            f"the broker in {data_dir} was first started without --secure; secure a new one "
            "(another --data-dir)"
        )
    directory = security_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    make_ca(directory / "ca.pem", directory / "ca-key.pem")
    _server_certificate(directory, host)
    security = BrokerSecurity(
        directory=str(directory.resolve()),
        mechanism=mechanism,
        username=CLIENT_USER,
        password=secrets.token_urlsafe(18),
        admin_username=ADMIN_USER,
        admin_password=secrets.token_urlsafe(18),
    )
    _write_private(directory / "security.json", json.dumps(asdict(security), indent=2) + "\n")
    env = "".join(f"{key}={value}\n" for key, value in security.client_env().items())
    _write_private(security.env_file, env)
    logger.info("made a throw-away CA and %s users in %s", mechanism, directory)
    return security


def make_ca(cert: Path, key: Path, name: str = "NextTrack throw-away CA") -> None:
    """A self-signed CA certificate ``cert`` and its unencrypted key ``key`` (PEM)."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
        "-days", str(CERT_DAYS), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    key.chmod(0o600)


def _server_certificate(directory: Path, host: str) -> None:
    key, csr, cert = (
        directory / "server-key.pem",
        directory / "server.csr",
        directory / "server.crt",
    )
    names = {"DNS:localhost", "IP:127.0.0.1"}
    names.add(f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}")
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={','.join(sorted(names))}\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.pem"),
        "-CAkey", str(directory / "ca-key.pem"), "-CAcreateserial", "-sha256",
        "-days", str(CERT_DAYS), "-extfile", str(ext), "-out", str(cert),
    )  # fmt: skip
    # Kafka's PEM keystore: the (PKCS#8) private key, then the certificate chain.
    chain = key.read_text() + cert.read_text() + (directory / "ca.pem").read_text()
    _write_private(directory / "server.pem", chain)
    for path in (key, csr, cert, ext, directory / "ca.srl"):
        path.unlink(missing_ok=True)


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SecurityError("--secure needs openssl to make the certificates; install it")
    try:
        proc = subprocess.run(
            [openssl, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise SecurityError(f"openssl {args[0]} took over 60 s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SecurityError(f"openssl {args[0]} failed (exit {proc.returncode}): {' '.join(tail)}")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)
