"""A learned encoder whose catalog grew after training (the live catalog).

The ``lstm`` and ``transformer`` encoders have one embedding row per item seen in training;
a track added later has no row the model can consume. :class:`ExtendedItemsEncoder` wraps
such an encoder and

* answers :meth:`item_vectors` with the trained rows followed by the vectors given for the
  new items (placed in the encoder's item space by the caller), so new tracks are retrievable;
* treats a new item as *not steppable*: :meth:`step` leaves that session's state unchanged
  (the worker still records the track as heard, so it is excluded from the answers).

Everything else is delegated to the wrapped encoder (same name, states, serialisation).
The ``mean`` encoder does not need this: it steps with any item vector
(:meth:`encoders.mean.MeanEncoder.extend_items`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encoders.base import EncoderName, SessionEncoder, check_items
from encoders.errors import EncoderError

logger = logging.getLogger(__name__)


class ExtendedItemsEncoder:
    """``base`` plus item vectors for items ``base.n_items ..`` (see module doc)."""

    def __init__(self, base: SessionEncoder) -> None:
        self.base = base
        self._n_base = int(base.item_vectors().shape[0])
        self._extra = np.zeros((0, base.dim), dtype=np.float32)
        self._all: np.ndarray = base.item_vectors()

    @property
    def name(self) -> EncoderName:  # type: ignore[override]
        """The wrapped encoder's name (states stay compatible)."""
        return self.base.name

    @property
    def dim(self) -> int:
        """Size of the query vectors."""
        return self.base.dim

    @property
    def n_items(self) -> int:
        """Trained items plus added ones."""
        return self._n_base + int(self._extra.shape[0])

    @property
    def n_base_items(self) -> int:
        """Items the wrapped model knows (and can step with)."""
        return self._n_base

    def initial_state(self) -> np.ndarray:
        """The wrapped encoder's empty state."""
        return self.base.initial_state()

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """Step the sessions whose item the model knows; the others keep their state."""
        idx = check_items(items, self.n_items, len(states))
        known = np.flatnonzero(idx < self._n_base)
        out = list(states)
        if known.size:
            stepped = self.base.step([states[i] for i in known], idx[known])
            for i, new in zip(known, stepped, strict=True):
                out[int(i)] = new
        return out

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """The wrapped encoder's query vectors."""
        return self.base.embed(states)

    def item_vectors(self) -> np.ndarray:
        """``(n_items, dim)``: trained rows, then the added ones (replaced, never mutated)."""
        return self._all

    def extend_items(self, vectors: np.ndarray) -> None:
        """Append vectors for new items (the next item indices)."""
        new = np.ascontiguousarray(vectors, dtype=np.float32)
        if new.ndim != 2 or new.shape[1] != self.dim or not np.isfinite(new).all():
            raise EncoderError(f"new item vectors must be finite (m, {self.dim}), got {new.shape}")
        self._extra = np.concatenate([self._extra, new])
        self._all = np.concatenate([self.base.item_vectors(), self._extra])

    def replace_items(self, items: np.ndarray, vectors: np.ndarray) -> None:
        """Replace vectors of added items (trained rows belong to the model: rejected)."""
        idx = check_items(np.asarray(items, dtype=np.int64).reshape(-1), self.n_items, len(items))
        if idx.size and idx.min() < self._n_base:
            raise EncoderError("the vectors of trained items cannot be replaced")
        new = np.ascontiguousarray(vectors, dtype=np.float32).reshape(idx.size, -1)
        if new.shape[1] != self.dim or not np.isfinite(new).all():
            raise EncoderError(f"item vectors must be finite (m, {self.dim}), got {new.shape}")
        extra = self._extra.copy()
        extra[idx - self._n_base] = new
        self._extra = extra
        self._all = np.concatenate([self.base.item_vectors(), self._extra])

    def state_to_bytes(self, state: np.ndarray) -> bytes:
        """The wrapped encoder's serialisation."""
        return self.base.state_to_bytes(state)

    def state_from_bytes(self, data: bytes) -> np.ndarray:
        """The wrapped encoder's deserialisation."""
        return self.base.state_from_bytes(data)

    def save(self, directory: Path) -> None:
        """Save the wrapped (trained) encoder; added items are not part of it."""
        self.base.save(directory)
