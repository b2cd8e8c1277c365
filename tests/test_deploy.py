"""Static checks of the container files (deploy/Dockerfile, deploy/compose.yml) and of the
dependency bounds in pyproject.toml.

No Docker engine runs where the tests run, so nothing is built or started here; instead the
files are parsed and cross-checked against the code: every environment name is a worker
setting, ports agree (WEB_PORT, health check, Prometheus target), referenced paths exist, the
images are multi-stage and run as a non-root user, the worker's with a health check on
/health. The Dockerfile builds two images: the worker (``runtime``, the default target) with
the core dependencies only, and the trainer (``--target trainer``) with the ``train`` extra and
CPU-only PyTorch; each image is checked through the stages it is built from (its ``FROM``
chain and the stages it copies from).
"""

from __future__ import annotations

import json
import logging.config
import re
import shlex
import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from streams.logs import QUIET_LOGGERS, logging_config, quiet_library_loggers
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Environment names of the worker: its settings' field names in upper case.
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
#: Variables of the image that are not worker settings (Python, pip, the shell).
NON_SETTINGS_ENV = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}
#: Host paths compose mounts that the repository does not hold: written at run time.
RUNTIME_HOST_PATHS = {"../artifacts": "/artifacts/"}  # `nexttrack train --out artifacts/...`
#: The stages of the two images: the worker (the last stage: the default target) and the
#: trainer (``docker build --target trainer``).
WORKER_TARGET = "runtime"
TRAINER_TARGET = "trainer"
#: What only the ``train`` extra brings: none of it may reach the worker image.
TRAIN_ONLY = ("torch", "download.pytorch.org", "[train]", "lightfm", "scipy", "matplotlib", "tqdm")


# -- Dockerfile parsing ---------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    out: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def env_assignments(args: str) -> dict[str, str]:
    """``ENV A=1 B=2`` (or the legacy ``ENV A 1``) as a mapping."""
    parts = shlex.split(args)
    if parts and "=" not in parts[0]:
        return {parts[0]: " ".join(parts[1:])}
    return dict(part.split("=", 1) for part in parts)


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and "services" in data
    return data


def of(instructions: list[Instruction], keyword: str, stage: int | None = None) -> list[str]:
    return [
        i.args for i in instructions if i.keyword == keyword and (stage is None or i.stage == stage)
    ]


def final_stage(instructions: list[Instruction]) -> int:
    return max(i.stage for i in instructions)


def stage_names(instructions: list[Instruction]) -> dict[str, int]:
    """Stage name (``FROM image AS name``, lower case) -> its index."""
    names = {}
    for i in instructions:
        if i.keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", i.args, re.IGNORECASE)
            assert match, f"every stage is named: FROM {i.args}"
            names[match.group(2).lower()] = i.stage
    return names


def lineage(instructions: list[Instruction], stage: int) -> list[int]:
    """The stage and the stages it is built ``FROM``, root first: what its image inherits."""
    names = stage_names(instructions)
    base = next(i.args.split()[0] for i in instructions if i.keyword == "FROM" and i.stage == stage)
    parent = names.get(base.lower())
    assert parent is None or parent < stage, f"stage {stage} is built from a later stage"
    return ([] if parent is None else lineage(instructions, parent)) + [stage]


def built_from(instructions: list[Instruction], target: str) -> list[int]:
    """Every stage the image of ``target`` is built from: its lineage and, recursively, the
    stages it copies files from (``COPY --from=stage``), in file order."""
    names = stage_names(instructions)
    found: set[int] = set()
    todo = [names[target]]
    while todo:
        for stage in lineage(instructions, todo.pop()):
            if stage in found:
                continue
            found.add(stage)
            for args in of(instructions, "COPY", stage):
                match = re.search(r"--from=(\S+)", args)
                if match:
                    todo.append(names[match.group(1).lower()])
    return sorted(found)


