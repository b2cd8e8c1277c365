"""Starting a worker process: threads, model, Faust app, Faust's own worker loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from streams.app import NextTrackWorker
from streams.clients import ensure_topics
from streams.errors import ConfigError
from streams.settings import Settings
from training.recommender import load_model

log = logging.getLogger(__name__)

TableStore = Literal["rocksdb", "memory"]


def set_threads(torch_threads: int, faiss_threads: int) -> None:
    """Pin torch and FAISS thread pools (the defaults oversubscribe small machines)."""
    import faiss
    import torch

    torch.set_num_threads(torch_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    faiss.omp_set_num_threads(faiss_threads)


def build_worker(settings: Settings, *, table_store: TableStore = "rocksdb") -> NextTrackWorker:
    """Load the model named by ``settings`` and wire a worker around it."""
    if settings.artifacts_dir is None:
        raise ConfigError("ARTIFACTS_DIR is not set (or pass --artifacts DIR)")
    set_threads(settings.torch_threads, settings.faiss_threads)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(
        settings.artifacts_dir,
        settings.encoder,
        index_type=settings.ann_index_type,
        use_ann=settings.use_ann_index,
        use_content=settings.use_content_based,
    )
    return NextTrackWorker(settings, model, table_store=f"{table_store}://")


def worker_topics(settings: Settings) -> list[str]:
    """Every topic named in settings (inputs, outputs and dead-letter topics)."""
    return [
        value
        for name, value in settings.model_dump().items()
        if name.startswith("topic_") and isinstance(value, str)
    ]


def run_worker(settings: Settings, *, table_store: TableStore = "rocksdb") -> None:
    """Run a worker until SIGINT/SIGTERM (blocks)."""
    import faust

    worker = build_worker(settings, table_store=table_store)
    # Faust ignores source topics that do not exist yet (and never picks them up later), so
    # create every topic the worker reads or writes before it starts.
    asyncio.run(ensure_topics(settings, worker_topics(settings)))
    log.info(
        "worker %s: consuming %r, publishing %r, web on %s:%d",
        settings.app_id,
        settings.topic_plays,
        settings.topic_recommendations,
        settings.web_host,
        settings.web_port,
    )
    from streams.logs import logging_config

    log.info("configuration: %s", settings.redacted())

    faust.Worker(
        worker.app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level, settings.log_format),
    ).execute_from_commandline()
