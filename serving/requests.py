"""Answering on-demand requests: synchronous, batched, no Kafka, no HTTP.

The request agents (:mod:`streams.agents.requests`) and the web views (:mod:`streams.web.api`) both
call one :class:`RequestHandler`, so a request gets the same answer whichever way it came in.

Recommendation requests
    The basis of an answer is, in order: the live state of ``session_id`` (looked up by the
    caller in the ``sessions`` table), else ``track_sequence`` (encoded on the fly, one batched
    encoder step per position across the requests of a batch), else nothing (the most popular
    tracks). Tracks heard in the session, or listed in the sequence, are excluded. Per-request
    retrieval parameters override the worker's defaults; requests are grouped by parameters
    and each group is ranked with one :func:`serving.model.rank_sessions` call.
Similar-track requests
    :meth:`index.retriever.HybridRetriever.similar` on the track's own vectors (the track
    itself excluded). An unknown track id is rejected with reason ``unknown_track``.

Both honour genre/mood filters with full-length answers whenever enough tracks match (the
retriever searches deeper, then exactly, until it has them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from encoders.base import SessionEncoder
from schemas.errors import SchemaError
from schemas.recommendation import Recommendation, RecommendedItem
from schemas.requests import RecommendationRequest, SimilarTracks, SimilarTracksRequest
from serving.engine import RecommendationEngine
from serving.model import ModelBundle, RetrievalParams, rank_sessions, uses_neighbours
from serving.state import SessionState

log = logging.getLogger(__name__)

#: ``basis`` of an answer (an extra field of the recommendation record).
BASIS_SESSION = "session"
BASIS_SEQUENCE = "track_sequence"
BASIS_POPULARITY = "popularity"


@dataclass
class _Query:
    """One recommendation request, resolved to what the ranking needs."""

    enc: np.ndarray
    plays: list[str]
    heard: list[str]
    length: int
    state: SessionState | None
    basis: str


def encode_sequences(
    encoder: SessionEncoder, sequences: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """Encoder states after each item sequence, batched: one ``step`` per position across
    all sequences still that long."""
    states = [encoder.initial_state() for _ in sequences]
    longest = max((len(s) for s in sequences), default=0)
    for t in range(longest):
        rows = [i for i, seq in enumerate(sequences) if len(seq) > t]
        items = np.fromiter((sequences[i][t] for i in rows), dtype=np.int64, count=len(rows))
        for i, new in zip(rows, encoder.step([states[i] for i in rows], items), strict=True):
            states[i] = new
    return states


class RequestHandler:
    """Turns validated requests into answer records, from the engine's current model."""

    def __init__(
        self, engine: RecommendationEngine, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.clock = clock

    @property
    def model(self) -> ModelBundle:
        """The model in use now (re-read on every call: it may be swapped or grow)."""
        return self.engine.model

    # -- checks that need the model -----------------------------------------------------------

    def params_for(
        self,
        request: RecommendationRequest | SimilarTracksRequest,
        variant: str | None = None,
    ) -> RetrievalParams:
        """The request's retrieval parameters over the defaults of the session's A/B
        ``variant`` (the worker's defaults without one); raises :class:`SchemaError` when the
        loaded model cannot honour them."""
        base = self.engine.params_for(variant)
        if isinstance(request, SimilarTracksRequest) and base.cf_weight == base.cb_weight == 0:
            # similar tracks search the cf and cb spaces only: a neighbour-only default
            # (chosen at training) leaves them the default weights
            defaults = RetrievalParams()
            base = replace(base, cf_weight=defaults.cf_weight, cb_weight=defaults.cb_weight)
        has_content = self.model.cb_vectors is not None and base.use_content
        params = RetrievalParams(
            top_k=request.top_k or base.top_k,
            fusion_method=request.fusion_method or base.fusion_method,
            cf_weight=base.cf_weight if request.cf_weight is None else request.cf_weight,
            cb_weight=base.cb_weight if request.cb_weight is None else request.cb_weight,
            nb_weight=base.nb_weight
            if getattr(request, "nb_weight", None) is None
            else request.nb_weight,  # type: ignore[union-attr]
            use_content=base.use_content,
            genre_filter=tuple(request.genre_filter),
            mood_filter=tuple(request.mood_filter),
            repeats=base.repeats,
        )
        if params.fusion_method == "cb_only" and not has_content:
            raise SchemaError(
                "invalid_value",
                "fusion_method 'cb_only' needs content vectors, which this worker does not use",
                "fusion_method",
            )
        both = params.fusion_method in ("weighted_sum", "rrf") and has_content
        nb = uses_neighbours(self.model, params) and isinstance(request, RecommendationRequest)
        if both and params.cf_weight == 0 and params.cb_weight == 0 and not nb:
            raise SchemaError(
                "invalid_value", "cf_weight and cb_weight must not both be 0", "cf_weight"
            )
        return params

    def check_similar(self, request: SimilarTracksRequest) -> int:
        """The item index of the request's track; raises :class:`SchemaError` (reason
        ``unknown_track``) when the catalog does not know it."""
        item = self.model.track_index.get(request.track_id)
        if item is None:
            raise SchemaError(
                "unknown_track", f"track {request.track_id!r} is not in the catalog", "track_id"
            )
        if request.use_cb and not request.use_cf and not self.model.retriever.has_content:
            raise SchemaError(
                "invalid_value",
                "use_cb alone needs content vectors, which this worker does not use",
                "use_cb",
            )
        self.params_for(request)
        return item

    # -- answers --------------------------------------------------------------------------------

    def recommend(
        self,
        requests: Sequence[RecommendationRequest],
        states: Sequence[SessionState | None],
    ) -> list[Recommendation]:
        """One recommendation per request, in order. ``states[i]`` is the live state of
        ``requests[i].session_id`` (``None``: unknown session or no session id)."""
        if len(requests) != len(states):
            raise ValueError(f"{len(requests)} requests but {len(states)} states")
        model = self.model
        params = [
            self.params_for(r, s.variant if s is not None else None)
            for r, s in zip(requests, states, strict=True)
        ]
        queries = self._queries(requests, states)
        groups: dict[RetrievalParams, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p, []).append(i)
        ranked: list[list[RecommendedItem]] = [[] for _ in requests]
        for p, rows in groups.items():
            lists = rank_sessions(
                model,
                [queries[i].enc for i in rows],
                [queries[i].plays for i in rows],
                [queries[i].heard for i in rows],
                p,
            )
            for i, items in zip(rows, lists, strict=True):
                ranked[i] = items
        now = int(self.clock() * 1000)
        return [
            self._record(r, q, p, items, now)
            for r, q, p, items in zip(requests, queries, params, ranked, strict=True)
        ]

    def similar(self, requests: Sequence[SimilarTracksRequest]) -> list[SimilarTracks]:
        """One answer per request, in order (run :meth:`check_similar` first: an unknown
        track raises :class:`SchemaError`)."""
        model = self.model
        now = int(self.clock() * 1000)
        out = []
        for request in requests:
            item = self.check_similar(request)
            p = self.params_for(request)
            fused = model.retriever.similar(
                item,
                p.top_k,
                use_cf=request.use_cf,
                use_cb=request.use_cb and p.use_content,
                method=p.fusion_method,  # type: ignore[arg-type]
                cf_weight=p.cf_weight,
                cb_weight=p.cb_weight,
                genre_filter=list(p.genre_filter) or None,
                mood_filter=list(p.mood_filter) or None,
            )
            out.append(
                SimilarTracks(
                    request_id=request.request_id,
                    track_id=request.track_id,
                    model_version=model.model_version,
                    generated_at=now,
                    items=[model.item(f) for f in fused],
                )
            )
        return out

    # -- helpers ---------------------------------------------------------------------------------

    def _queries(
        self, requests: Sequence[RecommendationRequest], states: Sequence[SessionState | None]
    ) -> list[_Query]:
        model = self.model
        encoder = model.encoder
        limit = self.engine.history_limit
        queries: list[_Query | None] = [None] * len(requests)
        to_encode: list[int] = []
        for i, (request, state) in enumerate(zip(requests, states, strict=True)):
            if state is not None:
                plays, heard = list(state.plays), list(state.heard)
                basis = BASIS_SESSION if model.indices(plays) else BASIS_POPULARITY
                queries[i] = _Query(
                    self.engine.encoder_state(state), plays, heard, state.length, state, basis
                )
            elif request.track_sequence:
                seq = list(request.track_sequence)
                basis = BASIS_SEQUENCE if model.indices(seq) else BASIS_POPULARITY
                queries[i] = _Query(encoder.initial_state(), seq, seq, len(seq), None, basis)
                to_encode.append(i)
            else:
                queries[i] = _Query(encoder.initial_state(), [], [], 0, None, BASIS_POPULARITY)
        if to_encode:
            sequences = [model.indices(requests[i].track_sequence)[-limit:] for i in to_encode]
            for i, enc in zip(to_encode, encode_sequences(encoder, sequences), strict=True):
                queries[i].enc = enc  # type: ignore[union-attr]
        return [q for q in queries if q is not None]

    def _record(
        self,
        request: RecommendationRequest,
        query: _Query,
        params: RetrievalParams,
        items: list[RecommendedItem],
        now: int,
    ) -> Recommendation:
        model = self.model
        content = params.use_content and model.cb_vectors is not None
        state = query.state
        return Recommendation(
            session_id=request.session_id,
            user_id=state.user_id if state is not None else None,
            event_id=None,
            request_id=request.request_id,
            model_version=model.model_version,
            generated_at=now,
            fusion_method=params.fusion_method if content else "cf_only",
            cf_weight=params.cf_weight,
            cb_weight=params.cb_weight if content else 0.0,
            nb_weight=params.nb_weight if uses_neighbours(model, params) else None,
            session_length=query.length,
            items=items,
            variant=state.variant if state is not None else None,
            encoder=model.encoder.name,
            extra={"basis": query.basis},
        )
