"""Shared contract tests for every session encoder (a test mixin, as in ``implicit``).

A test class inherits :class:`EncoderSuite` and provides :meth:`EncoderSuite.make_encoder`
(small, seeded) and :meth:`EncoderSuite.reference_embed`, the query vector recomputed from the
whole item sequence *without* incremental stepping. Optionally it overrides
:meth:`EncoderSuite.reference_state`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encoders import (
    ENCODER_NAMES,
    EncoderInputError,
    EncoderStateError,
    SessionEncoder,
    encode_sequence,
    load_encoder,
)

N_ITEMS = 30
ATOL = 1e-5


def make_item_vectors(n_items: int = N_ITEMS, dim: int = 6, seed: int = 0) -> np.ndarray:
    """Seeded random float32 item vectors."""
    return np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)


def random_sequences(
    seed: int, count: int, max_len: int, n_items: int = N_ITEMS
) -> list[list[int]]:
    """``count`` seeded random item sequences with lengths ``0 .. max_len``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, size=count)
    lengths[:2] = (0, max_len)  # always cover the empty and the longest sequence
    return [rng.integers(0, n_items, size=int(n)).tolist() for n in lengths]


def step_batched(encoder: SessionEncoder, sequences: list[list[int]]) -> list[np.ndarray]:
    """Advance all sequences together, one batched step per position (ragged batches)."""
    states = [encoder.initial_state() for _ in sequences]
    for t in range(max((len(s) for s in sequences), default=0)):
        active = [i for i, s in enumerate(sequences) if len(s) > t]
        items = np.asarray([sequences[i][t] for i in active], dtype=np.int64)
        new = encoder.step([states[i] for i in active], items)
        for i, state in zip(active, new, strict=True):
            states[i] = state
    return states


