"""Forked children of the supervisor (:mod:`streams.worker.supervisor`): running one, tying
it to its parent's life, signalling one that may be gone already."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Exit status of a stop that had to kill children (second signal or ``stop_timeout``), and
#: of a child whose parent died before it could tie itself to it.
EXIT_KILLED = 1
#: Linux ``prctl`` option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def run_child(
    child_main: Callable[[int, int], int | None], index: int, attempt: int, parent: int
) -> int:
    """Run ``child_main`` in a fresh child of ``parent``; its exit status."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        die_with_parent(parent)
        result = child_main(index, attempt)
        code = 0 if result is None else int(result)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:
                pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    return code


def die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent (pid ``parent``) dies (Linux; elsewhere
    nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(EXIT_KILLED)


def send_signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
