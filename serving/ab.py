"""A/B testing: variants declared in configuration, a stable assignment of sessions to them,
each variant's retrieval parameters, and the online figures computed per variant.

``AB_VARIANTS`` declares the variants, ``;``-separated, each ``NAME:key=value,key=value``::

    AB_VARIANTS="A:cf_weight=0.7,cb_weight=0.3;B:fusion_method=rrf"
    AB_VARIANTS="control:weight=3;rrf:fusion_method=rrf,weight=1"

Keys override the default :class:`~serving.model.RetrievalParams` (from settings):
``top_k`` (1..1000), ``fusion_method`` (weighted_sum, rrf, cf_only, cb_only), ``cf_weight``,
``cb_weight`` and ``nb_weight`` (0..1), ``use_content`` (true/false). ``weight`` (> 0, default 1)
is the variant's relative share of sessions. A name is 1-32 letters, digits, ``_`` or ``-``
(not ``none``). An empty ``AB_VARIANTS`` disables the experiment (recommendations carry no
variant).

A session is assigned when it is created, from a stable hash of its id, and keeps its variant
for its life (stored in its state) as long as that variant stays configured.

Online figures (:class:`OnlineStats`) are kept in memory by each worker process since its
start, for the sessions of the partitions it owns; the number of distinct sessions behind
each figure is counted exactly up to 10,000 per figure and estimated (HyperLogLog, ~1.6%)
beyond.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.model import RetrievalParams

#: The label of sessions without a variant (no experiment configured).
NO_VARIANT = "none"
FUSION_METHODS = ("weighted_sum", "rrf", "cf_only", "cb_only")
FEEDBACK_KINDS = ("like", "dislike", "skip")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_SALT = b"nexttrack-ab/v1:"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _int_in(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        """An integer within the bounds."""
        value = int(text)
        if not lo <= value <= hi:
            raise ValueError(f"must be within {lo}..{hi}")
        return value

    return parse


def _unit_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError("must be within 0..1")
    return value


def _fusion(text: str) -> str:
    if text not in FUSION_METHODS:
        raise ValueError(f"must be one of {', '.join(FUSION_METHODS)}")
    return text


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false")


#: Overridable :class:`RetrievalParams` fields and their parsers.
OVERRIDES: dict[str, Any] = {
    "top_k": _int_in(1, 1000),
    "fusion_method": _fusion,
    "cf_weight": _unit_float,
    "cb_weight": _unit_float,
    "nb_weight": _unit_float,
    "use_content": _bool,
}


@dataclass(frozen=True)
class VariantSpec:
    """One declared variant: its name, relative weight and parameter overrides."""

    name: str
    weight: float = 1.0
    overrides: tuple[tuple[str, Any], ...] = ()

    def params(self, base: RetrievalParams) -> RetrievalParams:
        """``base`` with this variant's overrides applied."""
        return replace(base, **dict(self.overrides))

    def describe(self) -> str:
        """``key=value,...`` (``defaults`` when it overrides nothing)."""
        return ",".join(f"{k}={v}" for k, v in self.overrides) or "defaults"


def parse_variants(text: str) -> tuple[VariantSpec, ...]:
    """Parse an ``AB_VARIANTS`` value (see the module doc); raises ``ValueError`` saying
    which variant and key is wrong. An empty or blank value gives no variants."""
    specs: list[VariantSpec] = []
    for chunk in text.split(";"):
        chunk = chunk.strip()
        if not chunk:
            continue
        name, _, body = chunk.partition(":")
        name = name.strip()
        if not _NAME.match(name) or name.lower() == NO_VARIANT:
            raise ValueError(
                f"variant name {name!r} must be 1-32 letters, digits, '_' or '-' "
                f"(and not {NO_VARIANT!r})"
            )
        if any(s.name == name for s in specs):
            raise ValueError(f"variant {name!r} is declared twice")
        weight = 1.0
        overrides: dict[str, Any] = {}
        seen: set[str] = set()
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or not value:
                raise ValueError(f"variant {name!r}: expected key=value, got {item!r}")
            if key in seen:
                raise ValueError(f"variant {name!r}: {key!r} given twice")
            seen.add(key)
            try:
                if key == "weight":
                    weight = float(value)
                    if not (math.isfinite(weight) and weight > 0):
                        raise ValueError("must be > 0")
                elif key in OVERRIDES:
                    overrides[key] = OVERRIDES[key](value)
                else:
                    known = ", ".join(["weight", *OVERRIDES])
                    raise ValueError(f"unknown key (known: {known})")
            except ValueError as exc:
                raise ValueError(f"variant {name!r}: {key}={value!r}: {exc}") from None
        specs.append(VariantSpec(name, weight, tuple(sorted(overrides.items()))))
    return tuple(specs)


