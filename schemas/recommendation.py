"""Recommendations: the output stream (topic ``recommendations``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple

import orjson

from schemas.spec import Spec
from schemas.validation import check_schema, decode_object, opt_str, req_int, req_str

RECOMMENDATION_SCHEMA = "recommendation/v1"


class RecommendedItem(NamedTuple):
    """One recommended track with the scores that explain it.

    A named tuple: the worker builds ten of these per event, and a tuple is several times
    cheaper to create than a frozen dataclass. Scores are written as given: the producers
    (``serving.model``) round them to 6 decimals, the worker in one array operation per
    batch.
    """

    track_id: Annotated[str, Spec("The recommended track.")]
    score: Annotated[float, Spec("Its fused score (higher first; comparable within one list).")]
    cf_score: Annotated[
        float | None,
        Spec("Its score in the encoder's (collaborative) space; null if not found there."),
    ] = None
    cb_score: Annotated[
        float | None, Spec("Its score in the content space; null if not found there.")
    ] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "score": self.score,
            "cf_score": self.cf_score,
            "cb_score": self.cb_score,
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer to one play event (``event_id``) or one request (``request_id``)."""

    session_id: Annotated[str | None, Spec("The session (null for a sequence-only request).")]
    user_id: Annotated[str | None, Spec("The session's user, when known.")]
    event_id: Annotated[str | None, Spec("The play answered (null for a request).")]
    model_version: Annotated[str, Spec("Version of the model that computed it.")]
    generated_at: Annotated[
        int,
        Spec(
            "Milliseconds since the Unix epoch: for an answer to a play, the play's ts (an "
            "answer is a function of its play and its session, so a replayed play is answered "
            "with the same bytes); for an answer to a request, when it was computed."
        ),
    ]
    fusion_method: Annotated[str, Spec("How the sources were fused (weighted_sum, rrf, ...).")]
    cf_weight: Annotated[float, Spec("Weight of the encoder's space in the fusion.")]
    cb_weight: Annotated[float, Spec("Weight of the content space in the fusion.")]
    session_length: Annotated[
        int, Spec("Events in the session so far (a request: of its session or track_sequence).")
    ]
    items: Annotated[list[RecommendedItem], Spec("The recommended tracks, best first.")]
    request_id: Annotated[str | None, Spec("The request answered (absent for a play).")] = None
    variant: Annotated[str | None, Spec("The session's A/B variant (absent without one).")] = None
    encoder: Annotated[str | None, Spec("The session encoder that served it.")] = None
    #: Weight of the session-neighbourhood source when it took part (else absent).
    nb_weight: Annotated[
        float | None, Spec("Weight of the neighbourhood source, when it took part.")
    ] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": RECOMMENDATION_SCHEMA,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "event_id": self.event_id,
            "model_version": self.model_version,
            "generated_at": self.generated_at,
            "fusion_method": self.fusion_method,
            "cf_weight": self.cf_weight,
            "cb_weight": self.cb_weight,
            "session_length": self.session_length,
            "items": [item.to_dict() for item in self.items],
        }
        for name in ("request_id", "variant", "encoder", "nb_weight"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extra)
        return out

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Recommendation:
        check_schema(obj, RECOMMENDATION_SCHEMA)
        items = [
            RecommendedItem(
                track_id=item["track_id"],
                score=item["score"],
                cf_score=item.get("cf_score"),
                cb_score=item.get("cb_score"),
            )
            for item in obj.get("items", [])
        ]
        known = {
            "schema",
            "session_id",
            "user_id",
            "event_id",
            "model_version",
            "generated_at",
            "fusion_method",
            "cf_weight",
            "cb_weight",
            "session_length",
            "items",
            "request_id",
            "variant",
            "encoder",
            "nb_weight",
        }
        return cls(
            session_id=opt_str(obj, "session_id"),
            user_id=opt_str(obj, "user_id"),
            event_id=opt_str(obj, "event_id"),
            model_version=req_str(obj, "model_version"),
            generated_at=req_int(obj, "generated_at"),
            fusion_method=req_str(obj, "fusion_method"),
            cf_weight=float(obj["cf_weight"]),
            cb_weight=float(obj["cb_weight"]),
            session_length=req_int(obj, "session_length"),
            items=items,
            request_id=opt_str(obj, "request_id"),
            variant=opt_str(obj, "variant"),
            encoder=opt_str(obj, "encoder"),
            nb_weight=None if obj.get("nb_weight") is None else float(obj["nb_weight"]),
            extra={k: v for k, v in obj.items() if k not in known},
        )

    @classmethod
    def parse(cls, raw: bytes | str) -> Recommendation:
        return cls.from_dict(decode_object(raw, max_bytes=16 * 1024 * 1024))
