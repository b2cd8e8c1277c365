"""Figures of a process and of the machine, from ``/proc``: peak and current resident memory,
a background sampler of it, the proportional set size of a group of processes (sampled, its
peak summed over the group), CPUs and total memory (used by ``nexttrack bench``)."""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable, Mapping
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


# -- proportional set size (PSS): memory shared between processes counted once in total ---


def pss_mb(smaps_rollup_text: str) -> float | None:
    """The proportional set size in MB (MiB) from the text of ``/proc/<pid>/smaps_rollup``
    (``Pss:`` line): each page the process maps divided by the number of processes that map
    it, so the PSS of a group of processes adds up to the memory they hold together (pages
    shared after a fork count once in the sum, where RSS counts them once per process).
    ``None`` when the line is missing."""
    kb = parse_proc_kb(smaps_rollup_text).get("Pss")
    return round(kb / 1024, 1) if kb is not None else None


def read_pss(pid: int) -> float | None:
    """:func:`pss_mb` of a live process (``None`` if it is gone, not readable, or not Linux)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    return pss_mb(text)


#: Issue #27's memory target for N worker processes (lstm over 100k tracks), in MB: the
#: sum of the processes' PSS at its peak at most 400 MB + 150 MB x (N - 1).
PSS_TARGET_BASE_MB = 400.0
PSS_TARGET_PER_EXTRA_MB = 150.0


def pss_target_mb(processes: int) -> float:
    """The target for ``processes`` workers: 400 MB for one, 150 MB more for each other."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    return PSS_TARGET_BASE_MB + PSS_TARGET_PER_EXTRA_MB * (processes - 1)


class PssSampler:
    """Samples the PSS of a set of processes every ``interval`` seconds in a thread and keeps
    the peak of their sum (PSS has no high-water mark of its own, so this is a sampled peak).

    ``pids`` names the processes (label -> pid) at each sample, so a group whose children
    appear after the start (a supervisor and the workers it forks) is followed as it grows.
    """

    def __init__(self, pids: Callable[[], Mapping[str, int]], interval: float = 1.0) -> None:
        self._pids = pids
        self.interval = interval
        #: The largest sum sampled, and each process's PSS in that sample.
        self.peak_mb: float | None = None
        self.at_peak_mb: dict[str, float] = {}
        #: Each process's own largest sample.
        self.max_mb: dict[str, float] = {}
        self.last_mb: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def sample(self) -> None:
        """Read every process's PSS once; processes that are gone are left out of the sum."""
        try:
            pids = dict(self._pids())
        except Exception:  # a status file half-read, for example: skip this sample
            return
        readings = {label: read_pss(pid) for label, pid in pids.items()}
        known = {label: mb for label, mb in readings.items() if mb is not None}
        if not known:
            return
        self.samples += 1
        self.last_mb = known
        for label, mb in known.items():
            self.max_mb[label] = max(mb, self.max_mb.get(label, mb))
        total = round(sum(known.values()), 1)
        if self.peak_mb is None or total > self.peak_mb:
            self.peak_mb, self.at_peak_mb = total, known

    def figures(self, processes: int) -> dict[str, Any]:
        """The figures of ``processes`` workers: peak of the sum, the processes at that peak,
        each one's own largest sample, and issue #27's target for that many workers."""
        target = pss_target_mb(processes)
        return {
            "pss_peak_mb": self.peak_mb,
            "pss_at_peak_mb": self.at_peak_mb,
            "pss_max_mb_per_process": self.max_mb,
            "pss_last_mb": round(sum(self.last_mb.values()), 1) if self.last_mb else None,
            "pss_samples": self.samples,
            "pss_target_mb": target,
            "pss_within_target": None if self.peak_mb is None else self.peak_mb <= target,
        }

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()  # one last reading, after the runs
