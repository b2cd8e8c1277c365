"""A secured broker for real (issue #27, part 5): ``nexttrack broker up --secure`` starts the
broker with SASL (SCRAM-SHA-512) over TLS, a throw-away CA and certificate made with openssl;
the worker (Faust) and ``nexttrack produce``/``consume`` work against it with the credentials
it wrote, and wrong credentials or a CA file of another CA give one line and a non-zero exit
(77 and 69), at once, without a traceback.

The first tests need no broker: the broker's properties, the SCRAM users given to the storage
formatter, the password kept out of reprs, and how the client tells the failures apart.
"""

from __future__ import annotations

import asyncio
import ssl
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pydantic import SecretStr

from deploy.kafka import JavaNotFoundError, KafkaBroker, MavenNotFoundError, fetch_kafka
from deploy.kafka.security import BrokerSecurity, ensure_security, load_security, make_ca
from schemas import Recommendation
from streams.errors import (
    EXIT_BROKER_AUTH_FAILED,
    EXIT_BROKER_UNREACHABLE,
    BrokerAuthenticationError,
    BrokerCertificateError,
    BrokerUnreachableError,
)
from streams.kafka.clients import cluster_id
from streams.kafka.connect import bootstrap_failure
from streams.settings import load_settings
from streams.tools.worker_process import free_port
from tests.data_fixtures import Dataset
from tests.test_cli import nexttrack
from tests.worker_helpers import StreamEnv

# -- no broker needed ------------------------------------------------------------------------


