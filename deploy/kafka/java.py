"""Find and check the ``java`` binary the broker runs on (Kafka 4.x brokers need Java 17+)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from deploy.kafka.errors import JavaNotFoundError

JAVA_ENV = "NEXTTRACK_JAVA"
MIN_JAVA = 17


def java_candidate(java: str | None = None) -> str | None:
    """The java to try: ``java``, ``$NEXTTRACK_JAVA``, ``$JAVA_HOME/bin/java``, or ``java`` on
    PATH; ``None`` when nothing is found."""
    if java:
        return java if os.sep in java else shutil.which(java)
    if os.environ.get(JAVA_ENV):
        return os.environ[JAVA_ENV]
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def resolve_java(java: str | None = None) -> str:
    """Return a working ``java`` path (Java 17 or newer), checked with ``java -version``.

    Raises:
        JavaNotFoundError: none found, not executable, ``-version`` fails, or too old.
    """
    path = java_candidate(java)
    if path is None:
        raise JavaNotFoundError(
            f"java not found{f' ({java!r})' if java else ''}; install a Java {MIN_JAVA}+ "
            f"runtime (e.g. apt-get install openjdk-17-jre-headless) or set {JAVA_ENV} or "
            "JAVA_HOME"
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise JavaNotFoundError(f"java at {path} does not exist or is not executable")
    try:
        proc = subprocess.run(
            [path, "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JavaNotFoundError(f"java at {path} does not run: {exc}") from None
    output = (proc.stderr + proc.stdout).strip()
    if proc.returncode != 0:
        raise JavaNotFoundError(
            f"java at {path} does not work: '{path} -version' exited {proc.returncode}"
            f"{': ' + output[-500:] if output else ' with no output'}"
        )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0_392" style
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise JavaNotFoundError(
                f"java at {path} is Java {major}; Kafka 4.x brokers need Java {MIN_JAVA}+"
            )
    return path
