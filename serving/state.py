"""Per-session state kept in the changelog-backed Faust table ``sessions``.

A state holds the encoder state (bytes from ``SessionEncoder.state_to_bytes``), the recent
tracks heard (plays and skips, bounded, to exclude them and to rebuild encoder states after a
model swap), the last recommendation's track ids (for the online hit rate), and the answers
already sent for the session's events that may still be read again (:attr:`answers`: events
after the last offset known to be committed), so a replay after a crash re-sends the very
same answer.

Stored format 3 (written now): one version byte ``0x03``, a little-endian ``uint32`` length,
that many bytes of JSON (ids, counters, the heard tracks once, a bit mask of which were
plays, plays older than the heard window, and the positions and sizes of the kept answers),
a ``uint32`` length and the encoder state's raw bytes, then the kept answers' bytes one
after another. Format 2 (the same without answers: JSON, then the encoder state up to the
end) and format 1 (JSON, written by the first release) are still read.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

STATE_FORMAT = 3
_V2 = b"\x02"
_V3 = b"\x03"
_LEN = struct.Struct("<I")


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
    #: ``(partition, offset, answer bytes)`` of the session's recent events, oldest first:
    #: what was sent for each, for replays (``serving.engine`` keeps and prunes them).
    answers: list[tuple[int, int, bytes]] = field(default_factory=list)

    def kept_answer(self, position: tuple[int, int] | None) -> bytes | None:
        """The answer sent for the event at ``position``, if it is still kept."""
        if position is None:
            return None
        for partition, offset, payload in self.answers:
            if partition == position[0] and offset == position[1]:
                return payload
        return None

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
        """Format 3 (see the module doc)."""
        flags, older = _played_mask(self.heard, self.plays)
        obj: dict[str, Any] = {
            "sid": self.session_id,
            "uid": self.user_id,
            "enc": self.encoder,
            "mv": self.model_version,
            "n": self.length,
            "h": self.heard,
            "f": flags,
            "ts": self.last_ts,
            "lr": self.last_recommended,
        }
        if older:
            obj["o"] = older
        if self.variant is not None:
            obj["var"] = self.variant
        if self.position is not None:
            obj["pos"] = self.position
        if self.answers:
            obj["ans"] = [(p, o, len(payload)) for p, o, payload in self.answers]
        head = orjson.dumps(obj)
        return b"".join(
            (
                _V3,
                _LEN.pack(len(head)),
                head,
                _LEN.pack(len(self.encoder_state)),
                self.encoder_state,
                *(payload for _, _, payload in self.answers),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        """Read format 3, 2 or 1; raises ``ValueError`` (or ``KeyError``/``TypeError``) when
        ``data`` is none of them."""
        if data[:1] == b"{":
            return cls._from_v1(data)
        if data[:1] not in (_V2, _V3) or len(data) < 1 + _LEN.size:
            raise ValueError(f"unknown session state format {data[:1]!r}")
        (size,) = _LEN.unpack_from(data, 1)
        start = 1 + _LEN.size
        if len(data) < start + size:
            raise ValueError("truncated session state")
        obj = orjson.loads(data[start : start + size])
        rest = start + size
        answers: list[tuple[int, int, bytes]] = []
        if data[:1] == _V2:
            encoder_state = bytes(data[rest:])
        else:
            (enc_size,) = _LEN.unpack_from(data, rest)
            rest += _LEN.size
            encoder_state = bytes(data[rest : rest + enc_size])
            rest += enc_size
            for partition, offset, n in obj.get("ans", ()):
                answers.append((partition, offset, bytes(data[rest : rest + n])))
                rest += n
            if rest != len(data):
                raise ValueError("truncated session state")
        heard = list(obj["h"])
        mask = int(obj["f"], 16) if obj["f"] else 0
        plays = list(obj.get("o", ())) + [
            t for i, t in enumerate(heard) if mask >> (len(heard) - 1 - i) & 1
        ]
        return cls(
            session_id=obj["sid"],
            user_id=obj["uid"],
            encoder=obj["enc"],
            model_version=obj["mv"],
            encoder_state=encoder_state,
            length=obj["n"],
            heard=heard,
            plays=plays,
            last_ts=obj["ts"],
            last_recommended=list(obj["lr"]),
            variant=obj.get("var"),
            position=tuple(obj["pos"]) if obj.get("pos") else None,  # type: ignore[arg-type]
            answers=answers,
        )

    @classmethod
    def _from_v1(cls, data: bytes) -> SessionState:
        obj = orjson.loads(data)
        if obj.get("v") != 1:
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


def _played_mask(heard: list[str], plays: list[str]) -> tuple[str, list[str]]:
    """Which of ``heard`` spell the newest ``plays`` (a bit mask as hex, first heard = most
    significant bit), and the plays older than that (matched greedily from the newest end,
    so ``older + [marked heard]`` is exactly ``plays``)."""
    j = len(plays) - 1
    mask = 0
    for i in range(len(heard) - 1, -1, -1):
        if j < 0:
            break
        if heard[i] == plays[j]:
            mask |= 1 << (len(heard) - 1 - i)
            j -= 1
    return (format(mask, "x") if mask else ""), plays[: j + 1]
