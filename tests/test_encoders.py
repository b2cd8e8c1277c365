"""Contract tests of the three session encoders (see :mod:`tests.encoder_suite`) and a few
encoder-specific ones."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import EncoderError, SessionEncoder, build_encoder, encode_sequence, load_encoder
from encoders.base import write_encoder_config
from encoders.lstm import GruModelConfig, LstmEncoder, convert_torch_weights
from encoders.lstm_model import GruSessionModel, encoder_from_model, model_from_encoder
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


def _torch_model(encoder: SessionEncoder) -> GruSessionModel:
    """The torch model holding the numpy lstm encoder's weights (the reference)."""
    assert isinstance(encoder, LstmEncoder)
    return model_from_encoder(encoder)


class TestLstm(EncoderSuite):
    """The numpy ``LstmEncoder`` against full-sequence runs of the torch model."""

    hp: dict[str, object] = {"emb_dim": 8, "hidden_dim": 12, "num_layers": 2, "dropout": 0.1}

    def make_encoder(self) -> SessionEncoder:
        torch.manual_seed(0)
        return build_encoder("lstm", make_item_vectors(), self.hp)

    def reference_state(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray | None:
        if not items:
            return encoder.initial_state()
        with torch.inference_mode():
            h_n = _torch_model(encoder).hidden_states(torch.tensor([items]))  # full nn.GRU run
        return h_n[:, 0].reshape(-1).numpy()

    def reference_embed(self, encoder: SessionEncoder, items: list[int]) -> np.ndarray:
        if not items:
            return encoder.embed([encoder.initial_state()])[0]
        with torch.inference_mode():
            return _torch_model(encoder)(torch.tensor([items]))[0, -1].numpy()

    def test_untied_output_embeddings(self, tmp_path: Path) -> None:
        torch.manual_seed(0)
        encoder = build_encoder("lstm", make_item_vectors(), {"emb_dim": 8, "tied": False})
        assert isinstance(encoder, LstmEncoder) and "out_emb" in encoder.weights
        encoder.save(tmp_path)
        loaded = load_encoder(tmp_path)
        np.testing.assert_array_equal(loaded.item_vectors(), encoder.item_vectors())
        np.testing.assert_array_equal(encoder.item_vectors(), encoder.weights["out_emb"])

    def test_padding_does_not_change_outputs(self) -> None:
        model = _torch_model(self.make_encoder())
        pad = model.pad_index
        with torch.inference_mode():
            plain = model(torch.tensor([[4, 5, 6]]))
            padded = model(torch.tensor([[4, 5, 6, pad, pad]]))
        np.testing.assert_allclose(plain[0].numpy(), padded[0, :3].numpy(), atol=1e-6)


class TestLstmOneLayerUntied(TestLstm):
    hp: dict[str, object] = {"emb_dim": 8, "hidden_dim": 5, "num_layers": 1, "tied": False}


class TestLstmLoaded(TestLstm):
    """The suite again on an encoder read back from ``weights.npz``."""

    tmp_factory: pytest.TempPathFactory

    @pytest.fixture(autouse=True, scope="class")
    def _tmp_factory(
        self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        request.cls.tmp_factory = tmp_path_factory  # class scope: not a per-test fixture

    def make_encoder(self) -> SessionEncoder:
        encoder = super().make_encoder()
        directory = self.tmp_factory.mktemp("lstm")
        encoder.save(directory)
        assert (directory / "weights.npz").exists() and (directory / "weights.pt").exists()
        return load_encoder(directory)


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
    (tmp_path / "weights.npz").write_bytes(b"not an archive")
    with pytest.raises(EncoderError):
        load_encoder(tmp_path)
    (tmp_path / "weights.npz").unlink()  # old-format directory: weights.pt only
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError):
        load_encoder(tmp_path)
    (tmp_path / "weights.pt").unlink()
    with pytest.raises(EncoderError, match="no encoder weights"):
        load_encoder(tmp_path)


def test_lstm_weights_must_fit_the_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    build_encoder("lstm", make_item_vectors(), {"emb_dim": 8, "hidden_dim": 12}).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hyperparameters"]["hidden_dim"] = 10
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="shape"):
        load_encoder(tmp_path)
    config["hyperparameters"].update(hidden_dim=12, tied=False)  # no out_emb saved
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="missing"):
        load_encoder(tmp_path)


