"""Event and record formats shared by every other package (the bottom layer)."""

from schemas.dead_letter import DEAD_LETTER_SCHEMA, DeadLetter
from schemas.errors import NextTrackError, SchemaError
from schemas.feedback import FEEDBACK_KINDS, FEEDBACK_SCHEMA, FeedbackEvent, FeedbackKind
from schemas.play import EVENT_TYPES, PLAY_SCHEMA, EventType, PlayEvent
from schemas.recommendation import RECOMMENDATION_SCHEMA, Recommendation, RecommendedItem
from schemas.requests import (
    RECOMMENDATION_REQUEST_SCHEMA,
    SIMILAR_TRACKS_REQUEST_SCHEMA,
    SIMILAR_TRACKS_SCHEMA,
    RecommendationRequest,
    SimilarTracks,
    SimilarTracksRequest,
)
from schemas.track import AUDIO_FEATURES, TRACK_SCHEMA, Track, read_catalog

__all__ = [
    "AUDIO_FEATURES",
    "DEAD_LETTER_SCHEMA",
    "EVENT_TYPES",
    "FEEDBACK_KINDS",
    "FEEDBACK_SCHEMA",
    "PLAY_SCHEMA",
    "RECOMMENDATION_REQUEST_SCHEMA",
    "RECOMMENDATION_SCHEMA",
    "SIMILAR_TRACKS_REQUEST_SCHEMA",
    "SIMILAR_TRACKS_SCHEMA",
    "TRACK_SCHEMA",
    "DeadLetter",
    "EventType",
    "FeedbackEvent",
    "FeedbackKind",
    "NextTrackError",
    "PlayEvent",
    "Recommendation",
    "RecommendationRequest",
    "RecommendedItem",
    "SchemaError",
    "SimilarTracks",
    "SimilarTracksRequest",
    "Track",
    "read_catalog",
]
