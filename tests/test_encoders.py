"""Contract tests of the three session encoders (see :mod:`tests.encoder_suite`) and a few
encoder-specific ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import EncoderError, SessionEncoder, build_encoder, encode_sequence, load_encoder
from encoders.lstm import LstmEncoder
from encoders.mean import MeanEncoder
from encoders.transformer import TransformerEncoder, windows_to_inputs
from tests.encoder_suite import N_ITEMS, EncoderSuite, make_item_vectors


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _normalised(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else np.zeros_like(x)


class TestMean(EncoderSuite):
    decay = 1.0

    def make_encoder(self) -> SessionEncoder:
        return MeanEncoder(make_item_vectors(), decay=self.decay)

    def reference_embed(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray:
        vectors = encoder.item_vectors()
        if not items:
            return np.zeros(encoder.dim, dtype=np.float32)
        weights = self.decay ** np.arange(len(items) - 1, -1, -1, dtype=np.float64)
        return _normalised((weights[:, None] * vectors[items]).sum(0) / weights.sum())

    def test_state_is_decayed_sum_and_weight(self) -> None:
        encoder = self.make_encoder()
        items = [3, 7, 7, 1]
        state = encode_sequence(encoder, items)
        vectors = encoder.item_vectors()
        weights = self.decay ** np.arange(len(items) - 1, -1, -1, dtype=np.float64)
        np.testing.assert_allclose(state[-1], weights.sum(), rtol=1e-6)
        np.testing.assert_allclose(state[:-1], weights @ vectors[items], atol=1e-5)
        if self.decay == 1.0:
            mean = np.mean(vectors[items], axis=0)
            np.testing.assert_allclose(state[:-1] / state[-1], mean, atol=1e-6)

    def test_empty_session_embeds_to_zero(self) -> None:
        encoder = self.make_encoder()
        assert not encoder.embed([encoder.initial_state()]).any()

    def test_rejects_bad_decay_and_missing_vectors(self, tmp_path: Path) -> None:
        with pytest.raises(EncoderError):
            MeanEncoder(make_item_vectors(), decay=0.0)
        self.make_encoder().save(tmp_path)
        with pytest.raises(EncoderError):
            load_encoder(tmp_path)
        with pytest.raises(EncoderError):
            load_encoder(tmp_path, make_item_vectors(dim=5))

    def test_extend_and_replace_items_copy_on_write(self) -> None:
        vectors = make_item_vectors()
        encoder = MeanEncoder(vectors)
        state = encode_sequence(encoder, [1, 2])
        encoder.extend_items(np.ones((2, vectors.shape[1]), dtype=np.float32))
        assert encoder.n_items == N_ITEMS + 2
        stepped = encoder.step([state], np.asarray([N_ITEMS + 1], dtype=np.int64))[0]
        np.testing.assert_allclose(stepped[:-1], state[:-1] + 1.0, atol=1e-6)
        encoder.replace_items(np.asarray([0]), np.zeros((1, vectors.shape[1]), dtype=np.float32))
        assert not encoder.item_vectors()[0].any()
        assert vectors[0].any()  # the caller's array is untouched
        with pytest.raises(EncoderError):
            encoder.extend_items(np.ones((1, vectors.shape[1] + 1), dtype=np.float32))


class TestMeanDecay(TestMean):
    decay = 0.7


class TestLstm(EncoderSuite):
    def make_encoder(self) -> SessionEncoder:
        torch.manual_seed(0)
        hp = {"emb_dim": 8, "hidden_dim": 12, "num_layers": 2, "dropout": 0.1}
        return build_encoder("lstm", make_item_vectors(), hp)

    def reference_state(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray | None:
        assert isinstance(encoder, LstmEncoder)
        if not items:
            return encoder.initial_state()
        with torch.inference_mode():
            h_n = encoder.model.hidden_states(torch.tensor([items]))  # full nn.GRU run
        return h_n[:, 0].reshape(-1).numpy()

    def reference_embed(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray:
        assert isinstance(encoder, LstmEncoder)
        if not items:
            return encoder.embed([encoder.initial_state()])[0]
        with torch.inference_mode():
            return encoder.model(torch.tensor([items]))[0, -1].numpy()

    def test_untied_output_embeddings(self, tmp_path: Path) -> None:
        torch.manual_seed(0)
        encoder = build_encoder("lstm", make_item_vectors(), {"emb_dim": 8, "tied": False})
        assert isinstance(encoder, LstmEncoder) and encoder.model.out_emb is not None
        encoder.save(tmp_path)
        loaded = load_encoder(tmp_path)
        np.testing.assert_array_equal(loaded.item_vectors(), encoder.item_vectors())

    def test_padding_does_not_change_outputs(self) -> None:
        encoder = self.make_encoder()
        assert isinstance(encoder, LstmEncoder)
        pad = encoder.model.pad_index
        with torch.inference_mode():
            plain = encoder.model(torch.tensor([[4, 5, 6]]))
            padded = encoder.model(torch.tensor([[4, 5, 6, pad, pad]]))
        np.testing.assert_allclose(plain[0].numpy(), padded[0, :3].numpy(), atol=1e-6)


class TestTransformer(EncoderSuite):
    window = 6

    def make_encoder(self) -> SessionEncoder:
        torch.manual_seed(0)
        hp = {"emb_dim": 8, "num_heads": 2, "ffn_dim": 16, "max_len": self.window, "dropout": 0.1}
        return build_encoder("transformer", make_item_vectors(), hp)

    def reference_state(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray | None:
        window = np.full(self.window, -1, dtype=np.int64)
        tail = items[-self.window :]
        if tail:
            window[-len(tail) :] = tail
        return window

    def reference_embed(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray:
        assert isinstance(encoder, TransformerEncoder)
        if not items:
            return np.zeros(encoder.dim, dtype=np.float32)
        with torch.inference_mode():
            return encoder.model(torch.tensor([items[-self.window :]]))[0, -1].numpy()

    def test_empty_session_embeds_to_zero(self) -> None:
        encoder = self.make_encoder()
        assert not encoder.embed([encoder.initial_state()]).any()

    def test_windows_to_inputs_layout(self) -> None:
        windows = np.array([[-1, -1, 3, 4], [1, 2, 3, 4], [-1, -1, -1, -1]], dtype=np.int64)
        inputs, counts = windows_to_inputs(windows, pad_index=99)
        np.testing.assert_array_equal(counts, [2, 4, 0])
        np.testing.assert_array_equal(inputs, [[3, 4, 99, 99], [1, 2, 3, 4], [99, 99, 99, 99]])

    def test_padding_does_not_change_outputs(self) -> None:
        encoder = self.make_encoder()
        assert isinstance(encoder, TransformerEncoder)
        pad = encoder.model.pad_index
        with torch.inference_mode():
            plain = encoder.model(torch.tensor([[4, 5, 6]]))
            padded = encoder.model(torch.tensor([[4, 5, 6, pad, pad]]))
        np.testing.assert_allclose(plain[0].numpy(), padded[0, :3].numpy(), atol=1e-5)

    def test_untied_output_embeddings(self, tmp_path: Path) -> None:
        torch.manual_seed(0)
        hp = {"emb_dim": 8, "max_len": self.window, "tied": False}
        encoder = build_encoder("transformer", make_item_vectors(), hp)
        assert isinstance(encoder, TransformerEncoder) and encoder.model.out_emb is not None
        encoder.save(tmp_path)
        loaded = load_encoder(tmp_path)
        np.testing.assert_array_equal(loaded.item_vectors(), encoder.item_vectors())

    def test_window_with_invalid_index_raises(self) -> None:
        encoder = self.make_encoder()
        state = encoder.initial_state()
        state[-1] = N_ITEMS
        with pytest.raises(EncoderError):
            encoder.embed([state])


def test_build_encoder_rejects_unknown_names_and_hyperparameters() -> None:
    with pytest.raises(EncoderError):
        build_encoder("gru", make_item_vectors())  # type: ignore[arg-type]
    with pytest.raises(EncoderError):
        build_encoder("lstm", make_item_vectors(), {"no_such_option": 1})


def test_load_encoder_checks_config(tmp_path: Path) -> None:
    with pytest.raises(EncoderError):
        load_encoder(tmp_path)  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 99, "name": "mean"}))
    with pytest.raises(EncoderError):
        load_encoder(tmp_path, make_item_vectors())
    torch.manual_seed(0)
    build_encoder("lstm", make_item_vectors(), {"emb_dim": 8}).save(tmp_path)
    with pytest.raises(EncoderError):
        load_encoder(tmp_path, make_item_vectors(n_items=N_ITEMS + 1))
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError):
        load_encoder(tmp_path)