# -- the numpy lstm encoder against the torch GRU ---------------------------------------------

#: (num_layers, tied, emb_dim, hidden_dim) of the parity models.
PARITY_MODELS = [(1, True, 8, 12), (2, False, 8, 12), (3, True, 16, 8), (2, True, 32, 48)]


def _seeded_gru(num_layers: int, tied: bool, emb_dim: int, hidden_dim: int) -> GruSessionModel:
    torch.manual_seed(100 + num_layers)
    config = GruModelConfig(
        N_ITEMS, emb_dim=emb_dim, hidden_dim=hidden_dim, num_layers=num_layers, tied=tied
    )
    return GruSessionModel(config, make_item_vectors(seed=num_layers)).eval()


def _torch_hidden(states: np.ndarray, num_layers: int) -> torch.Tensor:
    """``(B, L * H)`` states (layer 0 first) -> ``(L, B, H)``."""
    return torch.from_numpy(states.copy()).view(len(states), num_layers, -1).transpose(0, 1)


@pytest.mark.parametrize(("num_layers", "tied", "emb_dim", "hidden_dim"), PARITY_MODELS)
def test_numpy_gru_matches_torch_step_and_project(
    num_layers: int, tied: bool, emb_dim: int, hidden_dim: int
) -> None:
    """A batch of 64 sessions stepped 25 times by each side: states and queries agree."""
    model = _seeded_gru(num_layers, tied, emb_dim, hidden_dim)
    encoder = encoder_from_model(model)
    with torch.inference_mode():
        np.testing.assert_array_equal(encoder.item_vectors(), model.item_weights().numpy())
    rng = np.random.default_rng(num_layers)
    batch = 64
    ours = rng.normal(0.0, 0.5, (batch, num_layers * hidden_dim)).astype(np.float32)
    ours[0] = 0.0  # one empty session
    theirs = _torch_hidden(ours, num_layers).contiguous()
    for _ in range(25):
        items = rng.integers(0, N_ITEMS, size=batch)
        stepped = encoder.step(list(ours), items)
        ours = np.stack(stepped)
        assert ours.dtype == np.float32
        with torch.inference_mode():
            theirs = model.step(torch.from_numpy(items), theirs)
            queries = model.project(theirs[-1]).numpy()
        expected = theirs.transpose(0, 1).reshape(batch, -1).numpy()
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
        out = encoder.embed(stepped)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, queries, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("num_layers", "tied", "emb_dim", "hidden_dim"), PARITY_MODELS)
def test_numpy_lstm_matches_full_sequence_runs(
    num_layers: int, tied: bool, emb_dim: int, hidden_dim: int
) -> None:
    """Ragged sessions stepped together equal the torch model's padded full-sequence run."""
    model = _seeded_gru(num_layers, tied, emb_dim, hidden_dim)
    encoder = encoder_from_model(model)
    rng = np.random.default_rng(7)
    sessions = [rng.integers(0, N_ITEMS, size=int(n)).tolist() for n in rng.integers(1, 20, 32)]
    width = max(map(len, sessions))
    inputs = np.full((len(sessions), width), model.pad_index, dtype=np.int64)
    for i, s in enumerate(sessions):
        inputs[i, : len(s)] = s
    states = [encoder.initial_state() for _ in sessions]
    for t in range(width):
        active = [i for i, s in enumerate(sessions) if len(s) > t]
        items = np.asarray([sessions[i][t] for i in active], dtype=np.int64)
        for i, new in zip(active, encoder.step([states[i] for i in active], items), strict=True):
            states[i] = new
    with torch.inference_mode():
        full = model(torch.from_numpy(inputs)).numpy()
    last = full[np.arange(len(sessions)), [len(s) - 1 for s in sessions]]
    np.testing.assert_allclose(encoder.embed(states), last, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_lstm_npz_round_trip_is_exact(tied: bool, tmp_path: Path) -> None:
    model = _seeded_gru(2, tied, 8, 12)
    encoder = encoder_from_model(model)
    encoder.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "weights.npz", "weights.pt"}
    loaded = load_encoder(tmp_path)
    assert isinstance(loaded, LstmEncoder) and loaded.model_config == encoder.model_config
    for key, value in encoder.weights.items():
        np.testing.assert_array_equal(loaded.weights[key], value)
    sessions = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10]]
    ours = [encode_sequence(encoder, s) for s in sessions]
    back = [encode_sequence(loaded, s) for s in sessions]
    np.testing.assert_array_equal(np.stack(back), np.stack(ours))
    np.testing.assert_array_equal(loaded.embed(back), encoder.embed(ours))
    np.testing.assert_array_equal(loaded.item_vectors(), encoder.item_vectors())
    # weights.pt is the torch state_dict, for fine-tuning
    again = GruSessionModel(encoder.model_config)
    again.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    for key, value in again.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[key].numpy())


