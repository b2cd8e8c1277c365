"""On-demand requests and their answers.

* :class:`RecommendationRequest` (topic ``recommendation-requests``, ``POST /recommendations``):
  next tracks for a live session (``session_id``) or for an explicit ``track_sequence``, with
  per-request retrieval parameters. Answered with a :class:`~schemas.recommendation.Recommendation`
  carrying the ``request_id``.
* :class:`SimilarTracksRequest` (topic ``similar-track-requests``, ``POST /similar-tracks``):
  the tracks most similar to one track. Answered with :class:`SimilarTracks` (topic
  ``similar-tracks``).

Every optional retrieval parameter left out (or ``null``) means "the worker's default"
(settings ``TOP_K``, ``FUSION_METHOD``, ``CF_WEIGHT``, ``CB_WEIGHT``). Validation is complete and
precise (a :class:`~schemas.errors.SchemaError` names the field); checks that need the model
(an unknown track, a fusion method the loaded model cannot run) happen in the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

import orjson

from schemas.errors import SchemaError
from schemas.recommendation import RecommendedItem
from schemas.spec import Spec
from schemas.validation import (
    DEFAULT_MAX_BYTES,
    check_schema,
    choice,
    decode_object,
    opt_bool,
    opt_float,
    opt_int,
    opt_str,
    req_int,
    req_str,
    str_list,
)

RECOMMENDATION_REQUEST_SCHEMA = "recommendation-request/v1"
SIMILAR_TRACKS_REQUEST_SCHEMA = "similar-tracks-request/v1"
SIMILAR_TRACKS_SCHEMA = "similar-tracks/v1"

FusionMethod = Literal["weighted_sum", "rrf", "cf_only", "cb_only"]
#: Fusion methods a request may name (the same as ``index.fusion.FUSION_METHODS``).
REQUEST_FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)
#: Largest ``top_k`` a request may ask for.
MAX_TOP_K = 1000
#: Most track ids in a ``track_sequence`` (longer histories: send the most recent ones).
MAX_SEQUENCE = 1000
#: Most labels in a ``genre_filter`` / ``mood_filter``.
MAX_FILTER_LABELS = 100

RequestId = Annotated[str, Spec("The request's id; its answer carries it.")]
TopK = Annotated[
    int | None, Spec("Tracks to return (default: TOP_K).", minimum=1, maximum=MAX_TOP_K)
]
GenreFilter = Annotated[
    list[str],
    Spec("Only tracks with one of these genres (empty: all).", max_items=MAX_FILTER_LABELS),
]
MoodFilter = Annotated[
    list[str],
    Spec("Only tracks with one of these moods (empty: all).", max_items=MAX_FILTER_LABELS),
]
Fusion = Annotated[FusionMethod | None, Spec("How to fuse the sources (default: the worker's).")]
CfWeight = Annotated[
    float | None,
    Spec("Weight of the encoder's space (default: the worker's).", minimum=0.0, maximum=1.0),
]
CbWeight = Annotated[
    float | None,
    Spec("Weight of the content space (default: the worker's).", minimum=0.0, maximum=1.0),
]

_REC_KNOWN = frozenset(
    {
        "schema",
        "request_id",
        "session_id",
        "track_sequence",
        "top_k",
        "genre_filter",
        "mood_filter",
        "fusion_method",
        "cf_weight",
        "cb_weight",
        "nb_weight",
    }
)
_SIM_KNOWN = frozenset(
    {
        "schema",
        "request_id",
        "track_id",
        "top_k",
        "use_cf",
        "use_cb",
        "genre_filter",
        "mood_filter",
        "fusion_method",
        "cf_weight",
        "cb_weight",
    }
)


def _top_k(obj: dict[str, Any]) -> int | None:
    value = opt_int(obj, "top_k", minimum=1)
    if value is not None and value > MAX_TOP_K:
        raise SchemaError(
            "invalid_value", f"field 'top_k' must be <= {MAX_TOP_K}, got {value}", "top_k"
        )
    return value


def _weight(obj: dict[str, Any], name: str) -> float | None:
    value = opt_float(obj, name)
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SchemaError("invalid_value", f"field {name!r} must be in [0, 1], got {value}", name)
    return value


def _fusion(obj: dict[str, Any]) -> str | None:
    if obj.get("fusion_method") is None:
        return None
    return choice(obj, "fusion_method", REQUEST_FUSION_METHODS)


def _retrieval_dict(
    top_k: int | None,
    genre_filter: list[str],
    mood_filter: list[str],
    fusion_method: str | None,
    cf_weight: float | None,
    cb_weight: float | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if top_k is not None:
        out["top_k"] = top_k
    if genre_filter:
        out["genre_filter"] = list(genre_filter)
    if mood_filter:
        out["mood_filter"] = list(mood_filter)
    if fusion_method is not None:
        out["fusion_method"] = fusion_method
    if cf_weight is not None:
        out["cf_weight"] = cf_weight
    if cb_weight is not None:
        out["cb_weight"] = cb_weight
    return out


@dataclass(frozen=True, slots=True)
class RecommendationRequest:
    """Next tracks for a session or a track sequence (at least one of the two is given).

    With a ``session_id`` the worker uses that session's live state; when the session is
    unknown it falls back to ``track_sequence`` and then to the most popular tracks.
    """

    request_id: RequestId
    session_id: Annotated[
        str | None, Spec("A live session: its state is used (and it is the Kafka key).")
    ] = None
    track_sequence: Annotated[
        list[str],
        Spec(
            "Track ids heard so far, oldest first; used when the session is unknown.",
            max_items=MAX_SEQUENCE,
        ),
    ] = field(default_factory=list)
    top_k: TopK = None
    genre_filter: GenreFilter = field(default_factory=list)
    mood_filter: MoodFilter = field(default_factory=list)
    fusion_method: Fusion = None
    cf_weight: CfWeight = None
    cb_weight: CbWeight = None
    #: Weight of the session-neighbourhood source (``None``: the worker's).
    nb_weight: Annotated[
        float | None,
        Spec(
            "Weight of the neighbourhood source (default: the worker's).",
            minimum=0.0,
            maximum=1.0,
        ),
    ] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (``None`` / empty optional fields are left out)."""
        out: dict[str, Any] = {
            "schema": RECOMMENDATION_REQUEST_SCHEMA,
            "request_id": self.request_id,
        }
        if self.session_id is not None:
            out["session_id"] = self.session_id
        if self.track_sequence:
            out["track_sequence"] = list(self.track_sequence)
        out.update(
            _retrieval_dict(
                self.top_k,
                self.genre_filter,
                self.mood_filter,
                self.fusion_method,
                self.cf_weight,
                self.cb_weight,
            )
        )
        if self.nb_weight is not None:
            out["nb_weight"] = self.nb_weight
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_bytes(self) -> bytes:
        """UTF-8 JSON."""
        return orjson.dumps(self.to_dict())

    @property
    def key(self) -> bytes:
        """The Kafka message key: the session id (co-partitioned with ``plays``), else the
        request id."""
        return (self.session_id or self.request_id).encode("utf-8")

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> RecommendationRequest:
        """Validate a decoded object; raises :class:`SchemaError` naming the field."""
        check_schema(obj, RECOMMENDATION_REQUEST_SCHEMA)
        request_id = req_str(obj, "request_id")
        session_id = opt_str(obj, "session_id")
        sequence = str_list(obj, "track_sequence", max_items=MAX_SEQUENCE)
        if session_id is None and not sequence:
            raise SchemaError(
                "missing_field",
                "one of 'session_id' or a non-empty 'track_sequence' is required",
                "session_id",
            )
        return cls(
            request_id=request_id,
            session_id=session_id,
            track_sequence=sequence,
            top_k=_top_k(obj),
            genre_filter=str_list(obj, "genre_filter", max_items=MAX_FILTER_LABELS),
            mood_filter=str_list(obj, "mood_filter", max_items=MAX_FILTER_LABELS),
            fusion_method=_fusion(obj),
            cf_weight=_weight(obj, "cf_weight"),
            cb_weight=_weight(obj, "cb_weight"),
            nb_weight=_weight(obj, "nb_weight"),
            extra={k: v for k, v in obj.items() if k not in _REC_KNOWN},
        )

    @classmethod
    def parse(
        cls, raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> RecommendationRequest:
        """Decode and validate one encoded request; raises :class:`SchemaError`."""
        return cls.from_dict(decode_object(raw, max_bytes=max_bytes))


@dataclass(frozen=True, slots=True)
class SimilarTracksRequest:
    """The tracks most similar to ``track_id`` (itself excluded).

    ``use_cf`` / ``use_cb`` choose the spaces searched (at least one); with both, the scores
    are fused with ``fusion_method`` (default: the worker's).
    """

    request_id: RequestId
    track_id: Annotated[str, Spec("The track to find neighbours of (the Kafka key).")]
    top_k: TopK = None
    use_cf: Annotated[bool, Spec("Search the encoder's (collaborative) space.")] = True
    use_cb: Annotated[bool, Spec("Search the content space.")] = True
    genre_filter: GenreFilter = field(default_factory=list)
    mood_filter: MoodFilter = field(default_factory=list)
    fusion_method: Fusion = None
    cf_weight: CfWeight = None
    cb_weight: CbWeight = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (``None`` / empty optional fields are left out)."""
        out: dict[str, Any] = {
            "schema": SIMILAR_TRACKS_REQUEST_SCHEMA,
            "request_id": self.request_id,
            "track_id": self.track_id,
            "use_cf": self.use_cf,
            "use_cb": self.use_cb,
        }
        out.update(
            _retrieval_dict(
                self.top_k,
                self.genre_filter,
                self.mood_filter,
                self.fusion_method,
                self.cf_weight,
                self.cb_weight,
            )
        )
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_bytes(self) -> bytes:
        """UTF-8 JSON."""
        return orjson.dumps(self.to_dict())

    @property
    def key(self) -> bytes:
        """The Kafka message key: the track id."""
        return self.track_id.encode("utf-8")

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> SimilarTracksRequest:
        """Validate a decoded object; raises :class:`SchemaError` naming the field."""
        check_schema(obj, SIMILAR_TRACKS_REQUEST_SCHEMA)
        request_id = req_str(obj, "request_id")
        track_id = req_str(obj, "track_id")
        use_cf = opt_bool(obj, "use_cf", True)
        use_cb = opt_bool(obj, "use_cb", True)
        if not (use_cf or use_cb):
            raise SchemaError(
                "invalid_value", "at least one of 'use_cf' and 'use_cb' must be true", "use_cf"
            )
        return cls(
            request_id=request_id,
            track_id=track_id,
            top_k=_top_k(obj),
            use_cf=use_cf,
            use_cb=use_cb,
            genre_filter=str_list(obj, "genre_filter", max_items=MAX_FILTER_LABELS),
            mood_filter=str_list(obj, "mood_filter", max_items=MAX_FILTER_LABELS),
            fusion_method=_fusion(obj),
            cf_weight=_weight(obj, "cf_weight"),
            cb_weight=_weight(obj, "cb_weight"),
            extra={k: v for k, v in obj.items() if k not in _SIM_KNOWN},
        )

    @classmethod
    def parse(cls, raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> SimilarTracksRequest:
        """Decode and validate one encoded request; raises :class:`SchemaError`."""
        return cls.from_dict(decode_object(raw, max_bytes=max_bytes))


@dataclass(frozen=True, slots=True)
class SimilarTracks:
    """The answer to a :class:`SimilarTracksRequest`: ranked tracks with their scores."""

    request_id: Annotated[str, Spec("The request answered.")]
    track_id: Annotated[str, Spec("The queried track (the Kafka key).")]
    model_version: Annotated[str, Spec("Version of the model that computed it.")]
    generated_at: Annotated[
        int, Spec("When it was computed: milliseconds since the Unix epoch.", minimum=0)
    ]
    items: Annotated[list[RecommendedItem], Spec("The similar tracks, best first.")]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object."""
        out: dict[str, Any] = {
            "schema": SIMILAR_TRACKS_SCHEMA,
            "request_id": self.request_id,
            "track_id": self.track_id,
            "model_version": self.model_version,
            "generated_at": self.generated_at,
            "items": [item.to_dict() for item in self.items],
        }
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_bytes(self) -> bytes:
        """UTF-8 JSON."""
        return orjson.dumps(self.to_dict())

    @property
    def key(self) -> bytes:
        """The Kafka message key: the queried track id."""
        return self.track_id.encode("utf-8")

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> SimilarTracks:
        """Validate a decoded object; raises :class:`SchemaError` naming the field."""
        check_schema(obj, SIMILAR_TRACKS_SCHEMA)
        raw_items = obj.get("items")
        if not isinstance(raw_items, list):
            raise SchemaError("wrong_type", "field 'items' must be a list", "items")
        items = []
        for i, item in enumerate(raw_items):
            if not isinstance(item, dict):
                raise SchemaError("wrong_type", f"field 'items'[{i}] must be an object", "items")
            score = opt_float(item, "score")
            if score is None:
                raise SchemaError("missing_field", f"field 'items'[{i}].score is required", "items")
            items.append(
                RecommendedItem(
                    track_id=req_str(item, "track_id"),
                    score=score,
                    cf_score=opt_float(item, "cf_score"),
                    cb_score=opt_float(item, "cb_score"),
                )
            )
        known = {"schema", "request_id", "track_id", "model_version", "generated_at", "items"}
        return cls(
            request_id=req_str(obj, "request_id"),
            track_id=req_str(obj, "track_id"),
            model_version=req_str(obj, "model_version"),
            generated_at=req_int(obj, "generated_at", minimum=0),
            items=items,
            extra={k: v for k, v in obj.items() if k not in known},
        )

    @classmethod
    def parse(cls, raw: bytes | str) -> SimilarTracks:
        """Decode and validate one encoded answer; raises :class:`SchemaError`."""
        return cls.from_dict(decode_object(raw, max_bytes=16 * 1024 * 1024))
