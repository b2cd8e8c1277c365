"""What a feature of the worker may use: the one typed interface between the worker's core
and its features.

The core (:class:`streams.worker.app.NextTrackWorker`: the Faust app, the play path, the
``sessions`` table, delivery) implements :class:`WorkerCore`; every feature (the agents of
``streams.agents``, the views of ``streams.web``) receives it in its ``register(core)`` and
imports this module, never the app. The composition root (:mod:`streams.worker.compose`) is
the one place that knows every feature. Rule for new code: a feature needs something the core
has -> add it here, typed, with one line saying what it is for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import faust

    from serving.ab import Experiment, OnlineStats
    from serving.engine import RecommendationEngine
    from serving.model import ModelBundle
    from streams.delivery.commits import BatchCommitter
    from streams.delivery.durable_table import DurableTable
    from streams.delivery.gaps import GapGuard
    from streams.settings import Settings
    from streams.worker.live_stats import LiveStats
    from streams.worker.metrics import WorkerMetrics


class WorkerCore(Protocol):
    """The worker as its features see it."""

    #: The worker's settings (frozen).
    settings: Settings
    #: Its Prometheus metrics (one registry per worker).
    metrics: WorkerMetrics
    #: The Faust app: features declare their topics, tables, agents, timers and web views on it.
    app: faust.App
    #: The recommendation engine (its model and retrieval parameters); use under
    #: :attr:`model_lock`.
    engine: RecommendationEngine
    #: Held while the engine runs and while the model changes.
    model_lock: asyncio.Lock
    #: The ``sessions`` table (per-session state, changelog-backed).
    sessions: DurableTable
    #: The answers topic of the play path (bytes in, bytes out).
    recommendations_topic: Any
    #: A/B variants (``None`` without an experiment) and their online figures.
    experiment: Experiment | None
    ab_stats: OnlineStats
    #: Rolling throughput and latency for the status page.
    live_stats: LiveStats
    #: Knows the committed floor per partition (what this worker committed).
    committer: BatchCommitter
    #: Checks the first events after an assignment against the committed offsets.
    gap_guard: GapGuard
    #: Events every agent waits for before its first batch.
    start_gates: list[asyncio.Event]
    #: Extra ``/ready`` checks: name -> ``() -> (ok, detail)``.
    ready_checks: dict[str, Callable[[], tuple[bool, str]]]
    #: ``callback(old, new)`` run before a new model goes live (one raising rejects it).
    on_model_swap: list[Callable[[ModelBundle, ModelBundle], None]]
    #: ``(agent, n_events, error)``: a batch could not be completed; ends the process.
    on_fatal: Callable[[str, int, BaseException], None]

    @property
    def model(self) -> ModelBundle:
        """The model being served."""
        ...

    def model_info(self) -> dict[str, str]:
        """Version, encoder and catalog size of the model being served."""
        ...

    def use_model(self, model: ModelBundle) -> None:
        """Serve ``model`` from the next batch on (call between batches, under the lock)."""
        ...


#: A feature: adds its topics, tables, agents, timers and views to a worker.
Feature = Callable[[WorkerCore], None]
