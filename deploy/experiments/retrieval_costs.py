"""Where the engine's time goes, and what the FAISS index kinds cost per space (issue #9).

Two measurements on a trained artifacts directory (e.g. the one ``nexttrack bench`` caches
under ``.nexttrack/bench/artifacts-*``), both on one thread, no Kafka:

1. ``engine``: :class:`serving.engine.RecommendationEngine` over the first events of an
   ``events.jsonl`` (time order, micro-batches of 256): events/s and the encoder and ranking
   shares. This is the ceiling of the worker's engine thread.
2. ``faiss``: for each space (cf: ``cf_vectors.npy``, cb: ``cb_vectors.npy``), HNSW
   (M 32 and 16, several efSearch), HNSW with 8-bit scalar quantisation and IVF-Flat (nlist
   256 and 1024, several nprobe): microseconds per query (batches of 256) and recall@10
   against exact search. Queries are means of 5 popularity-sampled item vectors (a stand-in
   for session queries), seeded.

    python deploy/experiments/retrieval_costs.py ARTIFACTS_DIR EVENTS_JSONL [engine|faiss|both]

Figures and conclusions: docs/benchmarks.md ("Session 4").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import faiss
import numpy as np

from index.ann import exact_search

BATCH = 256


def engine_costs(artifacts: Path, events_path: Path, n_events: int = 20_000) -> None:
    """Events/s of the engine alone, lstm encoder, the reference retrieval parameters."""
    from schemas.play import PlayEvent
    from serving.engine import RecommendationEngine
    from serving.model import RetrievalParams, load_model

    model = load_model(artifacts, "lstm", index_type="hnsw", use_ann=True, use_content=True)
    params = RetrievalParams(
        top_k=10, fusion_method="weighted_sum", cf_weight=0.7, cb_weight=0.3, use_content=True
    )
    engine = RecommendationEngine(model, params, history_limit=200)
    lines = events_path.read_bytes().splitlines()[:n_events]
    events = sorted((PlayEvent.parse(line) for line in lines), key=lambda e: e.ts)
    stored: dict = {}

    def run(part: list[PlayEvent], label: str) -> None:
        started, encoder, rank = time.perf_counter(), 0.0, 0.0
        for i in range(0, len(part), BATCH):
            batch = part[i : i + BATCH]
            states = {e.session_id: stored.get(e.session_id) for e in batch}
            positions = [(0, i + j) for j in range(len(batch))]
            for outcome in engine.process(batch, states, positions, {0: 0}):
                stored[outcome.event.session_id] = outcome.state
            encoder += engine.last_timings.encoder
            rank += engine.last_timings.search
        elapsed = time.perf_counter() - started
        per = 1e6 / len(part)
        print(
            f"engine {label}: {len(part) / elapsed:.0f} ev/s, {elapsed * per:.0f} us/event "
            f"(encoder {encoder * per:.0f} us, ranking {rank * per:.0f} us)"
        )

    run(events[:2000], "warm-up")
    run(events[2000:], "measured")


def _measure(index: faiss.Index, label: str, queries: np.ndarray, truth: np.ndarray) -> None:
    """Print microseconds per query (batches of :data:`BATCH`) and recall@10 against
    ``truth`` (the exact top-10 ids of each query)."""
    started = time.perf_counter()
    found = np.concatenate(
        [index.search(queries[i : i + BATCH], 20)[1] for i in range(0, len(queries), BATCH)]
    )
    us = (time.perf_counter() - started) * 1e6 / len(queries)
    hits = [len(set(a[:10]) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]
    print(f"{label:32s} {us:6.1f} us/query  recall@10 {np.mean(hits):.3f}")


def faiss_costs(artifacts: Path, n_queries: int = 2048, seed: int = 0) -> None:
    """Per-query cost and recall@10 of index kinds in each space."""
    rng = np.random.default_rng(seed)
    popularity = np.load(artifacts / "popularity.npy") + 1.0
    p = popularity / popularity.sum()
    for space in ("cf", "cb"):
        x = np.ascontiguousarray(np.load(artifacts / f"{space}_vectors.npy"), dtype=np.float32)
        n, d = x.shape
        queries = x[rng.choice(n, size=(n_queries, 5), p=p)].mean(axis=1).astype(np.float32)
        truth = exact_search(x, queries, 10)[1]
        tag = f"{space} d={d}"
        for m in (32, 16):
            hnsw = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 80
            hnsw.add(x)
            for ef in (64, 40, 24):
                hnsw.hnsw.efSearch = ef
                _measure(hnsw, f"{tag} HNSW M{m} ef{ef}", queries, truth)
        sq = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, 16, faiss.METRIC_INNER_PRODUCT)
        sq.hnsw.efConstruction = 80
        sq.train(x)
        sq.add(x)
        for ef in (64, 40):
            sq.hnsw.efSearch = ef
            _measure(sq, f"{tag} HNSW-SQ8 M16 ef{ef}", queries, truth)
        for nlist in (256, 1024):
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.train(x)
            ivf.add(x)
            for nprobe in (4, 8, 16):
                ivf.nprobe = nprobe
                _measure(ivf, f"{tag} IVF{nlist} nprobe{nprobe}", queries, truth)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    artifacts, events = Path(sys.argv[1]), Path(sys.argv[2])
    what = sys.argv[3] if len(sys.argv) > 3 else "both"
    from serving.threads import set_threads

    set_threads(torch_threads=1, faiss_threads=1)  # as a worker with the default settings
    if what in ("engine", "both"):
        engine_costs(artifacts, events)
    if what in ("faiss", "both"):
        faiss_costs(artifacts)


if __name__ == "__main__":
    main()
