"""The worker group's status file: what the supervisor of ``nexttrack worker --processes N``
tells its children and its operator about every child.

The supervisor (:mod:`streams.worker.supervisor`) rewrites ``DATA_DIR/workers.json``
(:data:`GROUP_FILE`, replaced atomically) whenever a child starts, ends or is scheduled for a
restart, and when the group stops. Child ``n`` keeps its tables in ``DATA_DIR/<n>``, so a
child finds the file in the parent of its own ``DATA_DIR``; it trusts the file only if the
supervisor named there is its parent process (:func:`read_group`), so a worker started by
hand never shows a stale group. Every child's status page (``/status``) shows the group from
it; ``cat DATA_DIR/workers.json`` shows it too, whatever state the children are in.

The document (JSON)::

    {"supervisor_pid": 4100, "app_id": "nexttrack", "state": "running",
     "updated_at": 1718000000.0,
     "workers": [{"index": 0, "port": 6066, "pid": 4101, "state": "running",
                  "started_at": 1718000000.0, "restarts": 1,
                  "restarts_by_reason": {"self_stop": 1, "error": 0, ...},
                  "last_exit": "exit status 70", "restart_at": null}, ...]}

Group states: ``running``, ``stopping``, ``stopped``, ``crash_loop`` (a child crash-looped:
the supervisor stopped every child and exited 70). Worker states: ``running``,
``restarting`` (ended; ``restart_at`` is when it starts again), ``stopped``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

#: The status file's name, in the supervisor's ``DATA_DIR``.
GROUP_FILE = "workers.json"
#: Why a child ended, as ``nexttrack_worker_restarts_total{reason}`` counts its restarts.
RESTART_REASONS = ("self_stop", "error", "signal", "clean_exit")
#: Exit status of a worker that stopped itself (``streams.delivery.stop``).
_SELF_STOP = 70


def restart_reason(code: int) -> str:
    """The reason label of an exit (``os.waitstatus_to_exitcode``: minus the signal for a
    process a signal ended): ``self_stop`` (exit status 70: a batch the worker could not
    complete, skipped offsets, a stalled partition), ``error`` (another non-zero status),
    ``signal`` (killed, e.g. by SIGKILL or the kernel's OOM killer) or ``clean_exit``
    (status 0 without being asked to stop)."""
    if code < 0:
        return "signal"
    if code == _SELF_STOP:
        return "self_stop"
    return "error" if code else "clean_exit"


def export_restarts(counter: Counter, slot: int, restarts: Mapping[str, int]) -> None:
    """Set ``nexttrack_worker_restarts_total{worker=slot}`` (``counter``, fresh in a new
    child) to the slot's ``restarts`` by reason, every reason exported (at 0 too, so
    ``increase()`` sees the first)."""
    for reason in RESTART_REASONS:
        counter.labels(str(slot), reason).inc(restarts.get(reason, 0))


def write_group(path: Path, document: dict[str, Any]) -> None:
    """Replace the status file at ``path`` with ``document`` (atomically: a reader sees the
    old file or the new one, never half of one). A failure is logged, not raised: the
    workers run on without it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write the worker group's status to %s: %s", path, exc)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def read_group(data_dir: Path, *, parent_pid: int | None = None) -> dict[str, Any] | None:
    """The group of the worker whose ``DATA_DIR`` is ``data_dir``: the status file in its
    parent directory, if the supervisor it names is ``parent_pid`` (default: this process's
    parent); else ``None`` (not run under a supervisor, or a file left by an earlier one)."""
    path = data_dir.parent / GROUP_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    expected = os.getppid() if parent_pid is None else parent_pid
    if not isinstance(document, dict) or document.get("supervisor_pid") != expected:
        return None
    return document