def bucket_of(session_id: str) -> float:
    """A stable, uniform number in [0, 1) from a session id (same on every process)."""
    digest = hashlib.blake2b(_SALT + session_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(session_id: str, variants: Sequence[VariantSpec]) -> str | None:
    """The variant of a session: weighted buckets of :func:`bucket_of` (``None`` without
    variants)."""
    if not variants:
        return None
    point = bucket_of(session_id) * sum(v.weight for v in variants)
    upto = 0.0
    for spec in variants:
        upto += spec.weight
        if point < upto:
            return spec.name
    return variants[-1].name


class Experiment:
    """The configured variants with their retrieval parameters over a base."""

    def __init__(self, variants: Sequence[VariantSpec], base: RetrievalParams) -> None:
        self.variants = tuple(variants)
        self.rebase(base)

    def rebase(self, base: RetrievalParams) -> None:
        """Recompute every variant's parameters over a new ``base`` (a reloaded model's
        fusion choice); assignments and online figures are unchanged."""
        self.base = base
        self._params = {spec.name: spec.params(base) for spec in self.variants}

    @property
    def enabled(self) -> bool:
        """Whether any variant is configured."""
        return bool(self.variants)

    @property
    def names(self) -> list[str]:
        """Variant names in declaration order."""
        return [spec.name for spec in self.variants]

    def assign(self, session_id: str) -> str | None:
        """A new session's variant."""
        return assign(session_id, self.variants)

    def resolve(self, current: str | None, session_id: str) -> str | None:
        """A session's variant: the stored one while it stays configured, else assigned
        afresh (``None`` when the experiment is off)."""
        if current is not None and current in self._params:
            return current
        return self.assign(session_id)

    def params(self, variant: str | None) -> RetrievalParams:
        """Retrieval parameters of ``variant`` (the base for ``None`` or an unknown name)."""
        if variant is None:
            return self.base
        return self._params.get(variant, self.base)

    def describe(self) -> list[dict[str, Any]]:
        """Name, share of sessions and overrides of each variant (for the status page)."""
        total = sum(v.weight for v in self.variants) or 1.0
        return [
            {
                "name": v.name,
                "share": v.weight / total,
                "overrides": v.describe(),
                "top_k": self._params[v.name].top_k,
            }
            for v in self.variants
        ]


# -- distinct counting ----------------------------------------------------------------------


class DistinctCounter:
    """How many distinct strings were added: exact up to ``exact_limit``, then a HyperLogLog
    estimate with ``2**precision`` registers (bounded memory either way)."""

    def __init__(self, exact_limit: int = 10_000, precision: int = 12) -> None:
        self.exact_limit = exact_limit
        self.precision = precision
        self._exact: set[str] | None = set()
        self._registers: bytearray | None = None

    def add(self, item: str) -> None:
        """Count ``item`` (repeats count once)."""
        if self._exact is not None:
            self._exact.add(item)
            if len(self._exact) > self.exact_limit:
                self._registers = bytearray(1 << self.precision)
                for seen in self._exact:
                    self._add_hll(seen)
                self._exact = None
            return
        self._add_hll(item)

    def _add_hll(self, item: str) -> None:
        assert self._registers is not None
        h = int.from_bytes(hashlib.blake2b(item.encode("utf-8"), digest_size=8).digest(), "big")
        p = self.precision
        index = h >> (64 - p)
        rest = (h << p) & ((1 << 64) - 1)
        rank = min(64 - rest.bit_length() + 1, 64 - p + 1)
        if rank > self._registers[index]:
            self._registers[index] = rank

    def __len__(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        assert self._registers is not None
        m = len(self._registers)
        estimate = (0.7213 / (1 + 1.079 / m)) * m * m / sum(2.0**-r for r in self._registers)
        zeros = self._registers.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)
        return int(round(estimate))


# -- online figures ---------------------------------------------------------------------------


@dataclass
class VariantFigures:
    """Online figures of one variant."""

    plays: int = 0  # play events consumed
    evaluated: int = 0  # plays that followed a recommendation in their session
    hits: int = 0  # ... whose track was in that recommendation
    feedback: int = 0  # feedback events
    on_recommended: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDBACK_KINDS, 0))
    sessions: DistinctCounter = field(default_factory=DistinctCounter)
    evaluated_sessions: DistinctCounter = field(default_factory=DistinctCounter)
    feedback_sessions: DistinctCounter = field(default_factory=DistinctCounter)

    def as_dict(self) -> dict[str, Any]:
        """The figures, with rates (``None`` where nothing was judged yet)."""
        likes = self.on_recommended["like"]
        dislikes = self.on_recommended["dislike"]
        rated = likes + dislikes
        return {
            "sessions": len(self.sessions),
            "plays": self.plays,
            "evaluated_plays": self.evaluated,
            "hits": self.hits,
            "hit_rate": self.hits / self.evaluated if self.evaluated else None,
            "hit_rate_sessions": len(self.evaluated_sessions),
            "feedback": self.feedback,
            "likes_recommended": likes,
            "dislikes_recommended": dislikes,
            "skips_recommended": self.on_recommended["skip"],
            "like_share": likes / rated if rated else None,
            "feedback_sessions": len(self.feedback_sessions),
        }


