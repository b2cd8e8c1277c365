"""Configuration: every variable documented (README table, .env.example) and validated with
a message naming it; secrets never rendered; Kafka security settings reach every client."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from streams.errors import ConfigError
from streams.logs import JsonFormatter, logging_config
from streams.settings import FUSION_SETTINGS, Settings, fusion_overridden, load_settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key-0123456789-abcdef"
SASL_PASSWORD = "sasl-password-do-not-leak-42"
CAFILE = "/etc/ssl/certs/ca-certificates.crt"


def env_names() -> list[str]:
    return [name.upper() for name in Settings.model_fields]


def readme_table_names() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1]
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.MULTILINE))


def test_every_variable_is_in_the_readme_table() -> None:
    documented = readme_table_names()
    assert not set(env_names()) - documented, "add these to README.md ## Configuration"
    assert not documented - set(env_names()), "README documents variables that do not exist"


#: ``NAME=value`` in .env.example: set, to the default.
EXAMPLE_SET = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
#: ``# NAME=value`` in .env.example: not set by default (and that means something).
EXAMPLE_UNSET = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*)$")


def env_example(text: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """The set and the commented assignments of .env.example; a name may appear once."""
    lines = (text if text is not None else (ROOT / ".env.example").read_text()).splitlines()
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in lines:
        for pattern, into in ((EXAMPLE_SET, active), (EXAMPLE_UNSET, commented)):
            match = pattern.match(line)
            if match:
                name, value = match.groups()
                assert name not in active and name not in commented, f"{name} given twice"
                into[name] = value
        if line.strip() and not line.startswith("#"):
            assert EXAMPLE_SET.match(line), f"not NAME=value: {line!r}"
    return active, commented


def unset_means_something(name: str) -> bool:
    """Variables whose absence is a choice of its own: optional ones (default: not set) and the
    fusion settings (any one set overrides the fusion chosen at training time)."""
    field = name.lower()
    return Settings.model_fields[field].default is None or field in FUSION_SETTINGS


def example_problems(text: str) -> list[str]:
    """Where an .env.example text disagrees with the settings object: a variable missing or
    given twice, a set value that is not the default, a set variable that is not set by
    default, a commented one that has a default. Empty when copying it to .env changes
    nothing."""
    try:
        active, commented = env_example(text)
    except AssertionError as exc:
        return [str(exc)]
    problems = []
    if set(active) | set(commented) != set(env_names()):
        problems.append(f"names differ: {set(active) ^ set(commented) ^ set(env_names())}")
    for name, value in active.items():
        field = name.lower()
        if field not in Settings.model_fields:
            continue
        if unset_means_something(name):
            problems.append(f"{name} is not set by default: comment it out")
            continue
        try:
            loaded = getattr(load_settings(**{field: value}), field)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if loaded != Settings.model_fields[field].default:
            problems.append(f"{name}={value} is not the default")
    for name, value in commented.items():
        field = name.lower()
        if field not in Settings.model_fields:
            continue
        default = Settings.model_fields[field].default
        if not unset_means_something(name):
            problems.append(f"{name} has a default ({default}): set it, uncommented")
        elif default is None and value != "":
            problems.append(f"{name} is not set by default: show no value")
        elif default is not None and getattr(load_settings(**{field: value}), field) != default:
            problems.append(f"# {name}={value}: the value taken when unset is {default}")
    if not problems:
        settings = load_settings(**{name.lower(): value for name, value in active.items()})
        if settings != Settings() or fusion_overridden(settings):
            problems.append("loading the example changes the settings")
    return problems


def test_env_example_agrees_with_the_settings() -> None:
    """Every variable once; copying .env.example to .env changes nothing: it sets only
    defaults, and leaves unset what is unset by default (the fusion settings above all:
    setting any of them overrides the fusion chosen at training time)."""
    assert example_problems((ROOT / ".env.example").read_text()) == []


@pytest.mark.parametrize(
    "line",
    [
        "ENCODER=mean",  # the weakest encoder instead of the one chosen on validation
        "FUSION_METHOD=weighted_sum",  # the default value, but set: overrides the manifest's
        "NB_WEIGHT=0.0",
        "TOP_K=20",
        "# TOP_K=10",
        "# API_KEY=0123456789abcdef0123",
        "API_KEY=",
    ],
)
def test_env_example_check_catches_a_wrong_line(line: str) -> None:
    text = (ROOT / ".env.example").read_text()
    name = re.match(r"^(?:# )?([A-Z_]+)=", line).group(1)  # type: ignore[union-attr]
    changed, n = re.subn(rf"^(?:# )?{name}=.*$", line, text, flags=re.MULTILINE)
    assert n == 1
    assert example_problems(changed), line
    removed, n = re.subn(rf"^(?:# )?{name}=.*\n", "", text, flags=re.MULTILINE)
    assert n == 1
    assert any("names differ" in problem for problem in example_problems(removed))


def test_env_example_as_dotenv_serves_the_trained_choices(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """.env.example copied to .env: the worker serves ENCODER=auto's encoder with the fusion
    and repeat rule its manifest chose, not the settings' fallback values."""
    from serving.model import best_encoder
    from streams.settings import retrieval_params

    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.encoder == "auto" and not fusion_overridden(settings)
    manifest = {
        "fusion": {
            "mean": {
                "fusion_method": "weighted_sum",
                "cf_weight": 0.7,
                "cb_weight": 0.3,
                "candidates": {"weighted_sum": {"hr@20": 0.2, "mrr@20": 0.1}},
            },
            "lstm": {
                "fusion_method": "rrf",
                "cf_weight": 0.4,
                "cb_weight": 0.1,
                "nb_weight": 0.5,
                "repeats": "allow",
                "candidates": {"rrf": {"hr@20": 0.3, "mrr@20": 0.1}},
            },
        }
    }
    served, _ = best_encoder(manifest, ["mean", "lstm"])
    assert served == "lstm"
    model = SimpleNamespace(
        artifacts=SimpleNamespace(manifest=manifest), encoder=SimpleNamespace(name=served)
    )
    params = retrieval_params(settings, model)  # type: ignore[arg-type]
    assert (params.fusion_method, params.cf_weight, params.cb_weight, params.nb_weight) == (
        "rrf",
        0.4,
        0.1,
        0.5,
    )
    assert params.repeats == "allow"


# -- invalid values ---------------------------------------------------------------------------

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN"}
#: name -> (invalid value, other variables it needs to be judged). "{file}" is a regular file.
INVALID: dict[str, tuple[str, dict[str, str]]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("localhost", {}),
    "KAFKA_SECURITY_PROTOCOL": ("TLS", {}),
    "KAFKA_CONNECT_TIMEOUT": ("0", {}),
    "KAFKA_SASL_MECHANISM": ("GSSAPI", {}),
    "KAFKA_SASL_USERNAME": (" admin", {}),
    "KAFKA_SASL_PASSWORD": ("", {**SASL, "KAFKA_SASL_USERNAME": "u"}),
    "KAFKA_SSL_CAFILE": ("/no/such/ca.pem", {}),
    "FETCH_LOOP": ("faust", {}),
    "TOPIC_PARTITIONS": ("0", {}),
    "TOPIC_REPLICATION_FACTOR": ("0", {}),
    "TABLE_STANDBY_REPLICAS": ("-1", {}),
    "TOPIC_MIN_INSYNC_REPLICAS": ("0", {}),
    "APP_ID": ("my app", {}),
    "ARTIFACTS_DIR": ("{file}", {}),
    "ENCODER": ("bert", {}),
    "TOP_K": ("0", {}),
    "BATCH_SIZE": ("0", {}),
    "BATCH_TIMEOUT_MS": ("0", {}),
    "STALL_TIMEOUT": ("0.5", {}),
    "MAX_EVENT_BYTES": ("10", {}),
    "SESSION_HISTORY": ("0", {}),
    "WEB_PORT": ("70000", {}),
    "WEB_HOST": ("", {}),
    "WEB_ADVERTISED_HOST": ("http://node-1:6066", {}),
    "DATA_DIR": ("{file}", {}),
    "CONSUMER_SESSION_TIMEOUT": ("0.5", {}),
    "TORCH_THREADS": ("0", {}),
    "FAISS_THREADS": ("many", {}),
    "WORKER_PROCESSES": ("none", {}),
    "USE_ANN_INDEX": ("maybe", {}),
    "ANN_INDEX_TYPE": ("lsh", {}),
    "ANN_CB_INDEX_TYPE": ("annoy", {}),
    "USE_CONTENT_BASED": ("perhaps", {}),
    "FUSION_METHOD": ("max", {}),
    "CF_WEIGHT": ("1.5", {}),
    "CB_WEIGHT": ("-0.1", {}),
    "NB_WEIGHT": ("2", {}),
    "REPEATS": ("sometimes", {}),
    "ENABLE_AUTH": ("maybe", {}),
    "API_KEY": ("short", {}),
    "METRICS_PUBLIC": ("yes please", {}),
    "STATUS_PUBLIC": ("2", {}),
    "RATE_LIMIT_REQUESTS": ("-1", {}),
    "RATE_LIMIT_WINDOW": ("0", {}),
    "HTTP_RATE_LIMIT_REQUESTS": ("-5", {}),
    "MAX_HTTP_BODY_BYTES": ("10", {}),
    "LOG_LEVEL": ("LOUD", {}),
    "LOG_FORMAT": ("xml", {}),
    "MAX_LAG_HEALTHY": ("-1", {}),
    "AB_VARIANTS": ("A:nope=1", {}),
    "MODEL_RELOAD_INTERVAL": ("-1", {}),
}
#: Consistency rules that name the variable they need.
MISSING: list[tuple[dict[str, str], str]] = [
    ({"ENABLE_AUTH": "true"}, "API_KEY"),
    ({"TOPIC_MIN_INSYNC_REPLICAS": "2"}, "TOPIC_REPLICATION_FACTOR"),
    ({**SASL, "KAFKA_SASL_PASSWORD": "pw"}, "KAFKA_SASL_USERNAME"),
]


