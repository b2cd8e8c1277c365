"""Figures of a process and of the machine, from ``/proc``: peak and current resident memory,
a background sampler of it, CPUs and total memory (used by ``nexttrack bench``)."""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path
from typing import Any


def parse_proc_kb(text: str) -> dict[str, int]:
    """``Key:   1234 kB`` lines (``/proc/<pid>/status``, ``/proc/meminfo``) as ``{key: kB}``;
    lines without a kB figure are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def memory_mb(status_text: str) -> dict[str, float | None]:
    """Peak (``VmHWM``) and current (``VmRSS``) resident memory in MB (MiB) from the text of
    ``/proc/<pid>/status``; ``None`` where the line is missing."""
    kb = parse_proc_kb(status_text)

    def mb(key: str) -> float | None:
        return round(kb[key] / 1024, 1) if key in kb else None

    return {"peak_rss_mb": mb("VmHWM"), "rss_mb": mb("VmRSS")}


def read_memory(pid: int) -> dict[str, float | None]:
    """:func:`memory_mb` of a live process (all ``None`` if it is gone or not on Linux)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        text = ""
    return memory_mb(text)


class RssSampler:
    """Samples a process's ``VmRSS`` every ``interval`` seconds in a thread; ``max_mb`` is the
    largest sample (a cross-check of ``VmHWM``)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.max_mb: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while True:
            rss = read_memory(self.pid)["rss_mb"]
            if rss is not None:
                self.samples += 1
                self.max_mb = rss if self.max_mb is None else max(self.max_mb, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def machine_info(meminfo_text: str | None = None) -> dict[str, Any]:
    """CPUs, total memory (MB, from ``/proc/meminfo``), Python and platform."""
    if meminfo_text is None:
        try:
            meminfo_text = Path("/proc/meminfo").read_text()
        except OSError:
            meminfo_text = ""
    total = parse_proc_kb(meminfo_text).get("MemTotal")
    return {
        "cpus": os.cpu_count(),
        "memory_total_mb": round(total / 1024) if total is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