def test_secure_material_properties_and_scram_users(tmp_path: Path) -> None:
    security = ensure_security(tmp_path, "SCRAM-SHA-512")
    directory = Path(security.directory)
    for name in ("ca.pem", "ca-key.pem", "server.pem", "security.json", "client.env"):
        assert stat.S_IMODE((directory / name).stat().st_mode) in (0o600, 0o644), name
    for name in ("ca-key.pem", "server.pem", "security.json", "client.env"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # the server certificate verifies against the CA for 127.0.0.1 (what clients check)
    context = ssl.create_default_context(cafile=str(security.ca_file))
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "NextTrack throw-away CA"),),)
    assert load_security(tmp_path) == security  # reused, not made again
    assert ensure_security(tmp_path, "SCRAM-SHA-512").password == security.password
    env = dict(line.split("=", 1) for line in security.env_file.read_text().splitlines())
    assert env == security.client_env()
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_PASSWORD"]

    props = security.properties("127.0.0.1", 1111, 2222)
    assert props["listeners"] == "SASL_SSL://127.0.0.1:1111,CONTROLLER://127.0.0.1:2222"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "ScramLoginModule" in str(props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"])
    args = security.format_args()
    assert len(args) == 2 and all(a.startswith("--add-scram=SCRAM-SHA-512=[name=") for a in args)
    assert f"name={security.username},password={security.password}]" in args[1]
    assert security.password not in repr(security)

    with pytest.raises(Exception, match="uses SCRAM-SHA-512, not PLAIN"):
        ensure_security(tmp_path, "PLAIN")


def test_plain_users_are_in_the_jaas_config_and_a_plaintext_data_dir_stays_so(
    tmp_path: Path,
) -> None:
    plain = ensure_security(tmp_path / "plain", "PLAIN")
    assert plain.format_args() == []
    jaas = str(plain.properties("h", 1, 2)["listener.name.sasl_ssl.plain.sasl.jaas.config"])
    assert f'user_{plain.username}="{plain.password}"' in jaas
    formatted = tmp_path / "old" / "kafka-logs"
    formatted.mkdir(parents=True)
    (formatted / "meta.properties").write_text("")
    with pytest.raises(Exception, match="first started without --secure"):
        ensure_security(tmp_path / "old")


def test_refused_credentials_and_an_untrusted_certificate_are_told_apart() -> None:
    refused = bootstrap_failure("h:1", [SaslAuthenticationFailed("invalid credentials")], "x")
    assert isinstance(refused, BrokerAuthenticationError)
    assert not isinstance(refused, BrokerUnreachableError)  # nothing waits it out
    assert refused.exit_status == EXIT_BROKER_AUTH_FAILED
    assert "KAFKA_SASL_PASSWORD" in str(refused) and "\n" not in str(refused)
    cert = ssl.SSLCertVerificationError("certificate verify failed")
    cert.verify_message = "self-signed certificate in certificate chain"
    untrusted = bootstrap_failure("h:1", [KafkaConnectionError("closed"), cert], "x")
    assert isinstance(untrusted, BrokerCertificateError)
    assert untrusted.exit_status == EXIT_BROKER_UNREACHABLE
    assert "KAFKA_SSL_CAFILE" in str(untrusted) and "self-signed" in str(untrusted)
    other = bootstrap_failure("h:1", [KafkaConnectionError("closed")], "closed")
    assert type(other) is BrokerUnreachableError


# -- a real secured broker --------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``nexttrack broker up --secure`` on a free port: (bootstrap, data dir); stopped after."""
    try:
        fetch_kafka()
    except (JavaNotFoundError, MavenNotFoundError) as exc:
        pytest.skip(str(exc))
    data = tmp_path_factory.mktemp("secure-broker")
    port = free_port()
    try:
        up = nexttrack("broker", "up", "--secure", "-p", str(port), "-d", str(data), cwd=data)
        assert up.returncode == 0, up.stdout + up.stderr
        security = load_security(data)
        assert security is not None
        assert f"export KAFKA_SSL_CAFILE={security.ca_file}" in up.stdout
        assert security.password not in up.stdout + up.stderr, "the password is not printed"
        status = nexttrack("broker", "status", "-d", str(data), cwd=data)
        assert status.returncode == 0 and "SASL_SSL SCRAM-SHA-512" in status.stdout, status
        yield f"127.0.0.1:{port}", data
        down = nexttrack("broker", "down", "-d", str(data), cwd=data)
        assert down.returncode == 0 and "stopped broker" in down.stdout, down
    finally:
        broker = KafkaBroker.attach(data)
        if broker is not None:
            broker.stop(timeout=20.0)


def _client_env(data: Path) -> dict[str, str]:
    security = load_security(data)
    assert isinstance(security, BrokerSecurity)
    return security.client_env()


@pytest.mark.kafka
def test_worker_and_cli_work_against_a_secured_broker(
    secure_broker: tuple[str, Path], small_dataset: Dataset, small_artifacts: Path, tmp_path: Path
) -> None:
    bootstrap, data = secure_broker
    client = _client_env(data)
    run = uuid.uuid4().hex[:10]

    # the CLI: produce, then consume what was produced
    topic = f"secure-{run}"
    lines = [orjson.dumps({"session_id": f"s{i}", "n": i}) for i in range(5)]
    events = tmp_path / "lines.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    cli_env = {**client, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    produced = nexttrack("produce", "--file", str(events), "--topic", topic, cwd=tmp_path,
                         extra_env=cli_env)  # fmt: skip
    assert produced.returncode == 0, produced.stderr[-3000:]
    consumed = nexttrack(
        "consume", "--topic", topic, "--from-beginning", "--max", "5", "--timeout", "20",
        "--group", f"g-{run}", cwd=tmp_path, extra_env=cli_env,
    )  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr[-3000:]
    assert sorted(orjson.loads(x)["n"] for x in consumed.stdout.splitlines()) == list(range(5))

    # the worker (Faust, our fetch loop): answers every play, reading and writing over SASL_SSL
    env = StreamEnv(bootstrap, tmp_path, create_topics=False, run=run)
    env.env.update(client)
    env.settings = env.settings.model_copy(
        update={
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": client["KAFKA_SASL_MECHANISM"],
            "kafka_sasl_username": client["KAFKA_SASL_USERNAME"],
            "kafka_sasl_password": SecretStr(client["KAFKA_SASL_PASSWORD"]),
            "kafka_ssl_cafile": Path(client["KAFKA_SSL_CAFILE"]),
        }
    )
    env.create_topics()
    plays = [e for e in small_dataset.events if e.event_type == "play"][:20]
    with env.worker(small_artifacts):
        env.produce([e.to_bytes() for e in plays])
        answers = env.consume(env.settings.topic_recommendations, expected=len(plays))
        env.wait_committed()
    answered = {Recommendation.parse(r.value).event_id for r in answers}
    assert answered == {e.event_id for e in plays}


