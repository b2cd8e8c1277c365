"""Session sequences for next-track training: cleaning, a seeded split, padded batches.

Pure numpy. A training *sequence* is one session's item indices (plays only, chronological),
truncated to its last ``max_len + 1`` items so that it yields at most ``max_len`` (input,
next item) pairs: ``inputs = seq[:-1]``, ``targets = seq[1:]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from training.errors import DataError

logger = logging.getLogger(__name__)

#: Target value at padded positions (ignored by the loss).
IGNORE_TARGET = -1


@dataclass(frozen=True)
class SequenceBatch:
    """Right-padded batch: ``inputs`` and ``targets`` are ``(B, T)`` int64.

    ``inputs`` are padded with the model's pad index, ``targets`` with :data:`IGNORE_TARGET`.
    """

    inputs: np.ndarray
    targets: np.ndarray

    @property
    def n_targets(self) -> int:
        """Number of real (non-padded) prediction positions."""
        return int((self.targets != IGNORE_TARGET).sum())


def prepare_sequences(
    sessions: Sequence[Sequence[int]], max_len: int, n_items: int
) -> list[np.ndarray]:
    """Keep sessions with at least two items, truncated to their last ``max_len + 1`` items.

    Raises ``DataError`` on an item index outside ``[0, n_items)`` or ``max_len < 1``.
    """
    if max_len < 1:
        raise DataError(f"max_len must be >= 1, got {max_len}")
    out: list[np.ndarray] = []
    for session in sessions:
        if len(session) < 2:
            continue
        seq = np.asarray(session, dtype=np.int64)[-(max_len + 1) :]
        if seq.ndim != 1:
            raise DataError("a session must be a flat list of item indices")
        if seq.min() < 0 or seq.max() >= n_items:
            raise DataError(f"session holds an item index outside [0, {n_items})")
        out.append(seq)
    return out


def split_sessions(
    sequences: Sequence[np.ndarray],
    validation_share: float,
    seed: int,
    max_validation: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Seeded random split into (train, validation) by whole sessions.

    With ``0 < validation_share < 1`` and at least two sequences, both parts are non-empty.
    ``max_validation`` caps the number of validation sessions (the rest train).
    """
    if not 0.0 <= validation_share < 1.0:
        raise DataError(f"validation_share must be in [0, 1), got {validation_share}")
    n = len(sequences)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * validation_share))
    if validation_share > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    if max_validation is not None:
        n_val = min(n_val, max(max_validation, 0))
    val = [sequences[i] for i in order[:n_val]]
    train = [sequences[i] for i in order[n_val:]]
    return train, val


def repeat_targets(seq: np.ndarray) -> np.ndarray:
    """Boolean ``(len(seq) - 1,)``: is target ``seq[t + 1]`` already among ``seq[: t + 1]``?"""
    _, first, inverse = np.unique(seq, return_index=True, return_inverse=True)
    return (first[inverse] < np.arange(len(seq)))[1:]


def pad_batch(
    sequences: Sequence[np.ndarray], pad_index: int, skip_repeats: bool = False
) -> SequenceBatch:
    """Right-pad (input, target) pairs of the given sequences into one batch.

    With ``skip_repeats``, targets already heard earlier in the sequence are ignored (the
    worker never recommends a heard track, so predicting repeats is wasted effort).
    """
    t = max(len(s) for s in sequences) - 1
    inputs = np.full((len(sequences), t), pad_index, dtype=np.int64)
    targets = np.full((len(sequences), t), IGNORE_TARGET, dtype=np.int64)
    for row, seq in enumerate(sequences):
        inputs[row, : len(seq) - 1] = seq[:-1]
        target = seq[1:]
        if skip_repeats:
            target = np.where(repeat_targets(seq), IGNORE_TARGET, target)
        targets[row, : len(seq) - 1] = target
    return SequenceBatch(inputs, targets)


def iterate_batches(
    sequences: Sequence[np.ndarray],
    batch_size: int,
    pad_index: int,
    rng: np.random.Generator | None = None,
    bucket_batches: int = 32,
    skip_repeats: bool = False,
) -> Iterator[SequenceBatch]:
    """Padded batches of similar-length sequences.

    With ``rng`` (training): shuffle, sort by length inside chunks of ``bucket_batches``
    batches (less padding), and shuffle the batch order. Without (evaluation): sorted by
    length, deterministic. ``skip_repeats`` as in :func:`pad_batch`.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        order = rng.permutation(len(sequences))
        chunk = batch_size * bucket_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        batches = [batches[i] for i in rng.permutation(len(batches))]
    for idx in batches:
        yield pad_batch([sequences[i] for i in idx], pad_index, skip_repeats)


def count_batches(n_sequences: int, batch_size: int, bucket_batches: int = 32) -> int:
    """Number of batches :func:`iterate_batches` yields (for progress bars)."""
    if n_sequences == 0:
        return 0
    chunk = batch_size * bucket_batches
    full, rest = divmod(n_sequences, chunk)
    return full * bucket_batches + -(-rest // batch_size)


def heard_matrix(inputs: np.ndarray, pad_index: int) -> np.ndarray:
    """``(B, T, T)``: row ``[b, t]`` lists the items heard up to position ``t`` (else pad)."""
    t = inputs.shape[1]
    causal = np.tril(np.ones((t, t), dtype=bool))
    return np.where(causal[None], inputs[:, None, :], pad_index)


def target_counts(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """How often each item is a prediction target (``(n_items,)`` int64)."""
    if not sequences:
        return np.zeros(n_items, dtype=np.int64)
    return np.bincount(np.concatenate([s[1:] for s in sequences]), minlength=n_items)
