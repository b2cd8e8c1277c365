"""Choosing each encoder's fusion (method and weights) on validation sessions.

``nexttrack train`` keeps the newest sessions of its input apart (``PipelineConfig.
fusion_validation``, 10% by default): nothing is trained on them. Once the artifacts are
written, every encoder replays them through the worker's code path
(:func:`training.replay.replay_encoder`) under each candidate of :data:`FUSION_GRID`, and the
candidate with the highest HR@20 + MRR@20 is written to the manifest (``fusion.<encoder>``,
with every candidate's figures). Every candidate is tried under both repeat rules
(``serving.model.RepeatMode``: heard tracks excluded, or allowed again), so the rule the
validation sessions favour is chosen with the fusion. The worker and ``nexttrack evaluate``
use it unless ``FUSION_METHOD``/``CF_WEIGHT``/``CB_WEIGHT`` are set
(``serving.model.chosen_fusion``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from index.neighbours import NEIGHBOURS_FILE
from index.session_neighbours import SESSION_NEIGHBOURS_FILE
from schemas.play import PlayEvent
from serving.model import REPEAT_MODES, RepeatMode, RetrievalParams
from training.metrics import hit_rate_at_k, mrr_at_k, ranks_in_lists
from training.replay import replay_encoder, replay_sessions

log = logging.getLogger(__name__)

#: Candidates: (method, cf_weight, cb_weight, nb_weight). ``nb_weight`` is the weight of the
#: session-neighbourhood source (``index.neighbours``); candidates with it are tried only
#: when the artifacts have a neighbour table.
FUSION_GRID: tuple[tuple[str, float, float, float], ...] = (
    ("cf_only", 1.0, 0.0, 0.0),
    ("weighted_sum", 0.9, 0.1, 0.0),
    ("weighted_sum", 0.8, 0.2, 0.0),
    ("weighted_sum", 0.7, 0.3, 0.0),
    ("weighted_sum", 0.5, 0.5, 0.0),
    ("rrf", 0.5, 0.5, 0.0),
    ("weighted_sum", 0.81, 0.09, 0.1),
    ("weighted_sum", 0.72, 0.08, 0.2),
    ("weighted_sum", 0.7, 0.0, 0.3),
    ("weighted_sum", 0.63, 0.07, 0.3),
    ("weighted_sum", 0.5, 0.0, 0.5),
    ("weighted_sum", 0.45, 0.05, 0.5),
    ("weighted_sum", 0.3, 0.0, 0.7),
    ("weighted_sum", 0.27, 0.03, 0.7),
    ("weighted_sum", 0.2, 0.0, 0.8),
    ("weighted_sum", 0.1, 0.0, 0.9),
    ("weighted_sum", 0.05, 0.0, 0.95),  # neighbours first; the encoder orders the rest
    ("rrf", 0.5, 0.5, 0.5),
    ("rrf", 0.5, 0.0, 0.5),
)
#: Cut-off of the validation metrics.
K = 20
#: Validation sessions replayed (a seeded sample): ~20k prefixes of real music sessions, a
#: standard error of about .003 on HR@20, at a quarter of the replay time of 1M-play data.
MAX_SESSIONS = 2000


def candidate_params(
    method: str,
    cf_weight: float,
    cb_weight: float,
    nb_weight: float = 0.0,
    top_k: int = K,
    *,
    repeats: RepeatMode = "exclude",
) -> RetrievalParams:
    return RetrievalParams(
        top_k=top_k,
        fusion_method=method,
        cf_weight=cf_weight,
        cb_weight=cb_weight,
        nb_weight=nb_weight,
        use_content=method != "cf_only",
        repeats=repeats,
    )


def candidate_label(
    method: str,
    cf_weight: float,
    cb_weight: float,
    nb_weight: float,
    *,
    repeats: RepeatMode = "exclude",
) -> str:
    """``method:cf`` as before the neighbour source (``weighted_sum:0.9``), with the cb and
    nb weights once the neighbour weight is set (``weighted_sum:0.45/0.05/0.5``), and
    ``+repeats`` when heard tracks may come again."""
    label = f"{method}:{cf_weight:g}"
    if nb_weight != 0:
        label = f"{method}:{cf_weight:g}/{cb_weight:g}/{nb_weight:g}"
    return label if repeats == "exclude" else f"{label}+repeats"


def choose_fusion(
    artifacts_dir: Path,
    encoders: Sequence[str],
    validation: Sequence[PlayEvent],
    *,
    index_type: str = "hnsw",
    progress: bool = False,
    max_sessions: int | None = MAX_SESSIONS,
) -> dict[str, Any]:
    """The manifest's ``fusion`` section: per encoder the chosen candidate and all figures.
    Empty when ``validation`` has nothing to evaluate. ``max_sessions``: a seeded sample of
    the validation sessions replayed (``None``: all)."""
    from serving.artifacts import load_artifacts

    index = load_artifacts(artifacts_dir).track_index
    sessions, targets = replay_sessions(validation, index, max_sessions=max_sessions)
    if not len(targets):
        log.warning("no validation prefix to choose the fusion on; keeping the defaults")
        return {}
    has_content = (artifacts_dir / "cb_vectors.npy").exists()
    has_neighbours = any(
        (artifacts_dir / name).exists() for name in (NEIGHBOURS_FILE, SESSION_NEIGHBOURS_FILE)
    )
    grid = [
        c
        for c in FUSION_GRID
        if (has_content or c[2] == 0)
        and (has_neighbours or c[3] == 0)
        # without content a weighted_sum/rrf of cf alone is cf_only again
        and (has_content or has_neighbours or c[0] == "cf_only")
    ]
    variants = {
        candidate_label(*c, repeats=mode): candidate_params(*c, repeats=mode)
        for mode in REPEAT_MODES
        for c in grid
    }
    section: dict[str, Any] = {}
    for name in encoders:
        lists = replay_encoder(
            artifacts_dir,
            name,
            sessions,
            variants,
            len(targets),
            index_type=index_type,
            progress=progress,
        )
        figures = {}
        for label, ranked in lists.items():
            ranks = ranks_in_lists(ranked, targets)
            figures[label] = {
                f"hr@{K}": round(hit_rate_at_k(ranks, K), 6),
                f"mrr@{K}": round(mrr_at_k(ranks, K), 6),
            }
        best = max(figures, key=lambda v: figures[v][f"hr@{K}"] + figures[v][f"mrr@{K}"])
        params = variants[best]
        section[name] = {
            "fusion_method": params.fusion_method,
            "cf_weight": params.cf_weight,
            "cb_weight": params.cb_weight,
            "nb_weight": params.nb_weight,
            "repeats": params.repeats,
            "criterion": f"highest hr@{K} + mrr@{K} on the validation prefixes",
            "validation_prefixes": int(len(targets)),
            "candidates": figures,
        }
        log.info(
            "%s: fusion %s (validation hr@%d %.4f, mrr@%d %.4f over %d prefixes)",
            name,
            best,
            K,
            figures[best][f"hr@{K}"],
            K,
            figures[best][f"mrr@{K}"],
            len(targets),
        )
    return section