def in_image(instructions: list[Instruction], keyword: str, target: str) -> list[str]:
    """The ``keyword`` instructions the image of ``target`` inherits (its lineage)."""
    stages = lineage(instructions, stage_names(instructions)[target])
    return [i.args for i in instructions if i.keyword == keyword and i.stage in stages]


def runs_building(instructions: list[Instruction], target: str) -> list[str]:
    """Every ``RUN`` that goes into the image of ``target``, in file order."""
    stages = built_from(instructions, target)
    return [i.args for i in instructions if i.keyword == "RUN" and i.stage in stages]


def image_env(instructions: list[Instruction], target: str = WORKER_TARGET) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in in_image(instructions, "ENV", target):
        env.update(env_assignments(args))
    return env


def project_installs(runs: list[str]) -> list[str]:
    """The ``pip install .`` / ``pip install '.[extra]'`` commands among ``runs``."""
    return [
        r for r in runs if re.search(r"pip install (?:\.|'\.\[[^\]]*\]'|\"\.\[[^\]]*\]\")(\s|$)", r)
    ]


# -- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_copies_from_a_named_stage(
    dockerfile: list[Instruction],
) -> None:
    froms = of(dockerfile, "FROM")
    assert len(froms) >= 2, "expected a builder and a runtime stage"
    stages = stage_names(dockerfile)  # every stage is named
    copied_from = re.findall(r"--from=(\S+)", " ".join(of(dockerfile, "COPY")))
    assert copied_from and {c.lower() for c in copied_from} <= set(stages)
    # Only the images' own layers ship: no compiler there (the builders' stay behind).
    for target in (WORKER_TARGET, TRAINER_TARGET):
        image_runs = " ".join(in_image(dockerfile, "RUN", target))
        assert "build-essential" not in image_runs and "gcc" not in image_runs, target


def test_dockerfile_base_python_satisfies_requires_python(dockerfile: list[Instruction]) -> None:
    args = " ".join(of(dockerfile, "ARG"))
    match = re.search(r"PYTHON_IMAGE=python:(\d+\.\d+)", args)
    assert match, "the base image is pinned to a Python minor version"
    assert Version(match.group(1)) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_the_worker_is_the_default_target_and_the_trainer_a_target(
    dockerfile: list[Instruction],
) -> None:
    """``docker build`` without ``--target`` (and compose) builds the last stage: the worker."""
    stages = stage_names(dockerfile)
    assert stages[WORKER_TARGET] == final_stage(dockerfile)
    assert TRAINER_TARGET in stages
    assert in_image(dockerfile, "ENTRYPOINT", TRAINER_TARGET)[-1] == '["nexttrack"]'


def test_the_worker_image_installs_the_core_dependencies_only(
    dockerfile: list[Instruction],
) -> None:
    """No torch wheel, no ``.[train]``: ``pip install .`` and nothing of the train extra in
    any stage the worker image is built from."""
    runs = runs_building(dockerfile, WORKER_TARGET)
    for run in runs:
        for word in TRAIN_ONLY:
            assert word not in run, f"the worker image installs {word}: RUN {run}"
    installs = project_installs(runs)
    assert installs and all(re.search(r"pip install \.(\s|$)", r) for r in installs), installs
    worker_args = [
        a for s in built_from(dockerfile, WORKER_TARGET) for a in of(dockerfile, "ARG", s)
    ]
    assert not [a for a in worker_args if "TORCH" in a], worker_args


def test_the_trainer_image_installs_cpu_torch_then_the_train_extra(
    dockerfile: list[Instruction],
) -> None:
    runs = runs_building(dockerfile, TRAINER_TARGET)
    torch_runs = [r for r in runs if "torch" in r]
    assert len(torch_runs) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_runs[0]
    match = re.search(r"TORCH_VERSION=(\S+)", " ".join(of(dockerfile, "ARG")))
    assert match
    torch_req = next(
        Requirement(r)
        for r in PYPROJECT["project"]["optional-dependencies"]["train"]
        if Requirement(r).name == "torch"
    )
    assert torch_req.specifier.contains(match.group(1))
    # torch before the train extra: `pip install '.[train]'` then keeps the CPU build.
    train_install = next(i for i, r in enumerate(runs) if "[train]" in r)
    assert re.search(r"pip install '\.\[train\]'", runs[train_install])
    assert runs.index(torch_runs[0]) < train_install
    assert "pip check" in runs[train_install]


