"""Starting a worker process: threads, model, Faust app, Faust's own worker loop."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from serving.model import ModelBundle, load_model
from serving.threads import set_threads
from streams.errors import ConfigError
from streams.kafka.clients import cluster_id, end_offsets, ensure_topics
from streams.settings import Settings
from streams.worker.app import NextTrackWorker
from streams.worker.compose import compose_worker
from streams.worker.group import export_restarts
from streams.worker.local_state import (
    PartitionStore,
    find_stale,
    other_clusters,
    state_dir,
    wipe,
)

log = logging.getLogger(__name__)

TableStore = Literal["rocksdb", "memory"]


def load_served_model(settings: Settings) -> ModelBundle:
    """The model ``settings`` name (``ARTIFACTS_DIR``, ``ENCODER``, the index settings)."""
    if settings.artifacts_dir is None:
        raise ConfigError("ARTIFACTS_DIR is not set (or pass --artifacts DIR)")
    return load_model(
        settings.artifacts_dir,
        settings.encoder,
        index_type=settings.ann_index_type,
        cb_index_type=settings.ann_cb_index_type,
        use_ann=settings.use_ann_index,
        use_content=settings.use_content_based,
    )


def build_worker(
    settings: Settings,
    *,
    table_store: TableStore = "rocksdb",
    data_dir: Path | None = None,
    model: ModelBundle | None = None,
) -> NextTrackWorker:
    """Wire a worker around ``model`` (default: load the one ``settings`` name); its tables
    live in ``data_dir`` (default ``DATA_DIR``)."""
    if model is None:
        model = load_served_model(settings)
    data_dir = data_dir or settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    set_threads(settings.torch_threads, settings.faiss_threads)
    return compose_worker(settings, model, table_store=f"{table_store}://", data_dir=data_dir)


def worker_topics(settings: Settings) -> list[str]:
    """Every topic named in settings (inputs, outputs and dead-letter topics)."""
    return [
        value
        for name, value in settings.model_dump().items()
        if name.startswith("topic_") and isinstance(value, str)
    ]


def reset_stale_tables(worker: NextTrackWorker) -> int:
    """Wipe local table partitions that are ahead of their changelogs (see
    :mod:`streams.worker.local_state`); returns how many were wiped."""
    stores: list[PartitionStore] = []
    for table in worker.app.tables.values():
        changelog = table.changelog_topic.get_topic_name()
        partitions = table.partitions or worker.settings.topic_partitions
        stores += [
            PartitionStore(table.name, changelog, p, Path(table.data.partition_path(p)))
            for p in range(partitions)
        ]
    ends = {
        name: asyncio.run(end_offsets(worker.settings, name))
        for name in {s.changelog for s in stores}
    }
    return wipe(find_stale(stores, ends))


def run_worker(
    settings: Settings,
    *,
    table_store: TableStore = "rocksdb",
    model: ModelBundle | None = None,
    slot: int | None = None,
    restarts: Mapping[str, int] | None = None,
) -> None:
    """Run a worker until SIGINT/SIGTERM (blocks); ``model``: one loaded already (the
    supervisor's children, :mod:`streams.worker.supervisor`), else the one settings name.
    A supervisor's child also gets its ``slot`` and the slot's ``restarts`` by reason so far,
    which it exports (``nexttrack_worker_restarts_total``)."""
    import faust

    cluster = asyncio.run(cluster_id(settings))
    data_dir = state_dir(settings.data_dir, settings.app_id, cluster)
    foreign = other_clusters(settings.data_dir, settings.app_id, cluster)
    if not data_dir.exists() and foreign:
        reason = "other_cluster"
        log.warning(
            "local state in %s belongs to other Kafka clusters (%s); not used: this worker "
            "keeps its state for cluster %s in %s",
            settings.data_dir,
            ", ".join(p.name for p in foreign),
            cluster,
            data_dir,
        )
    else:
        reason = None
    worker = build_worker(settings, table_store=table_store, data_dir=data_dir, model=model)
    if reason is not None:
        worker.metrics.local_state_resets.labels(reason).inc()
    if slot is not None:
        export_restarts(worker.metrics.restarts, slot, restarts or {})
    # Faust ignores source topics that do not exist yet (and never picks them up later), so
    # create every topic the worker reads or writes before it starts.
    asyncio.run(ensure_topics(settings, worker_topics(settings)))
    if table_store == "rocksdb":
        wiped = reset_stale_tables(worker)
        if wiped:
            worker.metrics.local_state_resets.labels("stale_offset").inc(wiped)
    log.info(
        "worker %s: consuming %r, publishing %r, web on %s:%d",
        settings.app_id,
        settings.topic_plays,
        settings.topic_recommendations,
        settings.web_host,
        settings.web_port,
    )
    from streams.kafka.log_limits import RepeatLimiter, limit_repeats
    from streams.logs import logging_config

    # The model's hundreds of thousands of long-lived objects (track ids, index maps) would
    # be traversed by every full garbage collection, a pause of tens of milliseconds in the
    # middle of a batch: move everything allocated so far out of the collector's way.
    gc.collect()
    gc.freeze()

    limit_repeats(RepeatLimiter(on_suppressed=worker.metrics.log_records_suppressed.inc))

    log.info("configuration: %s", settings.redacted())

    faust.Worker(
        worker.app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level, settings.log_format),
    ).execute_from_commandline()
