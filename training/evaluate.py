"""Offline next-track evaluation of the learned encoders against strong baselines.

Protocol (recorded in every report under ``protocol``):

- Test sessions are replayed event by event, all sessions together in *waves* (the t-th
  event of every session at once), exactly as the worker sees them.
- After each event ``t`` (a play or a skip), if event ``t + 1`` is a **play**, the prefix
  ``0..t`` is evaluated and the target is event ``t + 1``'s track. Prefixes followed by a
  skip are not evaluated (a skipped track is not a relevant next track), but every skip is
  part of later prefixes as a *heard* track.
- Every model answers ``max(ks)`` items under the worker's rules: heard tracks (plays AND
  skips, the last ``history_limit`` events) are excluded, and a prefix without a known play
  gets the most popular tracks. A target the catalog does not know, or one already heard in
  the session (so excluded), is a miss for every model.
- Encoders (``mean``, ``lstm``, ``transformer``) run through the worker's own code path:
  :func:`serving.model.load_model`, ``encoder.step`` on known plays only, and
  :func:`serving.model.rank_sessions` (same index, fusion, content query, exclusion).
  Extra fusion methods (e.g. ``cf_only``) add models named ``<encoder>+<method>``.
- Baselines (:mod:`training.baselines`, :mod:`training.baselines_sequential`) are fitted on
  the training events only (plays, sessions ordered by start); their hyperparameters are
  picked on a validation slice of the newest training sessions
  (:func:`training.baselines.tune_baseline`), never on test.
- 95% intervals of HR and MRR at the largest k, and the paired differences of every encoder
  model with every baseline, come from a bootstrap over test sessions (same resamples for all
  models; :func:`training.metrics.session_bootstrap`). The report class and its table, JSON
  and chart are in :mod:`training.evaluation_report`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from encoders.base import ENCODER_NAMES
from serving.artifacts import load_artifacts
from serving.index_files import content_index_kind
from serving.model import (
    REPEAT_MODES,
    RepeatMode,
    RetrievalParams,
    chosen_fusion,
)
from training.baselines import BaselineName, make_baseline, tune_baseline
from training.errors import DataError
from training.evaluation_report import EvaluationReport
from training.evaluation_report import write_chart as write_chart  # re-exported
from training.fusion_choice import candidate_label
from training.metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    PAD,
    next_item_metrics,
    ranks_in_lists,
    session_bootstrap,
)
from training.replay import (
    HISTORY_LIMIT,
    EventsInput,
    ReplaySession,
    baseline_prefixes,
    load_events,
    replay_encoder,
    replay_sessions,
    train_sessions,
)

log = logging.getLogger(__name__)

DEFAULT_BASELINES: tuple[BaselineName, ...] = ("pop", "itemknn", "sknn", "vsknn", "sr", "vstan")
#: Suffix of the models run with heard tracks allowed again.
REPEATS_SUFFIX = "+repeats"
MODE_SUFFIX: dict[RepeatMode, str] = {"exclude": "", "allow": REPEATS_SUFFIX}


def evaluate(
    artifacts_dir: str | os.PathLike[str],
    train_events: EventsInput,
    test_events: EventsInput,
    ks: Sequence[int] = (5, 10, 20),
    encoders: Sequence[str] | None = None,
    baselines: Sequence[BaselineName] = DEFAULT_BASELINES,
    max_prefixes: int | None = None,
    progress: bool = True,
    *,
    max_sessions: int | None = None,
    params: RetrievalParams | None = None,
    extra_fusion: Sequence[str] = (),
    index_type: str = "hnsw",
    cb_index_type: str | None = None,
    tune: bool = True,
    history_limit: int = HISTORY_LIMIT,
    threads: int = 2,
    seed: int = 0,
    use_chosen_fusion: bool = False,
    repeat_modes: Sequence[RepeatMode] = REPEAT_MODES,
) -> EvaluationReport:
    """Evaluate every encoder of ``artifacts_dir`` (or ``encoders``) and the ``baselines`` on
    next-track prediction over the held-out sessions (see the module docstring).

    ``params`` are the worker's retrieval parameters (default: the worker's defaults);
    ``top_k`` is replaced by ``max(ks)``. With ``use_chosen_fusion`` each encoder uses the
    fusion chosen for it at training time (manifest ``fusion``) where there is one, as the
    worker does. ``extra_fusion`` adds ``<encoder>+<method>`` models.

    Every model runs under each of ``repeat_modes``: ``exclude`` (plain names) and ``allow``
    (names ending in ``+repeats``, heard tracks may be recommended again); intervals compare
    each encoder with the baselines of the same mode.
    """
    started = time.perf_counter()
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise DataError(f"ks must be positive cut-offs, got {ks}")
    top_k = ks[-1]
    _set_threads(threads)
    artifacts_dir = Path(artifacts_dir)
    artifacts = load_artifacts(artifacts_dir)
    index, n_items = artifacts.track_index, len(artifacts.tracks)
    names = list(encoders) if encoders is not None else artifacts.encoder_names
    names.sort(key=lambda n: (ENCODER_NAMES.index(n) if n in ENCODER_NAMES else 99, n))
    base = params or RetrievalParams()
    base = replace(base, top_k=top_k)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    train = load_events(train_events)
    test = load_events(test_events)
    fit_sessions = train_sessions(train, index)
    sessions, targets = replay_sessions(
        test, index, max_sessions=max_sessions, max_prefixes=max_prefixes, seed=seed
    )
    plays_b, _, already = baseline_prefixes(sessions, index, history_limit)
    seconds["load_data"] = time.perf_counter() - t0
    if not len(targets):
        raise DataError("no test prefix to evaluate (no session has a play after its first event)")
    log.info("evaluating %d prefixes of %d test sessions", len(targets), len(sessions))

    popularity = artifacts.popularity
    models: dict[str, dict[str, Any]] = {}
    ranks_of: dict[str, np.ndarray] = {}
    tuning: dict[str, Any] = {}
    chosen: dict[str, dict[str, Any]] = {}

    def record(name: str, lists: np.ndarray) -> None:
        ranks = ranks_in_lists(lists, targets)
        ranks_of[name] = ranks
        models[name] = next_item_metrics(ranks, lists, ks, n_items, popularity)

    fitted = {}
    for name in baselines:
        t0 = time.perf_counter()
        if tune:
            result = tune_baseline(name, fit_sessions, n_items, k=top_k, seed=seed)
            chosen[name], tuning[name] = result.best, result.to_dict()
        else:
            chosen[name] = {}
        fitted[name] = make_baseline(name, n_items, **chosen[name]).fit(fit_sessions)
        chosen[name] = fitted[name].params()
        seconds[name] = time.perf_counter() - t0
    for mode in repeat_modes:
        _, left_out, _ = baseline_prefixes(sessions, index, history_limit, mode)
        for name, model in fitted.items():
            t0 = time.perf_counter()
            lists = np.full((len(targets), top_k), PAD, dtype=np.int64)
            step = 4096
            label = name + MODE_SUFFIX[mode]
            bar = tqdm(total=len(targets), desc=label, unit="prefix", disable=not progress)
            for start in range(0, len(targets), step):
                stop = min(start + step, len(targets))
                out = model.recommend(plays_b[start:stop], left_out[start:stop], top_k)
                lists[start:stop, : out.shape[1]] = out
                bar.update(stop - start)
            bar.close()
            record(label, lists)
            seconds[name] += time.perf_counter() - t0

    fusion_used: dict[str, dict[str, Any]] = {}
    for name in names:
        own = chosen_fusion(artifacts.manifest, name, base) if use_chosen_fusion else base
        fusion_used[name] = {
            "fusion_method": own.fusion_method,
            "cf_weight": own.cf_weight,
            "cb_weight": own.cb_weight,
            "nb_weight": own.nb_weight,
            "source": "chosen at training time" if own != base else "settings",
        }
        choice = (artifacts.manifest.get("fusion") or {}).get(name)
        if own != base and choice:  # why: the criterion and the chosen candidate's figures
            fusion_used[name]["criterion"] = choice.get("criterion")
            fusion_used[name]["validation_prefixes"] = choice.get("validation_prefixes")
            fusion_used[name]["validation"] = {
                label: figures
                for label, figures in (choice.get("candidates") or {}).items()
                if label
                == candidate_label(
                    own.fusion_method,
                    own.cf_weight,
                    own.cb_weight,
                    own.nb_weight,
                    repeats=own.repeats,
                )
            }
        fusion_used[name]["repeats_chosen"] = own.repeats
        variants = {}
        for mode in repeat_modes:
            variants[MODE_SUFFIX[mode]] = replace(own, repeats=mode)
            for method in extra_fusion:
                variants[f"+{method}{MODE_SUFFIX[mode]}"] = replace(
                    own, fusion_method=method, repeats=mode
                )
        t0 = time.perf_counter()
        out = replay_encoder(
            artifacts_dir,
            name,
            sessions,
            {f"{name}{suffix}": p for suffix, p in variants.items()},
            len(targets),
            index_type=index_type,
            cb_index_type=cb_index_type,
            history_limit=history_limit,
            progress=progress,
        )
        for variant, lists in out.items():
            record(variant, lists)
        seconds[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    baseline_labels = [b + MODE_SUFFIX[m] for m in repeat_modes for b in baselines]
    comparisons = add_intervals(models, ranks_of, sessions, baseline_labels, top_k, seed)
    seconds["intervals"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started

    n_test_events = sum(len(s.track_ids) for s in sessions)
    protocol = {
        "task": "next played track after every event of held-out sessions",
        "fusion": fusion_used,
        "ks": list(ks),
        "target": "the track of the next event when it is a play; prefixes followed by a "
        "skip are not evaluated; unknown targets are misses, and so are already-heard "
        "ones under the exclude rule",
        "repeat_modes": {
            m: "every heard track left out"
            if m == "exclude"
            else f"heard tracks may come again (only the track just heard is left out); "
            f"models named *{REPEATS_SUFFIX}"
            for m in repeat_modes
        },
        "prefix": "every event so far (plays and skips); encoders step on known plays only",
        "exclusion": f"every track heard so far (plays and skips, last {history_limit} events)",
        "no_play_fallback": "most popular training tracks",
        "retrieval": asdict(base),
        "index_type": index_type,
        "cb_index_type": cb_index_type or content_index_kind(index_type),
        "extra_fusion": list(extra_fusion),
        "baselines": chosen,
        "baseline_tuning": tuning,
        "baseline_fill": "lists are filled with the most popular unheard tracks",
        "intervals": {
            "method": "percentile bootstrap over test sessions (whole sessions resampled); "
            "comparisons are paired differences on the same resamples",
            "k": top_k,
            "level": BOOTSTRAP_LEVEL,
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": seed,
        },
        "seed": seed,
    }
    data = {
        "artifacts": str(artifacts_dir),
        "model_version": artifacts.model_version,
        "n_items": n_items,
        "train_events": _describe(train_events, len(train)),
        "test_events": _describe(test_events, len(test)),
        "n_train_sessions": len(fit_sessions),
        "n_test_sessions": len(sessions),
        "n_test_events_replayed": n_test_events,
        "n_prefixes": int(len(targets)),
        "n_unknown_targets": int((targets < 0).sum()),
        "n_already_heard_targets": int(already.sum()),
        "n_prefixes_without_play": int(sum(1 for p in plays_b if not p)),
        "max_sessions": max_sessions,
        "max_prefixes": max_prefixes,
    }
    seconds = {k: round(v, 2) for k, v in seconds.items()}
    return EvaluationReport(
        models=models, protocol=protocol, data=data, seconds=seconds, comparisons=comparisons
    )


def prefix_sessions(sessions: Sequence[ReplaySession], n_prefixes: int) -> np.ndarray:
    """``(n_prefixes,)`` the index of the test session of every evaluated prefix."""
    out = np.full(n_prefixes, -1, dtype=np.int64)
    for i, s in enumerate(sessions):
        out[s.first_prefix : s.first_prefix + len(s.evaluated)] = i
    if (out < 0).any():
        raise DataError("some prefixes belong to no replayed session")
    return out


def add_intervals(
    models: dict[str, dict[str, Any]],
    ranks_of: dict[str, np.ndarray],
    sessions: Sequence[ReplaySession],
    baselines: Sequence[str],
    k: int,
    seed: int,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Add ``hr@k_ci`` and ``mrr@k_ci`` (``[lo, hi]``) to every model's metrics; return the
    paired comparisons ``{model: {baseline: {hr@k, hr@k_ci, mrr@k, mrr@k_ci}}}`` of every
    non-baseline model with every baseline (differences ``model - baseline``)."""
    if not ranks_of:
        return {}
    n_prefixes = len(next(iter(ranks_of.values())))
    learned = [m for m in ranks_of if m not in baselines]
    same_mode = lambda m, b: m.endswith(REPEATS_SUFFIX) == b.endswith(REPEATS_SUFFIX)  # noqa: E731
    pairs = [(m, b) for m in learned for b in baselines if b in ranks_of and same_mode(m, b)]
    boot = session_bootstrap(ranks_of, prefix_sessions(sessions, n_prefixes), k, pairs, seed=seed)
    for name, bounds in boot.intervals.items():
        models[name][f"hr@{k}_ci"] = [round(v, 6) for v in bounds["hr"]]
        models[name][f"mrr@{k}_ci"] = [round(v, 6) for v in bounds["mrr"]]
    comparisons: dict[str, dict[str, dict[str, Any]]] = {}
    for (model, baseline), diff in boot.differences.items():
        figures: dict[str, Any] = {}
        for metric in ("hr", "mrr"):
            point, (lo, hi) = diff[metric], diff[f"{metric}_ci"]
            figures[f"{metric}@{k}"] = round(float(point), 6)  # type: ignore[arg-type]
            figures[f"{metric}@{k}_ci"] = [round(lo, 6), round(hi, 6)]
        comparisons.setdefault(model, {})[baseline] = figures
    return comparisons


def _describe(source: EventsInput, n: int) -> dict[str, Any]:
    path = str(source) if isinstance(source, str | os.PathLike) else None
    return {"file": path, "n_events": n}


def _set_threads(threads: int) -> None:
    """Bound torch and FAISS threads (the machine is shared)."""
    import torch

    torch.set_num_threads(max(1, threads))
    try:
        import faiss

        faiss.omp_set_num_threads(max(1, threads))
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass
