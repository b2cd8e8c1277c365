"""Genre / mood filters and the retired mask over the catalog (item indices).

Labels are matched after ``strip().casefold()`` ("Hip-Hop " == "hip-hop"). A filter is a list
of labels; an item passes a filter when it carries ANY of them (OR within a filter). With both
a genre and a mood filter an item must pass BOTH (AND across filters). ``None`` or an empty
list means no constraint; an unknown label matches no item. Retired items are tracked in a
separate mask; :meth:`CatalogFilters.usable_mask` combines everything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from index.errors import InvalidInputError, UnknownItemError

logger = logging.getLogger(__name__)


def normalise_label(label: str) -> str:
    """Canonical form of a genre or mood label: stripped and case-folded."""
    return label.strip().casefold()


class _LabelMasks:
    """One bool mask per label over item indices, with amortised growth."""

    def __init__(self, capacity: int) -> None:
        self._cap = max(16, capacity)
        self._masks: dict[str, np.ndarray] = {}

    def grow(self, n: int) -> None:
        if n <= self._cap:
            return
        cap = max(n, 2 * self._cap)
        for label, mask in self._masks.items():
            self._masks[label] = np.concatenate([mask, np.zeros(cap - self._cap, dtype=bool)])
        self._cap = cap

    def set_items(self, start: int, rows: Sequence[Sequence[str]], *, clear: bool) -> None:
        """Give item ``start + j`` the labels ``rows[j]`` (``clear``: drop its old labels)."""
        if clear:
            for mask in self._masks.values():
                mask[start : start + len(rows)] = False
        members: dict[str, list[int]] = {}
        for j, row in enumerate(rows):
            if isinstance(row, str):
                raise InvalidInputError(f"labels must be a list of strings, got {row!r}")
            for raw in row:
                label = normalise_label(raw)
                if label:
                    members.setdefault(label, []).append(start + j)
        for label, items in members.items():
            if label not in self._masks:
                self._masks[label] = np.zeros(self._cap, dtype=bool)
            self._masks[label][items] = True

    def any_of(self, labels: Iterable[str], n: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        for raw in labels:
            mask = self._masks.get(normalise_label(raw))
            if mask is not None:
                out |= mask[:n]
        return out

    def labels(self) -> list[str]:
        return sorted(self._masks)


class CatalogFilters:
    """Per-genre and per-mood masks plus the retired mask of a catalog of ``n_items`` items."""

    def __init__(self, n_items: int = 0) -> None:
        """An empty-tag catalog of ``n_items`` items (no genres, no moods, none retired)."""
        self._n = 0
        self._genres = _LabelMasks(n_items)
        self._moods = _LabelMasks(n_items)
        self._retired = np.zeros(max(16, n_items), dtype=bool)
        self.add_items([[] for _ in range(n_items)], [[] for _ in range(n_items)])

    @classmethod
    def from_lists(
        cls,
        genres: Sequence[Sequence[str]],
        moods: Sequence[Sequence[str]] | None = None,
        retired: Iterable[int] = (),
    ) -> CatalogFilters:
        """Build from one list of genres (and of moods) per item, row ``i`` = item ``i``."""
        out = cls(0)
        out.add_items(genres, moods)
        out.retire(retired)
        return out

    @property
    def n_items(self) -> int:
        """Number of catalog items (retired included)."""
        return self._n

    def genres(self) -> list[str]:
        """Known genre labels (normalised)."""
        return self._genres.labels()

    def moods(self) -> list[str]:
        """Known mood labels (normalised)."""
        return self._moods.labels()

    def add_items(
        self, genres: Sequence[Sequence[str]], moods: Sequence[Sequence[str]] | None = None
    ) -> np.ndarray:
        """Append items with their labels; returns their item indices."""
        if moods is None:
            moods = [[] for _ in genres]
        if len(genres) != len(moods):
            raise InvalidInputError(f"{len(genres)} genre lists but {len(moods)} mood lists")
        start, m = self._n, len(genres)
        self._genres.grow(start + m)
        self._moods.grow(start + m)
        if start + m > self._retired.size:
            cap = max(start + m, 2 * self._retired.size)
            self._retired = np.concatenate(
                [self._retired, np.zeros(cap - self._retired.size, dtype=bool)]
            )
        self._genres.set_items(start, genres, clear=True)
        self._moods.set_items(start, moods, clear=True)
        self._n = start + m
        return np.arange(start, start + m, dtype=np.int64)

    def set_labels(
        self, item: int, genres: Sequence[str] | None = None, moods: Sequence[str] | None = None
    ) -> None:
        """Replace the genres and/or moods of one item (``None`` keeps them)."""
        self._check_item(item)
        if genres is not None:
            self._genres.set_items(item, [genres], clear=True)
        if moods is not None:
            self._moods.set_items(item, [moods], clear=True)

    def retire(self, ids: Iterable[int]) -> None:
        """Mark items retired (idempotent)."""
        arr = np.asarray(list(ids), dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self._n):
            raise UnknownItemError(f"ids outside 0..{self._n - 1}")
        self._retired[arr] = True

    @property
    def retired_mask(self) -> np.ndarray:
        """``(n_items,)`` bool view: True = retired (never recommend)."""
        return self._retired[: self._n]

    def allowed_mask(
        self,
        genre_filter: Sequence[str] | None = None,
        mood_filter: Sequence[str] | None = None,
    ) -> np.ndarray | None:
        """Items passing the tag filters (OR within a filter, AND across), or ``None`` when
        neither filter constrains anything. Retired items are NOT removed here."""
        out: np.ndarray | None = None
        if genre_filter:
            out = self._genres.any_of(genre_filter, self._n)
        if mood_filter:
            moods = self._moods.any_of(mood_filter, self._n)
            out = moods if out is None else out & moods
        return out

    def usable_mask(
        self,
        genre_filter: Sequence[str] | None = None,
        mood_filter: Sequence[str] | None = None,
    ) -> np.ndarray:
        """``allowed_mask & ~retired``: the items a recommendation may contain."""
        allowed = self.allowed_mask(genre_filter, mood_filter)
        live = ~self.retired_mask
        return live if allowed is None else allowed & live

    def _check_item(self, item: int) -> None:
        if not 0 <= item < self._n:
            raise UnknownItemError(f"item {item} outside 0..{self._n - 1}")
