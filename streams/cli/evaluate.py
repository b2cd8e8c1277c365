"""CLI commands: ``evaluate`` (next-track, encoders vs baselines) and ``evaluate-coldstart``
(hetrec2011-lastfm-2k: hybrid vs pure CF on new artists)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import typer

from streams.cli.options import BaselineNames, EncoderNames, FusionMethods


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``evaluate-coldstart`` to the ``nexttrack`` app."""

    @app.command()
    def evaluate(
        artifacts: Path = typer.Option(
            ..., "--artifacts", exists=True, file_okay=False, help="Artifacts from `train`."
        ),
        train_events: Path = typer.Option(
            ...,
            "--train-events",
            exists=True,
            dir_okay=False,
            help="The events the artifacts were trained on (baselines are fitted on them).",
        ),
        test_events: Path = typer.Option(
            ..., "--test-events", exists=True, dir_okay=False, help="Held-out sessions."
        ),
        k: int = typer.Option(20, "--k", min=1, help="Largest cut-off (also 5 and 10 below it)."),
        encoder: list[EncoderNames] = typer.Option(
            [], "--encoder", help="Encoders to evaluate; repeatable (default: all in DIR)."
        ),
        baseline: list[BaselineNames] = typer.Option(
            ["pop", "itemknn", "sknn", "vsknn", "sr", "vstan"],
            "--baseline",
            help="Baselines; repeatable.",
        ),
        fusion: list[FusionMethods] = typer.Option(
            [],
            "--fusion",
            help="Also evaluate each encoder with this fusion method; repeatable.",
        ),
        repeats: Literal["both", "exclude", "allow"] = typer.Option(
            "both",
            "--repeats",
            help="Repeat rules to evaluate every model under: exclude (heard tracks never "
            "again), allow (they may come again; models named *+repeats) or both.",
        ),
        report: Path | None = typer.Option(None, "--report", help="Write the JSON report here."),
        chart: Path | None = typer.Option(None, "--chart", help="Write a PNG bar chart here."),
        max_sessions: int | None = typer.Option(
            None, "--max-sessions", min=1, help="Seeded sample of test sessions."
        ),
        max_prefixes: int | None = typer.Option(
            None, "--max-prefixes", min=1, help="Stop after this many evaluated prefixes."
        ),
        tune: bool = typer.Option(
            True, "--tune/--no-tune", help="Tune baseline neighbourhoods on a training slice."
        ),
        threads: int = typer.Option(2, "--threads", min=1, help="torch/FAISS threads."),
        seed: int = typer.Option(0, "--seed", help="Seed of samples and tuning."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    ) -> None:
        """Next-track evaluation over held-out sessions: HR, MRR, NDCG, coverage, popularity.

        Encoders run through the worker's own code path with the worker's retrieval settings
        (USE_CONTENT_BASED, ANN_INDEX_TYPE, ANN_CB_INDEX_TYPE, SESSION_HISTORY from the
        environment; the fusion chosen for each encoder at training time unless
        FUSION_METHOD, CF_WEIGHT, CB_WEIGHT or NB_WEIGHT is set); baselines are fitted on
        --train-events only.
        """
        from dataclasses import replace

        from streams.cli.options import settings_for
        from streams.settings import fusion_overridden, retrieval_params
        from training.evaluate import evaluate as run_evaluate
        from training.evaluate import write_chart

        settings = settings_for()
        # the settings' mapping the worker uses; the fusion and repeat rule of each encoder's
        # manifest apply per encoder in the evaluation itself
        params = replace(retrieval_params(settings), top_k=k)
        ks = tuple(sorted({c for c in (5, 10) if c < k} | {k}))
        started = time.perf_counter()
        result = run_evaluate(
            artifacts,
            train_events,
            test_events,
            ks=ks,
            encoders=[e.value for e in encoder] or None,
            baselines=[b.value for b in baseline],  # type: ignore[misc]
            max_prefixes=max_prefixes,
            progress=progress,
            max_sessions=max_sessions,
            params=params,
            extra_fusion=[f.value for f in fusion],
            index_type=settings.ann_index_type if settings.use_ann_index else "flat",
            cb_index_type=settings.ann_cb_index_type if settings.use_ann_index else "flat",
            tune=tune,
            history_limit=settings.session_history,
            threads=threads,
            seed=seed,
            use_chosen_fusion=not fusion_overridden(settings),
            repeat_modes=("exclude", "allow") if repeats == "both" else (repeats,),  # type: ignore[arg-type]
        )
        typer.echo(result.table())
        for name, used in (result.protocol.get("fusion") or {}).items():
            why = used["source"]
            for label, fig in (used.get("validation") or {}).items():
                why += f" ({label}: validation " + ", ".join(f"{m} {v}" for m, v in fig.items())
                why += f" over {used.get('validation_prefixes')} prefixes, {used['criterion']})"
            typer.echo(
                f"{name}: {used['fusion_method']} cf {used['cf_weight']:g} cb "
                f"{used['cb_weight']:g} neighbours {used.get('nb_weight', 0):g}, repeats "
                f"{used.get('repeats_chosen', 'exclude')} served by the worker, {why}"
            )
        data = result.data
        typer.echo(
            f"{data['n_prefixes']} prefixes of {data['n_test_sessions']} test sessions "
            f"({data['n_unknown_targets']} unknown targets count as misses, and so do the "
            f"{data['n_already_heard_targets']} already-heard ones under the exclude rule); "
            f"{time.perf_counter() - started:.1f}s"
        )
        if report is not None:
            typer.echo(f"report -> {result.write_json(report)}")
        if chart is not None:
            typer.echo(f"chart -> {write_chart(result, chart, k)}")

    @app.command("evaluate-coldstart")
    def evaluate_coldstart(
        hetrec: Path = typer.Option(
            ..., "--hetrec", exists=True, file_okay=False, help="hetrec2011-lastfm-2k directory."
        ),
        report: Path | None = typer.Option(None, "--report", help="Write the JSON report here."),
        cold_share: float = typer.Option(0.15, "--cold-share", help="Share of artists held out."),
        test_share: float = typer.Option(
            0.2, "--test-share", help="Per-user share of warm interactions held out."
        ),
        max_users: int | None = typer.Option(None, "--max-users", min=1, help="User sample."),
        epochs: int = typer.Option(15, "--epochs", min=1, help="LightFM epochs."),
        components: int = typer.Option(64, "--components", min=1, help="LightFM components."),
        threads: int = typer.Option(2, "--threads", min=1, help="LightFM threads."),
        seed: int = typer.Option(0, "--seed", help="Seed of the split and the models."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    ) -> None:
        """Cold-start check: LightFM pure CF vs content-only vs hybrid on held-out artists
        (AUC and recall@20 on warm and on cold artists)."""
        from training.coldstart import ColdStartConfig
        from training.coldstart import evaluate_coldstart as run_coldstart
        from training.lightfm_model import TrainingConfig

        config = ColdStartConfig(
            cold_share=cold_share,
            test_share=test_share,
            max_users=max_users,
            seed=seed,
            lightfm=TrainingConfig(
                no_components=components, epochs=epochs, threads=threads, seed=seed
            ),
        )
        started = time.perf_counter()
        result = run_coldstart(hetrec, config, progress=progress)
        typer.echo(result.table())
        d = result.data
        typer.echo(
            f"{d['n_users_used']} users, {d['n_items']} artists ({d['n_cold_items']} cold, "
            f"{d['cold_items_with_features']:.0%} of them with tags); train {d['n_train']}, "
            f"warm test {d['n_warm_test']}, cold test {d['n_cold_test']} interactions; "
            f"{time.perf_counter() - started:.1f}s"
        )
        if report is not None:
            typer.echo(f"report -> {result.write_json(report)}")