class OnlineStats:
    """Per-variant online figures computed in the stream.

    * **hit rate at k**: the share of plays whose track was in the session's previous
      recommendation (k is the variant's ``top_k``); plays that open a session (no previous
      recommendation) and skips are not evaluated;
    * **feedback on recommended tracks**: likes, dislikes and skips of tracks that were in
      the session's last recommendation;
    * with the number of distinct sessions behind each.
    """

    def __init__(self) -> None:
        self._figures: dict[str, VariantFigures] = {}

    def _of(self, variant: str | None) -> VariantFigures:
        key = variant or NO_VARIANT
        figures = self._figures.get(key)
        if figures is None:
            figures = self._figures[key] = VariantFigures()
        return figures

    def record_play(self, variant: str | None, session_id: str, hit: bool | None) -> None:
        """One play event; ``hit`` is ``None`` when it had no previous recommendation to be
        judged against."""
        figures = self._of(variant)
        figures.plays += 1
        figures.sessions.add(session_id)
        if hit is not None:
            figures.evaluated += 1
            figures.hits += int(hit)
            figures.evaluated_sessions.add(session_id)

    def record_feedback(
        self, variant: str | None, session_id: str, kind: str, *, recommended: bool
    ) -> None:
        """One feedback event; ``recommended`` tells whether its track was in the session's
        last recommendation."""
        figures = self._of(variant)
        figures.feedback += 1
        if recommended and kind in figures.on_recommended:
            figures.on_recommended[kind] += 1
            figures.feedback_sessions.add(session_id)

    def variants(self) -> list[str]:
        """Variants seen so far."""
        return sorted(self._figures)

    def snapshot(self, names: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """Figures by variant; ``names`` are included even before any event."""
        for name in names:
            self._of(name)
        return {name: self._figures[name].as_dict() for name in sorted(self._figures)}


def is_hit(track_id: str, previous: Sequence[str]) -> bool | None:
    """Whether a played track was recommended just before (``None``: nothing was)."""
    if not previous:
        return None
    return track_id in previous
