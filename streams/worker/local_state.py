"""Local table state on disk: one directory per application and cluster, checked at start.

The changelog topics in Kafka are the source of truth for the worker's tables; RocksDB files
under ``DATA_DIR`` are a cache of them. Two things can make that cache wrong, and both are
handled here, before Faust starts (as Kafka Streams does for its state stores):

* **Another cluster or application.** Local state lives in
  ``DATA_DIR/<app id>/cluster-<cluster id>/``, so a worker pointed at a new broker (or with a
  new ``APP_ID``) never reads states written for another one. Directories of other clusters
  are left alone and reported once.
* **Stale offsets.** Each RocksDB partition remembers the last changelog offset it applied.
  When that offset is at or past the changelog's end (the topic was deleted and recreated,
  the cluster was rebuilt with the same id, or the local copy is newer than what Kafka kept),
  Faust refuses to start (``ConsistencyError``) or, worse, would mix in foreign states. Such a
  partition's local copy is wiped and restored from the changelog instead, with a warning that
  names the directory, the partitions and why, counted in
  ``nexttrack_local_state_resets_total``.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

#: Where Faust's RocksDB store keeps the last applied changelog offset of a partition.
OFFSET_KEY = b"__faust\0offset__"

ResetReason = Literal["stale_offset", "other_cluster"]


def state_dir(data_dir: Path, app_id: str, cluster: str) -> Path:
    """The local state directory of ``app_id`` on cluster ``cluster`` under ``data_dir``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cluster)
    return data_dir / re.sub(r"[^A-Za-z0-9_.-]", "_", app_id) / f"cluster-{safe}"


def other_clusters(data_dir: Path, app_id: str, cluster: str) -> list[Path]:
    """State directories of ``app_id`` for clusters other than ``cluster``."""
    mine = state_dir(data_dir, app_id, cluster)
    parent = mine.parent
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.glob("cluster-*") if p.is_dir() and p != mine)


@dataclass(frozen=True)
class PartitionStore:
    """One table partition's local RocksDB copy and the changelog it mirrors."""

    table: str
    changelog: str
    partition: int
    path: Path


@dataclass(frozen=True)
class StaleStore:
    """A partition whose local copy is ahead of its changelog (``persisted >= end``)."""

    store: PartitionStore
    persisted: int
    end: int


def persisted_offset(path: Path) -> int | None:
    """The last changelog offset applied to the RocksDB database at ``path`` (``None``: no
    database or no offset recorded)."""
    if not path.exists():
        return None
    import rocksdict

    db = rocksdict.Rdict(
        str(path),
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        raw = db.get(OFFSET_KEY)
    finally:
        db.close()
    return int(raw) if raw is not None else None


def find_stale(
    stores: Iterable[PartitionStore], ends: Mapping[str, Mapping[int, int]]
) -> list[StaleStore]:
    """The stores whose persisted offset is at or past their changelog's end offset (a
    missing changelog or partition has end 0)."""
    stale = []
    for store in stores:
        persisted = persisted_offset(store.path)
        if persisted is None:
            continue
        end = ends.get(store.changelog, {}).get(store.partition, 0)
        if persisted >= end:
            stale.append(StaleStore(store, persisted, end))
    return stale


def wipe(stale: Iterable[StaleStore]) -> int:
    """Delete the local copies of ``stale`` (they are restored from the changelog); log one
    warning per table. Returns how many partitions were wiped."""
    by_table: dict[tuple[str, Path], list[StaleStore]] = {}
    for item in stale:
        by_table.setdefault((item.store.table, item.store.path.parent), []).append(item)
    wiped = 0
    for (table, directory), items in by_table.items():
        for item in items:
            shutil.rmtree(item.store.path, ignore_errors=True)
            wiped += 1
        log.warning(
            "table %r: local state in %s is ahead of its changelog %r for partitions %s "
            "(persisted offset >= end offset: %s); the topic was recreated or the local copy "
            "belongs to another cluster. Wiped those partitions; they are restored from the "
            "changelog (the source of truth).",
            table,
            directory,
            items[0].store.changelog,
            [i.store.partition for i in items],
            ", ".join(f"{i.store.partition}: {i.persisted} >= {i.end}" for i in items),
        )
    return wiped
