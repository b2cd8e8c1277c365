"""CLI command: ``bench-index`` (FAISS index kinds on the project's own generated data)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import typer

from streams.cli.options import hidden_alias, renamed

log = logging.getLogger(__name__)


def run_index_bench(
    *,
    tracks: int,
    dim: int,
    k: int,
    users: int,
    sessions_per_user: int,
    epochs: int,
    vectors: str,
    queries: int,
    threads: int,
    seed: int,
    kinds: tuple[str, ...] = ("flat", "hnsw", "ivf"),
) -> dict[str, Any]:
    """Generate a catalog and sessions, make item vectors, benchmark each index kind.

    ``vectors="lightfm"`` trains LightFM (``dim`` components, ``epochs`` epochs, hybrid
    features); ``"content"`` uses the catalog's content vectors (their own dimension).
    Queries are mean-encoder embeddings of random prefixes of the generated sessions.
    """
    from index.ann import set_threads
    from index.bench import benchmark_indexes
    from training.content import ContentFeaturizer
    from training.generate import GeneratorConfig, generate
    from training.index_check import session_prefix_queries
    from training.lightfm_model import TrainingConfig, interaction_matrix, train_lightfm
    from training.pipeline import prepare

    set_threads(threads)
    started = time.perf_counter()
    config = GeneratorConfig(
        tracks=tracks, users=users, sessions_per_user=sessions_per_user, seed=seed
    )
    catalog, events = generate(config)
    data = prepare(events, catalog)
    timings = {"generate_s": round(time.perf_counter() - started, 2)}
    featurizer = ContentFeaturizer.fit(data.tracks)
    started = time.perf_counter()
    if vectors == "lightfm":
        cf = train_lightfm(
            interaction_matrix(data.sessions, len(data.tracks)),
            featurizer.metadata_features(data.tracks),
            TrainingConfig(no_components=dim, epochs=epochs, threads=threads, seed=seed),
            progress=False,
        )
        item_vectors = cf.item_vectors
    elif vectors == "content":
        item_vectors = featurizer.content_vectors(data.tracks)
    else:
        raise typer.BadParameter("--vectors must be lightfm or content")
    timings["vectors_s"] = round(time.perf_counter() - started, 2)
    query_vectors = session_prefix_queries(item_vectors, data.sessions, queries, seed=seed)
    results = benchmark_indexes(item_vectors, query_vectors, k, kinds)  # type: ignore[arg-type]
    return {
        "data": {
            "tracks": len(data.tracks),
            "events": data.n_events,
            "sessions": len(data.sessions),
            "vectors": vectors,
            "dim": int(item_vectors.shape[1]),
            "queries": int(len(query_vectors)),
            "query_kind": "mean-encoder embeddings of random training-session prefixes",
            **timings,
        },
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width table of the benchmark figures."""
    d = report["data"]
    lines = [
        f"{d['tracks']} tracks, {d['vectors']} vectors dim {d['dim']}, {d['queries']} session "
        f"queries, k={report['results'][0]['k']}, {report['results'][0]['threads']} thread(s)",
        f"{'index':<6} {'build s':>8} {'1-query ms (mean/p50/p99)':>27} "
        f"{'batch ms':>9} {'us/query':>9} {'recall@k':>9}  params",
    ]
    for r in report["results"]:
        single = f"{r['single_ms_mean']:.3f}/{r['single_ms_p50']:.3f}/{r['single_ms_p99']:.3f}"
        lines.append(
            f"{r['kind']:<6} {r['build_s']:>8.2f} {single:>27} {r['batch_ms']:>9.2f} "
            f"{r['batch_per_query_us']:>9.1f} {r['recall_at_k']:>9.4f}  {r['params']}"
        )
    lines.append(f"(batches of {report['results'][0]['batch_size']} queries)")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``bench-index`` to the ``nexttrack`` app."""

    @app.command("bench-index")
    def bench_index(
        tracks: int = typer.Option(100_000, "--tracks", help="Catalog size to generate."),
        dim: int = typer.Option(64, "--dim", help="Vector size (LightFM components)."),
        k: int = typer.Option(10, "--k", help="Neighbours per query (recall@k)."),
        users: int = typer.Option(2000, help="Users to simulate (sessions for training)."),
        sessions_per_user: int = typer.Option(5, help="Sessions per simulated user."),
        epochs: int = typer.Option(3, help="LightFM epochs (a quick fit is enough here)."),
        vectors: str = typer.Option("lightfm", help="Item vectors: lightfm or content."),
        queries: int = typer.Option(2000, help="Session queries to search with."),
        threads: int = typer.Option(1, help="FAISS (and LightFM) threads."),
        seed: int = typer.Option(7, help="Random seed."),
        json_out: Path | None = typer.Option(
            None, "--json-out", help="Also write the figures here."
        ),
        json_alias: Path | None = hidden_alias("--json", "--json-out"),
    ) -> None:
        """Time flat, hnsw and ivf indexes on generated data with real session queries.

        Prints build time, single-query and batched search time and recall@k (exact search
        as the reference).
        """
        import orjson

        report = run_index_bench(
            tracks=tracks,
            dim=dim,
            k=k,
            users=users,
            sessions_per_user=sessions_per_user,
            epochs=epochs,
            vectors=vectors,
            queries=queries,
            threads=threads,
            seed=seed,
        )
        typer.echo(format_table(report))
        json_out = renamed(json_out, json_alias)
        if json_out is not None:
            json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
            typer.echo(f"figures written to {json_out}")
