"""Per-session state kept in the changelog-backed Faust table ``sessions``.

A state holds the encoder state (bytes from ``SessionEncoder.state_to_bytes``), the recent
tracks heard (plays and skips, bounded, to exclude them and to rebuild encoder states after a
model swap), and the last recommendation's track ids (for the online hit rate).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

STATE_FORMAT = 1


@dataclass
class SessionState:
    """Mutable state of one listening session."""

    session_id: str
    user_id: str
    encoder: str
    model_version: str
    encoder_state: bytes
    length: int = 0
    heard: list[str] = field(default_factory=list)
    plays: list[str] = field(default_factory=list)
    last_ts: int = 0
    last_recommended: list[str] = field(default_factory=list)
    variant: str | None = None
    #: Source (partition, offset) of the last event applied, to recognise replays after a
    #: crash (events re-read from the last committed offset are answered, not re-applied).
    position: tuple[int, int] | None = None

    def is_replay(self, position: tuple[int, int] | None) -> bool:
        """Whether an event at ``position`` was already applied to this state."""
        return (
            position is not None
            and self.position is not None
            and position[0] == self.position[0]
            and position[1] <= self.position[1]
        )

    def remember(self, track_id: str, *, played: bool, limit: int) -> None:
        """Record a heard track, keeping at most ``limit`` entries per list."""
        self.heard.append(track_id)
        if len(self.heard) > limit:
            del self.heard[: len(self.heard) - limit]
        if played:
            self.plays.append(track_id)
            if len(self.plays) > limit:
                del self.plays[: len(self.plays) - limit]

    def to_bytes(self) -> bytes:
        obj: dict[str, Any] = {
            "v": STATE_FORMAT,
            "sid": self.session_id,
            "uid": self.user_id,
            "enc": self.encoder,
            "mv": self.model_version,
            "es": base64.b64encode(self.encoder_state).decode("ascii"),
            "n": self.length,
            "h": self.heard,
            "p": self.plays,
            "ts": self.last_ts,
            "lr": self.last_recommended,
        }
        if self.variant is not None:
            obj["var"] = self.variant
        if self.position is not None:
            obj["pos"] = list(self.position)
        return orjson.dumps(obj)

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        obj = orjson.loads(data)
        if obj.get("v") != STATE_FORMAT:
            raise ValueError(f"unknown session state format {obj.get('v')!r}")
        return cls(
            session_id=obj["sid"],
            user_id=obj["uid"],
            encoder=obj["enc"],
            model_version=obj["mv"],
            encoder_state=base64.b64decode(obj["es"]),
            length=obj["n"],
            heard=list(obj["h"]),
            plays=list(obj["p"]),
            last_ts=obj["ts"],
            last_recommended=list(obj["lr"]),
            variant=obj.get("var"),
            position=tuple(obj["pos"]) if obj.get("pos") else None,  # type: ignore[arg-type]
        )
