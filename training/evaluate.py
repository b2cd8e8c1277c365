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
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from encoders.base import ENCODER_NAMES
from schemas.play import PlayEvent
from serving.artifacts import load_artifacts
from serving.index_files import content_index_kind
from serving.model import (
    REPEAT_MODES,
    ModelBundle,
    RepeatMode,
    RetrievalParams,
    chosen_fusion,
    excluded_tracks,
    load_model,
    rank_batch,
)
from training.baselines import BaselineName, make_baseline, tune_baseline
from training.errors import DataError
from training.evaluation_report import EvaluationReport
from training.evaluation_report import write_chart as write_chart  # re-exported
from training.fusion_choice import candidate_label
from training.io import read_events, sessions_from_events
from training.metrics import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    PAD,
    next_item_metrics,
    ranks_in_lists,
    session_bootstrap,
)

log = logging.getLogger(__name__)

EventsInput = str | os.PathLike[str] | Sequence[PlayEvent]
DEFAULT_BASELINES: tuple[BaselineName, ...] = ("pop", "itemknn", "sknn", "vsknn", "sr", "vstan")
#: The worker's default ``session_history`` (heard/plays lists kept per session).
HISTORY_LIMIT = 200
#: Suffix of the models run with heard tracks allowed again.
REPEATS_SUFFIX = "+repeats"
MODE_SUFFIX: dict[RepeatMode, str] = {"exclude": "", "allow": REPEATS_SUFFIX}
#: Sessions ranked per ``rank_sessions`` call.
_RANK_BATCH = 2048


@dataclass
class ReplaySession:
    """One held-out session: per event the item index (``-1`` unknown), play flag, track id."""

    items: np.ndarray
    is_play: np.ndarray
    track_ids: list[str]
    evaluated: list[int] = field(default_factory=list)  # event positions t evaluated
    first_prefix: int = 0  # id of the first evaluated prefix


def _load_events(events: EventsInput) -> list[PlayEvent]:
    if isinstance(events, str | os.PathLike):
        return read_events(events)
    return list(events)


def _ordered_sessions(events: Sequence[PlayEvent]) -> list[list[PlayEvent]]:
    """Sessions (events in time order), ordered by their first event's ``ts`` (stable)."""
    sessions = list(sessions_from_events(events).values())
    return sorted(sessions, key=lambda s: s[0].ts)


def train_sessions(events: Sequence[PlayEvent], track_index: dict[str, int]) -> list[list[int]]:
    """Training sessions for the baselines: known played item indices, oldest session first."""
    out = []
    for session in _ordered_sessions(events):
        items = [track_index.get(e.track_id) for e in session if e.event_type == "play"]
        known = [i for i in items if i is not None]
        if known:
            out.append(known)
    return out


def replay_sessions(
    events: Sequence[PlayEvent],
    track_index: dict[str, int],
    *,
    max_sessions: int | None = None,
    max_prefixes: int | None = None,
    seed: int = 0,
) -> tuple[list[ReplaySession], np.ndarray]:
    """Test sessions (a seeded sample of ``max_sessions``, kept in time order) with their
    evaluated positions, and the targets ``(n_prefixes,)`` (item index, ``-1`` unknown).
    With ``max_prefixes``, evaluation stops after that many prefixes (sessions still replay)."""
    ordered = _ordered_sessions(events)
    if max_sessions is not None and len(ordered) > max_sessions:
        keep = np.random.default_rng(seed).choice(len(ordered), max_sessions, replace=False)
        ordered = [ordered[i] for i in np.sort(keep)]
    out: list[ReplaySession] = []
    targets: list[int] = []
    for session in ordered:
        items = np.asarray([track_index.get(e.track_id, -1) for e in session], dtype=np.int64)
        is_play = np.asarray([e.event_type == "play" for e in session], dtype=bool)
        test = ReplaySession(
            items, is_play, [e.track_id for e in session], first_prefix=len(targets)
        )
        for t in range(len(session) - 1):
            if max_prefixes is not None and len(targets) >= max_prefixes:
                break
            if is_play[t + 1]:
                test.evaluated.append(t)
                targets.append(int(items[t + 1]))
        out.append(test)
    return out, np.asarray(targets, dtype=np.int64)


def _remember(heard: list[str], plays: list[str], track: str, played: bool, limit: int) -> None:
    """``serving.state.SessionState.remember``: bounded lists of heard and played tracks."""
    heard.append(track)
    if len(heard) > limit:
        del heard[: len(heard) - limit]
    if played:
        plays.append(track)
        if len(plays) > limit:
            del plays[: len(plays) - limit]