def invalid_cases() -> list[tuple[str, str, dict[str, str]]]:
    cases = []
    for name in env_names():
        if name in INVALID:
            value, extra = INVALID[name]
        elif name.startswith("TOPIC_"):  # topics added later are covered automatically
            value, extra = "not a topic!", {}
        else:
            value, extra = "", {}
        cases.append((name, value, extra))
    return cases


def test_the_invalid_table_covers_every_variable() -> None:
    missing = [n for n in env_names() if n not in INVALID and not n.startswith("TOPIC_")]
    assert not missing, f"add an invalid value for {missing} to INVALID"


@pytest.mark.parametrize("name, value, extra", invalid_cases(), ids=[c[0] for c in invalid_cases()])
def test_invalid_value_is_refused_naming_the_variable(
    name: str, value: str, extra: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for key, val in {**extra, name: value.replace("{file}", str(a_file))}.items():
        monkeypatch.setenv(key, val)
    with pytest.raises(ConfigError, match=name):
        load_settings()


@pytest.mark.parametrize("env, needed", MISSING)
def test_inconsistent_settings_name_what_is_missing(
    env: dict[str, str], needed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    with pytest.raises(ConfigError, match=needed):
        load_settings()


def test_cli_worker_exits_2_with_the_variable_named(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "TOP_K": "0", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--artifacts", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "TOP_K" in proc.stderr and "Traceback" not in proc.stderr


# -- secrets ----------------------------------------------------------------------------------


def test_secrets_are_masked_in_repr_and_dump() -> None:
    settings = load_settings(
        enable_auth=True,
        api_key=API_KEY,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password=SASL_PASSWORD,
    )
    dumped = orjson.dumps(settings.redacted()).decode()
    for text in (repr(settings), str(settings), dumped):
        assert API_KEY not in text and SASL_PASSWORD not in text
    assert settings.redacted()["API_KEY"] == "**********"
    assert settings.redacted()["KAFKA_SASL_USERNAME"] == "svc"


# -- Kafka security reaches every client -------------------------------------------------------


def sasl_settings() -> Settings:
    if not Path(CAFILE).is_file():
        pytest.skip(f"no CA bundle at {CAFILE}")
    return load_settings(
        kafka_bootstrap_servers="broker-1:9093,broker-2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="nexttrack",
        kafka_sasl_password=SASL_PASSWORD,
        kafka_ssl_cafile=CAFILE,
    )


def test_aiokafka_kwargs_and_faust_credentials_from_settings() -> None:
    import ssl

    import faust

    from streams.kafka.config import aiokafka_kwargs, faust_broker_credentials

    settings = sasl_settings()
    kwargs = aiokafka_kwargs(settings)
    assert kwargs["bootstrap_servers"] == "broker-1:9093,broker-2:9093"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "nexttrack"
    assert kwargs["sasl_plain_password"] == SASL_PASSWORD
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    creds = faust_broker_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("nexttrack", SASL_PASSWORD)
    assert str(creds.mechanism.value) == "SCRAM-SHA-256"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    plain = aiokafka_kwargs(load_settings())
    assert plain["security_protocol"] == "PLAINTEXT" and "sasl_mechanism" not in plain
    assert faust_broker_credentials(load_settings()) is None
    ssl_only = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=CAFILE)
    assert isinstance(faust_broker_credentials(ssl_only), faust.SSLCredentials)


async def test_cli_clients_use_the_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.kafka.clients as clients

    seen: dict[str, dict[str, Any]] = {}

    class Stop(Exception):
        pass

    def fake(kind: str) -> Any:
        def build(*args: Any, **kwargs: Any) -> Any:
            seen[kind] = kwargs
            raise Stop

        return build

    for kind in ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"):
        monkeypatch.setattr(clients, kind, fake(kind))
    settings = sasl_settings()
    with pytest.raises(Stop):
        await clients.produce_lines(settings, "t", [b"x"])
    with pytest.raises(Stop):
        await clients.ensure_topics(settings, ["t"])
    with pytest.raises(Stop):
        async for _ in clients.consume_records(settings, ["t"]):
            pass
    assert set(seen) == {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
    for kwargs in seen.values():
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_plain_password"] == SASL_PASSWORD
        assert kwargs["ssl_context"] is not None


def test_worker_app_gets_broker_credentials(small_artifacts: Path, tmp_path: Path) -> None:
    from serving.model import load_model
    from streams.worker.compose import compose_worker

    settings = sasl_settings().model_copy(update={"data_dir": tmp_path, "app_id": "creds-test"})
    worker = compose_worker(
        settings, load_model(small_artifacts, "mean", index_type="flat"), table_store="memory://"
    )
    creds = worker.app.conf.broker_credentials
    assert creds.username == "nexttrack" and creds.password == SASL_PASSWORD
    assert [str(u) for u in worker.app.conf.broker] == [
        "nexttrack://broker-1:9093",  # our fetch loop, the default (FETCH_LOOP=ours)
        "nexttrack://broker-2:9093",
    ]


def test_replication_settings_reach_faust_and_the_topics_the_project_creates(
    small_artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOPIC_REPLICATION_FACTOR and TABLE_STANDBY_REPLICAS (defaults 1 and 0, one broker) are
    what Faust creates its changelogs with and what ensure_topics asks the broker for."""
    import asyncio

    from serving.model import load_model
    from streams.kafka import clients
    from streams.worker.compose import compose_worker

    assert (load_settings().topic_replication_factor, load_settings().table_standby_replicas) == (
        1,
        0,
    )
    monkeypatch.setenv("TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("TABLE_STANDBY_REPLICAS", "1")
    settings = load_settings(data_dir=tmp_path, app_id="replicas-test")
    worker = compose_worker(
        settings, load_model(small_artifacts, "mean", index_type="flat"), table_store="memory://"
    )
    assert worker.app.conf.topic_replication_factor == 3
    assert worker.app.conf.table_standby_replicas == 1

    created: list[tuple[str, int, int]] = []

    class Admin:
        def __init__(self, **_: object) -> None: ...

        async def start(self) -> None: ...

        async def close(self) -> None: ...

        async def list_topics(self) -> list[str]:
            return ["plays"]

        async def create_topics(self, topics: list) -> None:
            created.extend((t.name, t.num_partitions, t.replication_factor) for t in topics)

    monkeypatch.setattr(clients, "AIOKafkaAdminClient", Admin)
    asyncio.run(clients.ensure_topics(settings, ["plays", "recommendations"]))
    assert created == [("recommendations", 4, 3)]


@pytest.mark.parametrize(
    "replicas, given, expected", [(1, None, 1), (2, None, 1), (3, None, 2), (5, None, 2), (3, 3, 3)]
)
def test_min_insync_replicas_default_follows_the_replication_factor(
    replicas: int, given: int | None, expected: int
) -> None:
    """Unset, TOPIC_MIN_INSYNC_REPLICAS is the replication factor minus one, from 1 to 2: one
    broker down never stops writes, and with 3 replicas an acked write is on two brokers."""
    settings = load_settings(topic_replication_factor=replicas, topic_min_insync_replicas=given)
    assert settings.min_insync_replicas == expected
    assert settings.topic_config == {"min.insync.replicas": str(expected)}


def test_min_insync_replicas_reach_every_topic_the_project_creates(
    small_artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """min.insync.replicas goes with every topic ensure_topics creates, every topic the
    worker's Faust app reads (the full worker: plays, tracks, requests, feedback) and every
    table's changelog (sessions, catalog)."""
    import asyncio

    from aiokafka.admin import NewTopic

    from serving.model import load_model
    from streams.kafka import clients
    from streams.worker.compose import compose_worker
    from streams.worker.runner import worker_topics

    monkeypatch.setenv("TOPIC_REPLICATION_FACTOR", "3")
    settings = load_settings(data_dir=tmp_path, app_id="min-isr-test")
    want = {"min.insync.replicas": "2"}
    worker = compose_worker(
        settings, load_model(small_artifacts, "mean", index_type="flat"), table_store="memory://"
    )
    changelogs = {t.name: t.changelog_topic for t in worker.app.tables.values()}
    assert {"sessions", "catalog"} <= set(changelogs)
    for name, topic in changelogs.items():
        assert dict(topic.config or {}) == want, name
    sources = {name: a.channel for a in worker.app.agents.values() for name in a.channel.topics}
    assert {settings.topic_plays, settings.topic_tracks, settings.topic_feedback} <= set(sources)
    for name, topic in sources.items():
        assert dict(topic.config or {}) == want, name

    created: list[NewTopic] = []

    class Admin:
        def __init__(self, **_: object) -> None: ...

        async def start(self) -> None: ...

        async def close(self) -> None: ...

        async def list_topics(self) -> list[str]:
            return []

        async def create_topics(self, topics: list[NewTopic]) -> None:
            created.extend(topics)

    monkeypatch.setattr(clients, "AIOKafkaAdminClient", Admin)
    asyncio.run(clients.ensure_topics(settings, worker_topics(settings)))
    assert {t.name for t in created} == set(worker_topics(settings))
    assert {settings.topic_plays_dlq, settings.topic_recommendations} <= {t.name for t in created}
    for topic in created:
        assert (topic.replication_factor, dict(topic.topic_configs)) == (3, want), topic.name


# -- logs -------------------------------------------------------------------------------------


def test_json_log_format() -> None:
    record = logging.LogRecord(
        "streams.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    line = JsonFormatter().format(record)
    obj = orjson.loads(line)
    assert obj["level"] == "WARNING" and obj["logger"] == "streams.x"
    assert obj["message"] == "hello you" and obj["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "boom" in orjson.loads(JsonFormatter().format(record))["exc"]
    assert logging_config("INFO", "text") is None
    config = logging_config("DEBUG", "json")
    assert config is not None and config["root"]["level"] == "DEBUG"
