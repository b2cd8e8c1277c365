"""Fetch the Kafka broker jars from Maven Central into a cache directory outside the repo.

The jars are listed by ``deploy/kafka/pom.xml``; ``mvn dependency:copy-dependencies`` copies
them into ``<cache>/kafka-<version>/libs``. A marker file written after a complete copy makes
the fetch a no-op the next time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from deploy.kafka.errors import MavenError, MavenNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
CACHE_ENV = "NEXTTRACK_CACHE_DIR"
MVN_ENV = "NEXTTRACK_MVN"
MARKER_NAME = ".complete"
POM_PATH = Path(__file__).with_name("pom.xml")


def cache_root() -> Path:
    """The cache root: ``$NEXTTRACK_CACHE_DIR`` or ``~/.cache/nexttrack``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nexttrack"


def kafka_home(version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | str | None = None) -> Path:
    """The directory holding ``libs/`` for one Kafka version (it may not exist yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / f"kafka-{version}"


def libs_complete(libs: Path, version: str) -> bool:
    """Whether ``libs`` holds a finished fetch of ``version`` (marker plus the core jar)."""
    marker = libs.parent / MARKER_NAME
    return (
        marker.is_file()
        and marker.read_text().strip() == version
        and (libs / f"kafka_2.13-{version}.jar").is_file()
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(_ANSI.sub("", text).strip().splitlines()[-lines:])


def fetch_kafka(
    version: str = DEFAULT_KAFKA_VERSION,
    *,
    cache_dir: Path | str | None = None,
    mvn: str | None = None,
    timeout: float = 900.0,
) -> Path:
    """Make sure the jars of Kafka ``version`` are cached and return their ``libs`` directory.

    Idempotent and safe to call from several processes at once (a file lock serialises them).
    ``mvn`` defaults to ``$NEXTTRACK_MVN`` or ``mvn`` on ``PATH``.

    Raises:
        MavenNotFoundError: no ``mvn`` binary.
        MavenError: ``mvn`` failed or ran past ``timeout`` seconds (message has its output tail).
    """
    home = kafka_home(version, cache_dir)
    libs = home / "libs"
    if libs_complete(libs, version):
        return libs
    mvn_name = mvn or os.environ.get(MVN_ENV) or "mvn"
    mvn_path = shutil.which(mvn_name)
    if mvn_path is None:
        raise MavenNotFoundError(
            f"Maven ('{mvn_name}') not found; install Maven 3.6+ (needed once, to download "
            f"the Kafka {version} jars into {libs}) or set {MVN_ENV}"
        )
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if libs_complete(libs, version):  # another process fetched while we waited
            return libs
        _run_mvn(mvn_path, version, home, timeout)
    return libs


def _run_mvn(mvn_path: str, version: str, home: Path, timeout: float) -> None:
    libs = home / "libs"
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    pom = home / "pom.xml"
    shutil.copyfile(POM_PATH, pom)
    cmd = [
        mvn_path,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
    ]
    logger.info("fetching Kafka %s jars with Maven into %s (first time only)", version, libs)
    try:
        proc = subprocess.run(
            cmd,
            cwd=home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        raise MavenError(
            f"mvn timed out after {timeout:.0f}s fetching Kafka {version}; output tail:\n"
            f"{_tail(text)}"
        ) from None
    except OSError as exc:
        raise MavenNotFoundError(f"cannot run Maven at {mvn_path}: {exc}") from None
    if proc.returncode != 0:
        raise MavenError(
            f"mvn failed (exit {proc.returncode}) fetching Kafka {version} (is Maven Central "
            f"reachable and is {version} a released version?); output tail:\n"
            f"{_tail(proc.stdout + proc.stderr)}"
        )
    if not (partial / f"kafka_2.13-{version}.jar").is_file():
        raise MavenError(
            f"mvn succeeded but kafka_2.13-{version}.jar is missing from {partial}; output:\n"
            f"{_tail(proc.stdout + proc.stderr)}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    (home / MARKER_NAME).write_text(version + "\n")
    logger.info("Kafka %s jars ready in %s", version, libs)