def _one_line_failure(proc: subprocess.CompletedProcess[str], status: int, start: str) -> str:
    assert proc.returncode == status, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: {start}"), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return lines[0]


@pytest.mark.kafka
@pytest.mark.parametrize("command", ["consume", "produce", "worker"])
def test_wrong_credentials_and_an_untrusted_ca_fail_at_once_in_one_line(
    secure_broker: tuple[str, Path], command: str, tmp_path: Path
) -> None:
    bootstrap, data = secure_broker
    client = _client_env(data)
    other = tmp_path / "other-ca"
    other.mkdir()
    make_ca(other / "ca.pem", other / "ca-key.pem", "Another CA")
    if command == "consume":
        args = ["consume", "--topic", "t", "--timeout", "5"]
    elif command == "produce":
        (tmp_path / "e.jsonl").write_text('{"session_id": "s1"}\n')
        args = ["produce", "--file", str(tmp_path / "e.jsonl"), "--topic", "t"]
    else:  # the broker is asked before the (empty) artifacts are read
        (tmp_path / "artifacts").mkdir()
        args = ["worker", "--artifacts", str(tmp_path / "artifacts"), "--data-dir",
                str(tmp_path / "work")]  # fmt: skip
    cases = [
        (
            {"KAFKA_SASL_PASSWORD": "not-the-password"},
            EXIT_BROKER_AUTH_FAILED,
            f"the Kafka broker at {bootstrap} refused the credentials",
        ),
        (
            {"KAFKA_SASL_USERNAME": "mallory"},
            EXIT_BROKER_AUTH_FAILED,
            f"the Kafka broker at {bootstrap} refused the credentials",
        ),
        (
            {"KAFKA_SSL_CAFILE": str(other / "ca.pem")},
            EXIT_BROKER_UNREACHABLE,
            f"cannot trust the Kafka broker at {bootstrap}",
        ),
    ]
    for change, status, start in cases:
        env = {**client, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_CONNECT_TIMEOUT": "30"}
        env.update(change)
        t0 = time.monotonic()
        proc = nexttrack(*args, cwd=tmp_path, extra_env=env)
        elapsed = time.monotonic() - t0
        line = _one_line_failure(proc, status, start)
        assert "not-the-password" not in line
        # told at once: not after KAFKA_CONNECT_TIMEOUT (30 s) or a retry loop
        assert elapsed < 25, f"{command} {change}: {elapsed:.1f}s"
        assert not (tmp_path / "work").exists()


@pytest.mark.kafka
def test_a_plain_mechanism_broker_takes_its_user_and_refuses_others(tmp_path: Path) -> None:
    """``--sasl-mechanism PLAIN``: the users are in the listener's JAAS configuration, not the
    metadata; the right password is taken and a wrong one refused, over TLS all the same."""
    try:
        fetch_kafka()
    except (JavaNotFoundError, MavenNotFoundError) as exc:
        pytest.skip(str(exc))
    security = ensure_security(tmp_path, "PLAIN")
    env = security.client_env()
    with KafkaBroker(tmp_path, security=security, start_timeout=120.0) as broker:

        def ask(password: str) -> str:
            settings = load_settings(
                kafka_bootstrap_servers=broker.bootstrap_servers,
                kafka_security_protocol="SASL_SSL",
                kafka_sasl_mechanism="PLAIN",
                kafka_sasl_username=env["KAFKA_SASL_USERNAME"],
                kafka_sasl_password=password,
                kafka_ssl_cafile=env["KAFKA_SSL_CAFILE"],
            )
            return asyncio.run(cluster_id(settings))

        assert ask(env["KAFKA_SASL_PASSWORD"])
        with pytest.raises(BrokerAuthenticationError, match="refused the credentials"):
            ask("not-the-password")