def baseline_prefixes(
    sessions: Sequence[ReplaySession],
    track_index: dict[str, int],
    history_limit: int,
    repeats: RepeatMode = "exclude",
) -> tuple[list[list[int]], list[list[int]], np.ndarray]:
    """Per evaluated prefix (in prefix-id order): known played items, the known heard items
    the answer leaves out under ``repeats`` (the worker's bounded lists and rule,
    :func:`serving.model.excluded_tracks`), and whether the target was already heard."""
    plays_out: list[list[int]] = []
    heard_out: list[list[int]] = []
    already: list[bool] = []
    for s in sessions:
        heard: list[str] = []
        plays: list[str] = []
        wanted = set(s.evaluated)
        for t in range(len(s.track_ids)):
            _remember(heard, plays, s.track_ids[t], bool(s.is_play[t]), history_limit)
            if t in wanted:
                heard_idx = [i for i in (track_index.get(x) for x in heard) if i is not None]
                left_out = excluded_tracks(heard, repeats)
                plays_out.append([i for i in (track_index.get(x) for x in plays) if i is not None])
                heard_out.append(
                    [i for i in (track_index.get(x) for x in left_out) if i is not None]
                )
                already.append(int(s.items[t + 1]) in set(heard_idx))
    return plays_out, heard_out, np.asarray(already, dtype=bool)


def _known(track_index: dict[str, int], track_ids: Sequence[str]) -> list[int]:
    """The item indices of the known ones of ``track_ids``."""
    return [i for i in map(track_index.get, track_ids) if i is not None]


def replay_encoder(
    artifacts_dir: Path,
    encoder_name: str,
    sessions: Sequence[ReplaySession],
    variants: dict[str, RetrievalParams],
    n_prefixes: int,
    *,
    index_type: str = "hnsw",
    cb_index_type: str | None = None,
    history_limit: int = HISTORY_LIMIT,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Replay the test sessions through the worker's code path; returns, per variant name,
    the ``(n_prefixes, top_k)`` recommended item indices (padded with ``PAD``)."""
    model = load_model(
        artifacts_dir, encoder_name, index_type=index_type, cb_index_type=cb_index_type
    )
    k = max(p.top_k for p in variants.values())
    lists = {name: np.full((n_prefixes, k), PAD, dtype=np.int64) for name in variants}
    length = max((len(s.track_ids) for s in sessions), default=0)
    memo = model.neighbours.memoized() if model.neighbours is not None else nullcontext()
    # the variants' index searches and neighbour queries of a batch are the same
    with model.retriever.memoized_search(), memo:
        _replay_waves(model, sessions, variants, lists, k, length, history_limit, progress)
    return lists


def _replay_waves(
    model: ModelBundle,
    sessions: Sequence[ReplaySession],
    variants: dict[str, RetrievalParams],
    lists: dict[str, np.ndarray],
    k: int,
    length: int,
    history_limit: int,
    progress: bool,
) -> None:
    """:func:`replay_encoder`'s loop: one wave (event position) at a time, every session
    stepped, every evaluated prefix ranked under every variant into ``lists``."""
    encoder = model.encoder
    states = [encoder.initial_state() for _ in sessions]
    heard: list[list[str]] = [[] for _ in sessions]
    plays: list[list[str]] = [[] for _ in sessions]
    evaluated = [set(s.evaluated) for s in sessions]
    offsets = [{t: s.first_prefix + j for j, t in enumerate(s.evaluated)} for s in sessions]
    for t in tqdm(range(length), desc=encoder.name, unit="wave", disable=not progress):
        active = [r for r, s in enumerate(sessions) if len(s.track_ids) > t]
        step_rows = [r for r in active if sessions[r].is_play[t] and sessions[r].items[t] >= 0]
        if step_rows:
            items = np.asarray([sessions[r].items[t] for r in step_rows], dtype=np.int64)
            stepped = encoder.step([states[r] for r in step_rows], items)
            for r, new in zip(step_rows, stepped, strict=True):
                states[r] = new
        for r in active:
            s = sessions[r]
            _remember(heard[r], plays[r], s.track_ids[t], bool(s.is_play[t]), history_limit)
        rows = [r for r in active if t in evaluated[r]]
        for start in range(0, len(rows), _RANK_BATCH):
            chunk = rows[start : start + _RANK_BATCH]
            pids = [offsets[r][t] for r in chunk]
            for name, params in variants.items():
                # the worker's ranking as arrays (rank_sessions without the record items)
                ranked = rank_batch(
                    model,
                    [states[r] for r in chunk],
                    [plays[r] for r in chunk],
                    [heard[r] for r in chunk],
                    params,
                ).items[:, :k]
                lists[name][pids, : ranked.shape[1]] = np.where(ranked >= 0, ranked, PAD)


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
    train = _load_events(train_events)
    test = _load_events(test_events)
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
