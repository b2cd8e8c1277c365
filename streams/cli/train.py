"""CLI commands: ``train`` (artifacts for the worker)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from streams.cli.options import EncodersOrAll, IndexType, LightFMLoss


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``nexttrack`` app."""

    @app.command()
    def train(
        events: Path = typer.Option(
            ...,
            "--events",
            exists=True,
            dir_okay=False,
            help="events.jsonl (play/v1 records) to train on.",
        ),
        catalog: Path | None = typer.Option(
            None,
            "--catalog",
            exists=True,
            dir_okay=False,
            help="tracks.jsonl; without it content features are off.",
        ),
        out: Path = typer.Option(
            ..., "--out", help="Artifacts directory to write (replaced atomically)."
        ),
        encoder: list[EncodersOrAll] = typer.Option(
            ["all"],
            "--encoder",
            help="An encoder, or all (the default: the worker's ENCODER=auto then serves "
            "whichever did best on validation); repeatable.",
        ),
        components: int = typer.Option(64, help="LightFM no_components (vector size)."),
        epochs: int = typer.Option(15, help="LightFM epochs."),
        learning_rate: float = typer.Option(0.05, help="LightFM learning rate."),
        loss: LightFMLoss = typer.Option("warp", help="LightFM loss."),
        encoder_epochs: int | None = typer.Option(None, help="Max epochs for lstm/transformer."),
        encoder_max_steps: int = typer.Option(
            4000,
            min=0,
            help="Max optimiser steps in all for lstm/transformer (0: epochs alone). Keeps "
            "training time in proportion at scale: about 6.5 epochs of 1M plays.",
        ),
        index_type: IndexType = typer.Option(
            "hnsw", help="ANN index whose recall@10 is measured and recorded."
        ),
        fusion_validation: float = typer.Option(
            0.1,
            min=0.0,
            max=0.5,
            help="Share of the newest sessions kept out of training to choose each encoder's "
            "fusion (method and weights) on; 0 trains on everything and keeps the defaults.",
        ),
        neighbours: bool = typer.Option(
            True,
            "--neighbours/--no-neighbours",
            help="Train the neighbourhood source (tracks played close together in sessions, "
            "and the training sessions most like the current one), a third candidate source "
            "beside the encoder's and the content space; the fusion choice decides how much "
            "it weighs.",
        ),
        final_fit: bool = typer.Option(
            True,
            "--final-fit/--no-final-fit",
            help="After the choices made on the newest sessions, fit everything again on all "
            "of --events so the newest sessions and tracks are served (about twice the "
            "training time); --no-final-fit serves the fit without them.",
        ),
        threads: int = typer.Option(2, help="Threads for LightFM and torch."),
        seed: int = typer.Option(42, help="Random seed."),
        progress: bool = typer.Option(True, help="Show progress bars."),
    ) -> None:
        """Train LightFM item vectors, content vectors and session encoders into DIR.

        The directory holds everything `nexttrack worker --artifacts DIR` and
        `nexttrack evaluate --artifacts DIR` need, with a manifest.json describing it,
        including the fusion chosen for each encoder on held-out validation sessions (the
        worker and the evaluator use it unless FUSION_METHOD/CF_WEIGHT/CB_WEIGHT/NB_WEIGHT
        are set).
        """
        from training.lightfm_model import TrainingConfig
        from training.pipeline import ALL_ENCODERS, PipelineConfig, train_artifacts

        names = list(ALL_ENCODERS) if "all" in encoder else [e.value for e in encoder]
        enc_config = None
        if any(n != "mean" for n in names):
            from training.encoder_training import EncoderTrainingConfig

            kwargs: dict[str, object] = {
                "seed": seed,
                "threads": threads,
                "max_steps": encoder_max_steps or None,
            }
            if encoder_epochs is not None:
                kwargs["epochs"] = encoder_epochs
            enc_config = EncoderTrainingConfig(**kwargs)
        config = PipelineConfig(
            encoders=tuple(names),
            lightfm=TrainingConfig(
                no_components=components,
                epochs=epochs,
                learning_rate=learning_rate,
                loss=loss,
                threads=threads,
                seed=seed,  # type: ignore[arg-type]
            ),
            encoder_training=enc_config,
            index_type=index_type,
            progress=progress,
            fusion_validation=fusion_validation,
            neighbours=neighbours,
            final_fit=final_fit,
        )
        started = time.perf_counter()
        path = train_artifacts(events, catalog, out, config)
        typer.echo(
            f"artifacts written to {path} ({', '.join(names)}) in "
            f"{time.perf_counter() - started:.1f}s"
        )