def test_lstm_old_format_directory_loads_and_converts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory written by the previous release (config.json + weights.pt, torch states)."""
    model = _seeded_gru(2, True, 8, 12)
    config = encoder_from_model(model).config()
    write_encoder_config(tmp_path, config)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    # a state as the previous release stored it: header + (num_layers, hidden) float32, layer 0
    with torch.inference_mode():
        hidden = model.hidden_states(torch.tensor([[3, 1, 4, 1, 5]]))[:, 0].reshape(-1)
    blob = struct.pack("<BcI", 1, b"f", 24) + hidden.numpy().astype("<f4").tobytes()

    with caplog.at_level(logging.INFO, logger="encoders.lstm"):
        loaded = load_encoder(tmp_path)
    assert "predates the numpy weights" in caplog.text and "convert_torch_weights" in caplog.text
    assert isinstance(loaded, LstmEncoder) and not (tmp_path / "weights.npz").exists()
    state = loaded.state_from_bytes(blob)
    np.testing.assert_array_equal(state, hidden.numpy())
    assert loaded.state_to_bytes(state) == blob
    with torch.inference_mode():
        expected = model.project(hidden[None, -12:]).numpy()
        h = model.step(torch.tensor([9]), hidden.view(2, 1, 12))
    np.testing.assert_allclose(loaded.embed([state]), expected, rtol=0, atol=1e-5)
    stepped = loaded.step([state], np.asarray([9]))[0]
    np.testing.assert_allclose(stepped, h[:, 0].reshape(-1).numpy(), rtol=0, atol=1e-5)

    path = convert_torch_weights(tmp_path)
    assert path == tmp_path / "weights.npz" and path.exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="encoders.lstm"):
        converted = load_encoder(tmp_path)
    assert "predates" not in caplog.text
    assert isinstance(converted, LstmEncoder)
    for key, value in loaded.weights.items():
        np.testing.assert_array_equal(converted.weights[key], value)


def test_serving_an_lstm_from_npz_does_not_import_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hp = {"emb_dim": 8, "hidden_dim": 12, "num_layers": 2}
    encoder = build_encoder("lstm", make_item_vectors(), hp)
    encoder.save(tmp_path / "lstm")
    states = encoder.step([encoder.initial_state()] * 3, np.asarray([1, 2, 3]))
    expected = encoder.embed(encoder.step(states, np.asarray([4, 5, 6])))
    np.save(tmp_path / "expected.npy", expected)
    code = f"""
import sys
from pathlib import Path

import numpy as np

import encoders
from encoders import load_encoder

root = Path({str(tmp_path)!r})
encoder = load_encoder(root / "lstm", np.zeros(({N_ITEMS}, 6), dtype=np.float32))
states = encoder.step([encoder.initial_state()] * 3, np.asarray([1, 2, 3]))
states = encoder.step(states, np.asarray([4, 5, 6]))
out = encoder.embed([encoder.state_from_bytes(encoder.state_to_bytes(s)) for s in states])
np.testing.assert_array_equal(out, np.load(root / "expected.npy"))
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
assert not loaded, loaded
print("ok")
"""
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
