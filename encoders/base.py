"""The session-encoder protocol every backend (``mean``, ``lstm``, ``transformer``) implements.

A session encoder turns the tracks heard so far in a session into a query vector. It is run
*incrementally*: the worker keeps one state per session and advances it by one event at a
time, in batches across sessions. States are 1-D numpy arrays so they serialise compactly and
restore exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

EncoderName = Literal["mean", "lstm", "transformer"]
ENCODER_NAMES: tuple[EncoderName, ...] = ("mean", "lstm", "transformer")


@runtime_checkable
class SessionEncoder(Protocol):
    """What the worker and the evaluator need from an encoder."""

    #: ``"mean"``, ``"lstm"`` or ``"transformer"``.
    name: EncoderName

    @property
    def dim(self) -> int:
        """Size of the query vectors returned by :meth:`embed`."""
        ...

    def initial_state(self) -> np.ndarray:
        """The state of an empty session."""
        ...

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """Advance each state by one item index (``items`` is int64, one per state)."""
        ...

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """Query vectors ``(len(states), dim)`` float32 in the retrieval space."""
        ...

    def item_vectors(self) -> np.ndarray:
        """Item vectors ``(n_items, dim)`` float32 that queries are searched against."""
        ...

    def state_to_bytes(self, state: np.ndarray) -> bytes:
        """Compact, exact serialisation of one state."""
        ...

    def state_from_bytes(self, data: bytes) -> np.ndarray:
        """Inverse of :meth:`state_to_bytes`; raises ``EncoderStateError`` on a bad blob."""
        ...

    def save(self, directory: Path) -> None:
        """Write ``config.json`` (and weights) so :func:`encoders.load_encoder` restores it."""
        ...


def encode_sequence(encoder: SessionEncoder, items: Sequence[int]) -> np.ndarray:
    """Run ``encoder`` over a whole sequence, one step at a time; returns the final state."""
    state = encoder.initial_state()
    for item in items:
        state = encoder.step([state], np.asarray([item], dtype=np.int64))[0]
    return state