def test_dockerfile_copies_existing_paths_and_every_package(dockerfile: list[Instruction]) -> None:
    sources: list[str] = []
    for args in of(dockerfile, "COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        if "--from=" in args:
            continue
        sources += parts[:-1]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    # Everything `pip install .` needs: pyproject, its readme, each package it includes.
    copied = {s.rstrip("/") for s in sources}
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    assert set(PYPROJECT["project"].get("license-files", [])) <= copied  # else the build fails
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = {p.rstrip("*") for p in include}
    for package in top_level:
        assert package in copied or f"{package}/__init__.py" in copied, package
        for init in (ROOT / package).rglob("__init__.py"):
            sub = init.parent.relative_to(ROOT).as_posix()
            assert any(sub == c or sub.startswith(c + "/") for c in copied) or (
                sub == package and f"{package}/__init__.py" in copied
            ), f"package {sub} is not copied into the image"


@pytest.mark.parametrize("target", [WORKER_TARGET, TRAINER_TARGET])
def test_dockerfile_runs_as_non_root(dockerfile: list[Instruction], target: str) -> None:
    users = in_image(dockerfile, "USER", target)
    assert users, f"the {target} image sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "numeric, so orchestrators can verify runAsNonRoot"


def test_dockerfile_healthcheck_polls_health_on_web_port(dockerfile: list[Instruction]) -> None:
    checks = in_image(dockerfile, "HEALTHCHECK", WORKER_TARGET)
    assert len(checks) == 1
    check = checks[0]
    assert "CMD" in check and "/health" in check
    assert "WEB_PORT" in check, "the probe follows the configured port"
    env = image_env(dockerfile)
    assert in_image(dockerfile, "EXPOSE", WORKER_TARGET) == [env["WEB_PORT"]]
    # The trainer is a batch job with no web server: a health check would mark it unhealthy.
    assert not in_image(dockerfile, "HEALTHCHECK", TRAINER_TARGET)


def test_dockerfile_entrypoint_passes_artifacts_and_web_port(dockerfile: list[Instruction]) -> None:
    """``nexttrack worker`` requires --artifacts and its --web-port default wins over
    WEB_PORT, so both come from the environment the health check and compose use."""
    entry = json.loads(in_image(dockerfile, "ENTRYPOINT", WORKER_TARGET)[-1])
    assert entry[:2] == ["/bin/sh", "-c"]
    script = shlex.split(entry[2])
    assert script[:3] == ["exec", "nexttrack", "worker"]  # exec: signals reach Python
    assert script[script.index("--artifacts") + 1] == "$ARTIFACTS_DIR"
    assert script[script.index("--web-port") + 1] == "$WEB_PORT"
    assert script[-1] == "$@", "docker run / compose command arguments are appended"


def test_dockerfile_environment_names_are_settings_and_volumes_match(
    dockerfile: list[Instruction],
) -> None:
    env = image_env(dockerfile)
    unknown = set(env) - SETTINGS_ENV - NON_SETTINGS_ENV
    assert not unknown, f"not worker settings: {sorted(unknown)}"
    Settings(**{k.lower(): v for k, v in env.items() if k in SETTINGS_ENV})  # valid values
    volumes = " ".join(in_image(dockerfile, "VOLUME", WORKER_TARGET))
    assert env["DATA_DIR"] in volumes
    # ARTIFACTS_DIR sits inside /artifacts: training renames a sibling into place.
    assert Path(env["ARTIFACTS_DIR"]).parent == Path("/artifacts")


# -- compose --------------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}")


def test_compose_runs_broker_worker_and_prometheus(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "worker", "prometheus"} <= set(services)
    root_compose = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    assert services["kafka"]["image"] == root_compose["services"]["kafka"]["image"]
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert worker["build"]["target"] == WORKER_TARGET  # the worker image, without the trainer
    assert (DEPLOY / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == (
        DOCKERFILE
    )
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"


#: The worker variables compose gives a value: what the containers need to work together.
COMPOSE_FIXED = {
    "KAFKA_BOOTSTRAP_SERVERS",
    "ARTIFACTS_DIR",
    "DATA_DIR",
    "WEB_PORT",
    "METRICS_PUBLIC",
}
#: Settings compose does not pass through: its broker listens in PLAINTEXT only, and the
#: published ports need the image's WEB_HOST=0.0.0.0.
COMPOSE_LEFT_OUT = {
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CAFILE",
    "WEB_HOST",
}


def env_example_names() -> set[str]:
    """Names .env.example lists, set (``NAME=``) or commented (``# NAME=``)."""
    return {
        match.group(1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if (match := re.match(r"^(?:# )?([A-Z][A-Z0-9_]*)=", line))
    }


def test_compose_environment_names_are_settings(compose: dict[str, Any]) -> None:
    worker_env = compose["services"]["worker"]["environment"]
    assert isinstance(worker_env, dict)
    assert not set(worker_env) - SETTINGS_ENV, sorted(set(worker_env) - SETTINGS_ENV)
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    assert not used - SETTINGS_ENV, f"${{...}} of non-settings: {sorted(used - SETTINGS_ENV)}"
    assert set(worker_env) | used <= env_example_names(), "every name is in .env.example"


def test_compose_passes_through_only_what_the_user_sets(compose: dict[str, Any]) -> None:
    """No ``${NAME:-default}`` overrides the worker's defaults (``ENCODER: ${ENCODER:-mean}``
    served the weakest encoder and turned off the fusion chosen at training time): every
    setting but the few the containers need is passed through bare (``NAME:``), which compose
    leaves unset in the container unless the shell or deploy/.env sets it."""
    worker_env = compose["services"]["worker"]["environment"]
    fixed = {name for name, value in worker_env.items() if value is not None}
    assert fixed == COMPOSE_FIXED
    assert not INTERPOLATION.search(COMPOSE.read_text()), "no ${...} in compose.yml"
    passed = {name for name, value in worker_env.items() if value is None}
    assert passed == SETTINGS_ENV - COMPOSE_FIXED - COMPOSE_LEFT_OUT, (
        "pass every other setting through, or list it in COMPOSE_LEFT_OUT with the reason"
    )


def test_compose_values_are_valid_settings(compose: dict[str, Any]) -> None:
    """The values compose sets pass the worker's own validation (bad values would stop it
    with exit code 2)."""
    values = {
        name.lower(): str(value)
        for name, value in compose["services"]["worker"]["environment"].items()
        if value is not None
    }
    values.pop("artifacts_dir")  # exists only where the volume is mounted
    values.pop("data_dir")
    settings = Settings(**values)
    assert settings.kafka_bootstrap_servers == "kafka:19092"
    assert settings.metrics_public and settings.web_port == 6066


def test_compose_worker_reaches_the_broker(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    bootstrap = compose["services"]["worker"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    advertised = {
        entry.split("://", 1)[1]: entry.split("://", 1)[0]
        for entry in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    assert bootstrap in advertised, "the worker bootstraps from an advertised listener"
    host, port = bootstrap.rsplit(":", 1)
    assert host in compose["services"], "advertised under its compose service name"
    listeners = {
        e.split("://")[0]: e.rsplit(":", 1)[1] for e in kafka["KAFKA_LISTENERS"].split(",")
    }
    assert listeners[advertised[bootstrap]] == port
    assert advertised[bootstrap] in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]


def test_ports_agree_worker_healthcheck_prometheus(
    compose: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    worker = compose["services"]["worker"]
    port = int(worker["environment"]["WEB_PORT"])
    assert port == int(image_env(dockerfile)["WEB_PORT"])
    # Published container port.
    container_ports = {int(str(p).rsplit(":", 1)[1]) for p in worker["ports"]}
    assert container_ports == {port}
    # Prometheus scrapes that port on the worker service, at /metrics.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "nexttrack-worker")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    sd = job["dns_sd_configs"]
    assert [c["port"] for c in sd] == [port]
    assert [c["names"] for c in sd] == [["worker"]]
    # /metrics needs no key when auth is on: Prometheus sends none.
    assert str(worker["environment"]["METRICS_PUBLIC"]).lower() == "true"
    assert "authorization" not in job


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/")):
                assert source in compose.get("volumes", {}), f"{name}: named volume {source}"
                continue
            if source in RUNTIME_HOST_PATHS:
                assert RUNTIME_HOST_PATHS[source] in gitignore, f"{source} is ignored by git"
                continue
            assert (DEPLOY / source).exists(), f"{name} mounts {source}: not in the repository"


def test_compose_prometheus_loads_the_repository_config_and_rules(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {
        v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve()
        for v in prometheus["volumes"]
        if v.startswith(".")
    }
    config_path = next(
        a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file=")
    )
    assert mounts[config_path] == DEPLOY / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(mounts[config_path].read_text())
    config_dir = Path(config_path).parent
    for pattern in config["rule_files"]:
        in_container = config_dir / pattern
        host_dir = mounts[str(in_container.parent)]
        found = sorted(host_dir.glob(in_container.name))
        assert found, f"rule_files {pattern} matches nothing"
        assert {p.name for p in found} == {"alerts.yml", "recording.yml"}


def test_compose_artifacts_mount_is_the_parent_of_artifacts_dir(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    artifacts = Path(worker["environment"]["ARTIFACTS_DIR"])
    targets = {v.split(":")[1] for v in worker["volumes"]}
    assert str(artifacts.parent) in targets
    assert artifacts.parent != Path("/")


# -- logging --------------------------------------------------------------------------------


def test_faiss_loader_is_quiet() -> None:
    """FAISS's loader logs six INFO lines per import; the worker's logging keeps it at
    WARNING in both formats."""
    assert QUIET_LOGGERS["faiss.loader"] == "WARNING"
    config = logging_config("INFO", "json")
    assert config is not None and config["loggers"]["faiss.loader"]["level"] == "WARNING"
    logger = logging.getLogger("faiss.loader")
    before = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        quiet_library_loggers()
        assert logger.getEffectiveLevel() == logging.WARNING
        # Faust's own (text) configuration keeps it: disable_existing_loggers=False.
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(before)


def test_faiss_import_is_silent_after_quiet_library_loggers(tmp_path: Path) -> None:
    """In a fresh interpreter configured like the CLI (root at INFO), importing FAISS after
    :func:`quiet_library_loggers` writes no loader line."""
    import subprocess
    import sys

    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
        "from streams.logs import quiet_library_loggers; quiet_library_loggers(); "
        "import faiss; logging.getLogger('probe').info('done')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "INFO:probe:done" in result.stderr
    assert "faiss.loader" not in result.stderr, result.stderr


# -- dependency bounds ----------------------------------------------------------------------

#: Dependencies whose APIs and internals the code relies on by version: bounded above.
BOUNDED = {"faust-streaming", "aiokafka"}


def test_version_sensitive_dependencies_are_bounded() -> None:
    reqs = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    for name in BOUNDED:
        spec = reqs[name].specifier
        assert any(s.operator == "<" for s in spec), f"{name} has no upper bound: {spec}"
        assert any(s.operator == ">=" for s in spec), f"{name} has no lower bound: {spec}"


@pytest.mark.parametrize(
    "requirement",
    [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"]["train"],
        *PYPROJECT["project"]["optional-dependencies"]["test"],
    ],
)
def test_installed_versions_satisfy_pyproject(requirement: str) -> None:
    """What the suite runs against is what pyproject allows (so its bounds are tested)."""
    req = Requirement(requirement)
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed: run `make venv`")
    assert req.specifier.contains(installed, prereleases=True), (
        f"{req.name} {installed} does not satisfy {req.specifier}"
    )
