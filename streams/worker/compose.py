"""The composition root: the one place that knows every feature of a worker.

:func:`compose_worker` builds the core (:class:`streams.worker.app.NextTrackWorker`) and hands
it to each feature's ``register`` in :data:`FEATURES`, in start-up order; a feature sees only
:class:`streams.worker.core.WorkerCore`. A new feature is a module with a ``register(core)``
function, added to the list below.
"""

from __future__ import annotations

from pathlib import Path

from serving.model import ModelBundle
from streams.agents import catalog, feedback, reload, requests
from streams.settings import Settings
from streams.web import api, auth, openapi, ops
from streams.worker.app import NextTrackWorker
from streams.worker.core import Feature
from streams.worker.metrics import WorkerMetrics

#: Every feature beyond the play stream, in start-up order (authentication before the views
#: it guards; the live catalog before the agents that answer from it).
FEATURES: tuple[Feature, ...] = (
    auth.register,
    ops.register,
    feedback.register,
    reload.register,
    catalog.register,
    requests.register,
    api.register,
    openapi.register,
)


def compose_worker(
    settings: Settings,
    model: ModelBundle,
    *,
    metrics: WorkerMetrics | None = None,
    table_store: str = "rocksdb://",
    data_dir: Path | None = None,
) -> NextTrackWorker:
    """A worker core with every feature of :data:`FEATURES` registered."""
    worker = NextTrackWorker(
        settings, model, metrics=metrics, table_store=table_store, data_dir=data_dir
    )
    for register in FEATURES:
        register(worker)
    return worker
