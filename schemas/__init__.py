"""Event and record formats shared by every other package (the bottom layer)."""

from schemas.dead_letter import DEAD_LETTER_SCHEMA, DeadLetter
from schemas.errors import NextTrackError, SchemaError
from schemas.play import EVENT_TYPES, PLAY_SCHEMA, EventType, PlayEvent
from schemas.recommendation import RECOMMENDATION_SCHEMA, Recommendation, RecommendedItem
from schemas.track import AUDIO_FEATURES, TRACK_SCHEMA, Track, read_catalog

__all__ = [
    "AUDIO_FEATURES",
    "DEAD_LETTER_SCHEMA",
    "EVENT_TYPES",
    "PLAY_SCHEMA",
    "RECOMMENDATION_SCHEMA",
    "TRACK_SCHEMA",
    "DeadLetter",
    "EventType",
    "NextTrackError",
    "PlayEvent",
    "Recommendation",
    "RecommendedItem",
    "SchemaError",
    "Track",
    "read_catalog",
]
