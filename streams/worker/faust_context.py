"""Running table reads and writes under the right Faust event.

Faust tables (and the RocksDB store) find the partition of a key from the *current event*
(a context variable set while an agent iterates a stream). In a micro-batch from
``run_batches`` the current event is whichever came last, so before touching a
session's state we make that session's own event current. The context variable is Faust's
own (``faust.streams._current_event``); this module is the one place that knows it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from faust.streams import _current_event
from faust.types import EventT


@contextmanager
def event_context(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event for the duration of the block."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
