"""Mean-pooling session encoder (optionally exponentially decayed towards recent tracks).

State layout (float32, ``dim + 1`` values): ``[s_0 .. s_{dim-1}, w]`` where ``s`` is the decayed
sum of the item vectors heard so far and ``w`` the decayed count. One event ``v`` updates
``s' = decay * s + v`` and ``w' = decay * w + 1``; ``decay = 1`` is plain mean pooling, ``decay
< 1`` weights recent tracks more. The query vector is ``s / w`` L2-normalised; an empty session
(``w == 0``) or one whose pooled vector is zero embeds to the zero vector, and the worker falls
back to popularity for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import (
    EncoderName,
    check_item_vectors,
    check_items,
    pack_state,
    read_encoder_config,
    stack_states,
    unpack_state,
    write_encoder_config,
)
from encoders.errors import EncoderError

logger = logging.getLogger(__name__)


def mean_step(batch: np.ndarray, vectors: np.ndarray, decay: float) -> np.ndarray:
    """Pure batched update of ``(B, dim + 1)`` states with ``(B, dim)`` item vectors."""
    out = np.empty_like(batch)
    out[:, :-1] = decay * batch[:, :-1] + vectors
    out[:, -1] = decay * batch[:, -1] + 1.0
    return out


def mean_embed(batch: np.ndarray) -> np.ndarray:
    """Pure batched query vectors: L2-normalised ``s / w``; zero rows for empty sessions."""
    sums = batch[:, :-1]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    ok = (batch[:, -1:] > 0) & (norms > 0)
    # s / w normalised equals s normalised because w > 0.
    return np.where(ok, sums / np.where(ok, norms, 1.0), 0.0).astype(np.float32)


class MeanEncoder:
    """Decayed mean of the (collaborative) item vectors of the tracks heard so far."""

    name: EncoderName = "mean"

    def __init__(self, item_vectors: np.ndarray, decay: float = 1.0) -> None:
        if not 0.0 < decay <= 1.0:
            raise EncoderError(f"decay must be in (0, 1], got {decay}")
        self._vectors = check_item_vectors(item_vectors)
        self.decay = float(decay)

    @property
    def dim(self) -> int:
        """Size of the query vectors (the item-vector width)."""
        return int(self._vectors.shape[1])

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue."""
        return int(self._vectors.shape[0])

    @property
    def state_size(self) -> int:
        """Number of float32 values in a state (``dim + 1``)."""
        return self.dim + 1

    def initial_state(self) -> np.ndarray:
        """Zero sum and zero weight."""
        return np.zeros(self.state_size, dtype=np.float32)

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """Add one item vector to each state (vectorised over the batch)."""
        batch = stack_states(states, np.float32, self.state_size)
        idx = check_items(items, self.n_items, batch.shape[0])
        return list(mean_step(batch, self._vectors[idx], self.decay))

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, dim)`` L2-normalised pooled vectors (zero rows for empty sessions)."""
        return mean_embed(stack_states(states, np.float32, self.state_size))

    def item_vectors(self) -> np.ndarray:
        """The item vectors this encoder was given."""
        return self._vectors

    def extend_items(self, vectors: np.ndarray) -> None:
        """Append item vectors for tracks added to the catalog (live catalog).

        The new rows get the next item indices; stepping with them works at once. The array
        is replaced, never modified in place, so an earlier :meth:`item_vectors` result stays
        valid.
        """
        new = np.ascontiguousarray(vectors, dtype=np.float32)
        if new.ndim != 2 or new.shape[1] != self.dim or not np.isfinite(new).all():
            raise EncoderError(f"new item vectors must be finite (m, {self.dim}), got {new.shape}")
        self._vectors = np.concatenate([self._vectors, new])

    def replace_items(self, items: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of existing items (copy-on-write, like :meth:`extend_items`)."""
        idx = check_items(np.asarray(items, dtype=np.int64).reshape(-1), self.n_items, len(items))
        new = np.ascontiguousarray(vectors, dtype=np.float32).reshape(idx.size, -1)
        if new.shape[1] != self.dim or not np.isfinite(new).all():
            raise EncoderError(f"item vectors must be finite (m, {self.dim}), got {new.shape}")
        out = self._vectors.copy()
        out[idx] = new
        self._vectors = out

    def state_to_bytes(self, state: np.ndarray) -> bytes:
        """6-byte header + ``(dim + 1)`` float32 values."""
        return pack_state(state, np.float32, self.state_size)

    def state_from_bytes(self, data: bytes) -> np.ndarray:
        """Inverse of :meth:`state_to_bytes`; ``EncoderStateError`` on a bad blob."""
        return unpack_state(data, np.float32, self.state_size)

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable config written by :meth:`save`."""
        return {
            "name": self.name,
            "dim": self.dim,
            "n_items": self.n_items,
            "hyperparameters": {"decay": self.decay},
        }

    def save(self, directory: Path) -> None:
        """Write ``config.json`` only; the item vectors are the artifacts' ``cf_vectors.npy``."""
        write_encoder_config(Path(directory), self.config())
        logger.info("saved mean encoder (dim %d, decay %g) to %s", self.dim, self.decay, directory)

    @classmethod
    def from_config(cls, config: dict[str, Any], item_vectors: np.ndarray) -> MeanEncoder:
        """Rebuild from a ``config.json`` dict and the item vectors it was saved with."""
        vectors = check_item_vectors(item_vectors)
        expected = (config.get("n_items"), config.get("dim"))
        if expected != tuple(vectors.shape):
            raise EncoderError(
                f"mean encoder saved for item vectors {expected}, got {tuple(vectors.shape)}"
            )
        return cls(vectors, decay=float(config.get("hyperparameters", {}).get("decay", 1.0)))

    @classmethod
    def load(cls, directory: Path, item_vectors: np.ndarray) -> MeanEncoder:
        """Read ``config.json`` from ``directory``; ``item_vectors`` are required."""
        config = read_encoder_config(Path(directory))
        if config["name"] != cls.name:
            raise EncoderError(f"{directory} holds a {config['name']!r} encoder, not 'mean'")
        return cls.from_config(config, item_vectors)