class EncoderSuite:
    """Contract tests; subclasses implement ``make_encoder`` and ``reference_embed``."""

    #: Longest random sequence used by the tests (longer than a transformer test window).
    max_test_len = 12

    def make_encoder(self) -> SessionEncoder:
        """A small encoder with seeded random weights."""
        raise NotImplementedError

    def reference_embed(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray:
        """The ``(dim,)`` query for ``items`` computed from the whole sequence at once."""
        raise NotImplementedError

    def reference_state(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray | None:
        """The state after ``items`` computed at once, or ``None`` when not comparable."""
        return None

    # -- protocol and shapes ---------------------------------------------------------------

    def test_implements_protocol(self) -> None:
        encoder = self.make_encoder()
        assert isinstance(encoder, SessionEncoder)
        assert encoder.name in ENCODER_NAMES

    def test_initial_state_embed_shape(self) -> None:
        encoder = self.make_encoder()
        state = encoder.initial_state()
        assert state.ndim == 1
        out = encoder.embed([state])
        assert out.shape == (1, encoder.dim)
        assert out.dtype == np.float32
        assert np.isfinite(out).all()

    def test_embed_finite_and_dim_matches_item_vectors(self) -> None:
        encoder = self.make_encoder()
        vectors = encoder.item_vectors()
        assert vectors.dtype == np.float32
        assert vectors.shape == (N_ITEMS, encoder.dim)
        states = step_batched(encoder, random_sequences(1, 8, self.max_test_len))
        out = encoder.embed(states)
        assert out.shape == (8, vectors.shape[1])
        assert out.dtype == np.float32
        assert np.isfinite(out).all()

    def test_empty_batch(self) -> None:
        encoder = self.make_encoder()
        assert encoder.step([], np.zeros(0, dtype=np.int64)) == []
        assert encoder.embed([]).shape == (0, encoder.dim)

    # -- incremental == full recompute -----------------------------------------------------

    def test_step_by_step_equals_full_recompute(self) -> None:
        encoder = self.make_encoder()
        for items in random_sequences(2, 10, self.max_test_len)[1:]:
            state = encode_sequence(encoder, items)
            expected_state = self.reference_state(encoder, items)
            if expected_state is not None:
                np.testing.assert_allclose(state, expected_state, atol=ATOL)
            got = encoder.embed([state])[0]
            np.testing.assert_allclose(got, self.reference_embed(encoder, items), atol=ATOL)

    # every class inheriting the mixin is a different "executor"; the test is stateless apart
    # from a per-class encoder cache, so the health check does not apply.
    @settings(
        max_examples=15, deadline=None, suppress_health_check=[HealthCheck.differing_executors]
    )
    @given(st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=15))
    def test_step_equals_recompute_property(self, items: list[int]) -> None:
        encoder = self._cached_encoder()
        got = encoder.embed([encode_sequence(encoder, items)])[0]
        np.testing.assert_allclose(got, self.reference_embed(encoder, items), atol=ATOL)

    def _cached_encoder(self) -> SessionEncoder:
        # hypothesis reruns the test body; build the encoder once per class
        cls = type(self)
        if "_encoder_cache" not in cls.__dict__:
            cls._encoder_cache = self.make_encoder()
        return cls.__dict__["_encoder_cache"]

    def test_batched_step_equals_per_session_step(self) -> None:
        encoder = self.make_encoder()
        sequences = random_sequences(3, 9, self.max_test_len)
        batched = step_batched(encoder, sequences)
        single = [encode_sequence(encoder, s) for s in sequences]
        for b, s in zip(batched, single, strict=True):
            np.testing.assert_allclose(b, s, atol=ATOL)
            assert b.dtype == s.dtype
        np.testing.assert_allclose(
            encoder.embed(batched),
            np.stack([encoder.embed([s])[0] for s in single]),
            atol=ATOL,
        )

    def test_a_session_does_not_depend_on_its_batch(self) -> None:
        # Bit for bit, not close: a replayed event whose state change was lost is computed
        # again, in another batch, and its answer must be the same bytes.
        encoder = self.make_encoder()
        sequences = random_sequences(5, 19, self.max_test_len)
        alone = [encode_sequence(encoder, s) for s in sequences]
        alone_embed = [encoder.embed([s])[0] for s in alone]
        rng = np.random.default_rng(6)
        for size in (2, 3, 9, 17, 19):  # across the row blocks of encoders.base.matmul_rows
            order = rng.permutation(len(sequences))[:size]
            batched = step_batched(encoder, [sequences[i] for i in order])
            embedded = encoder.embed(batched)
            for row, i in enumerate(order):
                np.testing.assert_array_equal(batched[row], alone[i])
                np.testing.assert_array_equal(embedded[row], alone_embed[i])

    def test_step_does_not_mutate_inputs(self) -> None:
        encoder = self.make_encoder()
        state = encode_sequence(encoder, [1, 2, 3])
        before = state.copy()
        encoder.step([state], np.asarray([4], dtype=np.int64))
        np.testing.assert_array_equal(state, before)

    # -- state serialisation ---------------------------------------------------------------

    def test_state_bytes_round_trip_exact(self) -> None:
        encoder = self.make_encoder()
        for items in random_sequences(4, 6, self.max_test_len):
            state = encode_sequence(encoder, items)
            blob = encoder.state_to_bytes(state)
            assert isinstance(blob, bytes)
            back = encoder.state_from_bytes(blob)
            assert back.dtype == state.dtype
            np.testing.assert_array_equal(back, state)
            np.testing.assert_array_equal(encoder.embed([back]), encoder.embed([state]))

    def test_corrupted_bytes_raise(self) -> None:
        encoder = self.make_encoder()
        blob = encoder.state_to_bytes(encode_sequence(encoder, [1, 2]))
        bad_version = bytes([blob[0] + 1]) + blob[1:]
        bad_dtype = blob[:1] + (b"q" if blob[1:2] == b"f" else b"f") + blob[2:]
        for corrupted in (b"", blob[:3], blob[:-1], blob + b"\x00", bad_version, bad_dtype):
            with pytest.raises(EncoderStateError):
                encoder.state_from_bytes(corrupted)

    def test_bad_states_and_items_raise(self) -> None:
        encoder = self.make_encoder()
        state = encoder.initial_state()
        with pytest.raises(EncoderStateError):
            encoder.step([state[:-1]], np.asarray([0], dtype=np.int64))
        with pytest.raises(EncoderStateError):
            encoder.embed([np.concatenate([state, state])])
        for items in ([N_ITEMS], [-1], [0, 1]):
            with pytest.raises(EncoderInputError):
                encoder.step([state], np.asarray(items, dtype=np.int64))

    # -- persistence -----------------------------------------------------------------------

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        encoder = self.make_encoder()
        encoder.save(tmp_path / encoder.name)
        loaded = load_encoder(tmp_path / encoder.name, encoder.item_vectors())
        assert loaded.name == encoder.name
        assert loaded.dim == encoder.dim
        np.testing.assert_array_equal(loaded.item_vectors(), encoder.item_vectors())
        sequences = random_sequences(5, 6, self.max_test_len)
        states = step_batched(encoder, sequences)
        np.testing.assert_array_equal(step_batched(loaded, sequences)[3], states[3])
        np.testing.assert_array_equal(loaded.embed(states), encoder.embed(states))
        blob = encoder.state_to_bytes(states[1])
        np.testing.assert_array_equal(loaded.state_from_bytes(blob), states[1])
