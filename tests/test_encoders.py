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

from encoders import (
    EncoderError,
    SessionEncoder,
    build_encoder,
    encode_sequence,
    load_encoder,
    transformer_model,
)
from encoders.base import write_encoder_config
from encoders.lstm import GruModelConfig, LstmEncoder, convert_torch_weights
from encoders.lstm_model import GruSessionModel, encoder_from_model, model_from_encoder
from encoders.mean import MeanEncoder
from encoders.transformer import (
    TransformerEncoder,
    TransformerModelConfig,
    windows_to_inputs,
)
from encoders.transformer import convert_torch_weights as convert_transformer_weights
from encoders.transformer_model import SasRecModel
from encoders.transformer_ops import gelu
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


class Reloaded:
    """Mixin for an encoder test class: each encoder is saved and read back before use."""

    tmp_factory: pytest.TempPathFactory

    @pytest.fixture(autouse=True, scope="class")
    def _tmp_factory(
        self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        request.cls.tmp_factory = tmp_path_factory  # class scope: not a per-test fixture

    def make_encoder(self) -> SessionEncoder:
        encoder = super().make_encoder()  # type: ignore[misc]
        directory = self.tmp_factory.mktemp("encoder")
        encoder.save(directory)
        assert (directory / "weights.npz").exists() and (directory / "weights.pt").exists()
        return load_encoder(directory)


class TestLstmOneLayerUntied(TestLstm):
    hp: dict[str, object] = {"emb_dim": 8, "hidden_dim": 5, "num_layers": 1, "tied": False}


class TestLstmLoaded(Reloaded, TestLstm):
    """The suite again on an encoder read back from ``weights.npz``."""


def _sasrec(encoder: SessionEncoder) -> SasRecModel:
    """The torch model holding the numpy transformer encoder's weights (the reference)."""
    assert isinstance(encoder, TransformerEncoder)
    return transformer_model.model_from_encoder(encoder)


class TestTransformer(EncoderSuite):
    """The numpy ``TransformerEncoder`` against full-sequence runs of the torch model."""

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
        if not items:
            return np.zeros(encoder.dim, dtype=np.float32)
        with torch.inference_mode():
            return _sasrec(encoder)(torch.tensor([items[-self.window :]]))[0, -1].numpy()

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
        model = _sasrec(encoder)
        pad = model.pad_index
        with torch.inference_mode():
            plain = model(torch.tensor([[4, 5, 6]]))
            padded = model(torch.tensor([[4, 5, 6, pad, pad]]))
        np.testing.assert_allclose(plain[0].numpy(), padded[0, :3].numpy(), atol=1e-5)
        assert isinstance(encoder, TransformerEncoder)
        ours = encoder.last_outputs(
            np.array([[4, 5, 6, pad, pad], [4, 5, 6, 7, 8]]), np.array([2, 2])
        )
        np.testing.assert_allclose(ours[0], plain[0, -1].numpy(), atol=1e-5)
        np.testing.assert_allclose(ours[1], plain[0, -1].numpy(), atol=1e-5)  # causal

    def test_untied_output_embeddings(self, tmp_path: Path) -> None:
        torch.manual_seed(0)
        hp = {"emb_dim": 8, "max_len": self.window, "tied": False}
        encoder = build_encoder("transformer", make_item_vectors(), hp)
        assert isinstance(encoder, TransformerEncoder) and "out_emb" in encoder.weights
        np.testing.assert_array_equal(encoder.item_vectors(), encoder.weights["out_emb"])
        encoder.save(tmp_path)
        loaded = load_encoder(tmp_path)
        np.testing.assert_array_equal(loaded.item_vectors(), encoder.item_vectors())

    def test_window_with_invalid_index_raises(self) -> None:
        encoder = self.make_encoder()
        state = encoder.initial_state()
        state[-1] = N_ITEMS
        with pytest.raises(EncoderError):
            encoder.embed([state])


class TestTransformerLoaded(Reloaded, TestTransformer):
    """The suite again on an encoder read back from ``weights.npz``."""


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

    with caplog.at_level(logging.INFO, logger="encoders.numpy_io"):
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
    with caplog.at_level(logging.INFO, logger="encoders.numpy_io"):
        converted = load_encoder(tmp_path)
    assert "predates" not in caplog.text
    assert isinstance(converted, LstmEncoder)
    for key, value in loaded.weights.items():
        np.testing.assert_array_equal(converted.weights[key], value)


#: Small hyperparameters of the learned encoders for the torch-free serving test.
SERVED_HP: dict[str, dict[str, object]] = {
    "lstm": {"emb_dim": 8, "hidden_dim": 12, "num_layers": 2},
    "transformer": {"emb_dim": 8, "num_heads": 2, "ffn_dim": 16, "max_len": 6},
}


@pytest.mark.parametrize("name", sorted(SERVED_HP))
def test_serving_a_learned_encoder_from_npz_does_not_import_torch(
    name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name, make_item_vectors(), SERVED_HP[name])  # type: ignore[arg-type]
    encoder.save(tmp_path / name)
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
encoder = load_encoder(root / {name!r}, np.zeros(({N_ITEMS}, 6), dtype=np.float32))
assert encoder.name == {name!r}
states = encoder.step([encoder.initial_state()] * 3, np.asarray([1, 2, 3]))
states = encoder.step(states, np.asarray([4, 5, 6]))
out = encoder.embed([encoder.state_from_bytes(encoder.state_to_bytes(s)) for s in states])
np.testing.assert_array_equal(out, np.load(root / "expected.npy"))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "scipy"))
assert not loaded, loaded
print("ok")
"""
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- the numpy transformer encoder against the torch SASRec model ------------------------------

#: (num_blocks, num_heads, tied, emb_dim, ffn_dim) of the parity models.
TRANSFORMER_PARITY_MODELS = [
    (2, 2, True, 16, 24),
    (2, 2, False, 16, 24),
    (1, 1, True, 8, 16),
    (3, 4, False, 32, 64),
]
PARITY_WINDOW = 12


def _seeded_sasrec(
    num_blocks: int, num_heads: int, tied: bool, emb_dim: int, ffn_dim: int
) -> SasRecModel:
    torch.manual_seed(200 + 10 * num_blocks + num_heads)
    config = TransformerModelConfig(
        N_ITEMS,
        emb_dim=emb_dim,
        num_blocks=num_blocks,
        num_heads=num_heads,
        ffn_dim=ffn_dim,
        max_len=PARITY_WINDOW,
        tied=tied,
    )
    model = SasRecModel(config, make_item_vectors(seed=num_blocks))
    with torch.no_grad():  # trained-looking layers: LayerNorm gains and biases away from 1 / 0
        for name, param in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
        model.item_emb.weight[N_ITEMS] = 0.0
    return model.eval()


def _random_windows(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Right-aligned windows of every length, the first one empty and the second full."""
    windows = np.full((batch, PARITY_WINDOW), -1, dtype=np.int64)
    lengths = rng.integers(0, PARITY_WINDOW + 1, size=batch)
    lengths[:3] = (0, PARITY_WINDOW, 1)
    for row, n in enumerate(lengths):
        if n:
            windows[row, -n:] = rng.integers(0, N_ITEMS, size=n)
    return windows


@pytest.mark.parametrize(
    ("num_blocks", "num_heads", "tied", "emb_dim", "ffn_dim"), TRANSFORMER_PARITY_MODELS
)
def test_numpy_transformer_matches_torch_last_outputs(
    num_blocks: int, num_heads: int, tied: bool, emb_dim: int, ffn_dim: int
) -> None:
    """A batch of windows of every length (empty and full ones too): numpy ``embed`` equals
    ``SasRecModel.last_outputs`` (and the full forward pass at the last position)."""
    model = _seeded_sasrec(num_blocks, num_heads, tied, emb_dim, ffn_dim)
    encoder = transformer_model.encoder_from_model(model)
    with torch.inference_mode():
        np.testing.assert_array_equal(encoder.item_vectors(), model.item_weights().numpy())
    windows = _random_windows(np.random.default_rng(num_blocks + num_heads), 64)
    ours = encoder.embed(list(windows))
    assert ours.dtype == np.float32 and ours.shape == (64, emb_dim)
    inputs, counts = windows_to_inputs(windows, model.pad_index)
    rows = np.flatnonzero(counts > 0)
    last = counts[rows] - 1
    with torch.inference_mode():
        expected = model.last_outputs(torch.from_numpy(inputs[rows]), torch.from_numpy(last))
        full = model(torch.from_numpy(inputs[rows]))[torch.arange(len(rows)), last]
    assert not ours[counts == 0].any()
    np.testing.assert_allclose(ours[rows], expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[rows], full.numpy(), rtol=1e-5, atol=1e-5)
    # one window at a time: the same queries (the batch's longest row sets no padding here)
    single = np.stack([encoder.embed([w])[0] for w in windows[:8]])
    np.testing.assert_allclose(single, ours[:8], rtol=1e-5, atol=1e-5)


def test_numpy_gelu_matches_torch() -> None:
    """The erf approximation holds over the whole float32 range that matters (and beyond)."""
    x = np.concatenate([np.linspace(-12.0, 12.0, 100_001), [-1e4, -60.0, 0.0, 60.0, 1e4]])
    x = x.astype(np.float32)
    ours = gelu(x)
    assert ours.dtype == np.float32
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=2e-6)
    assert not ours[x == 0.0].any() and (ours[x <= -6.0] <= 0).all()


@pytest.mark.parametrize("tied", [True, False])
def test_transformer_npz_round_trip_is_exact(tied: bool, tmp_path: Path) -> None:
    model = _seeded_sasrec(2, 2, tied, 16, 24)
    encoder = transformer_model.encoder_from_model(model)
    encoder.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "weights.npz", "weights.pt"}
    loaded = load_encoder(tmp_path)
    assert isinstance(loaded, TransformerEncoder) and loaded.model_config == encoder.model_config
    assert loaded.weights.keys() == encoder.weights.keys()
    for key, value in encoder.weights.items():
        np.testing.assert_array_equal(loaded.weights[key], value)
    windows = list(_random_windows(np.random.default_rng(0), 16))
    np.testing.assert_array_equal(loaded.embed(windows), encoder.embed(windows))
    np.testing.assert_array_equal(loaded.item_vectors(), encoder.item_vectors())
    # weights.pt is the torch state_dict, for fine-tuning
    again = SasRecModel(encoder.model_config)
    again.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    for key, value in again.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[key].numpy())
    back = transformer_model.model_from_encoder(loaded)
    assert not back.training
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[key].numpy())


def test_transformer_old_format_directory_loads_and_converts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory written by the previous release (config.json + weights.pt, torch-served)."""
    model = _seeded_sasrec(2, 2, True, 16, 24)
    config = transformer_model.encoder_from_model(model).config()
    assert set(config) == {"name", "dim", "n_items", "hyperparameters"}
    assert config["hyperparameters"] == {
        "emb_dim": 16,
        "num_blocks": 2,
        "num_heads": 2,
        "ffn_dim": 24,
        "max_len": PARITY_WINDOW,
        "dropout": 0.2,
        "tied": True,
    }
    write_encoder_config(tmp_path, config)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    # a state as the previous release stored it: header + the right-aligned int64 window
    window = np.array([-1] * 7 + [3, 1, 4, 1, 5], dtype=np.int64)
    blob = struct.pack("<BcI", 1, b"q", PARITY_WINDOW) + window.astype("<i8").tobytes()

    with caplog.at_level(logging.INFO, logger="encoders.numpy_io"):
        loaded = load_encoder(tmp_path)
    assert "predates the numpy weights" in caplog.text and "convert_torch_weights" in caplog.text
    assert isinstance(loaded, TransformerEncoder) and not (tmp_path / "weights.npz").exists()
    state = loaded.state_from_bytes(blob)
    np.testing.assert_array_equal(state, window)
    assert loaded.state_to_bytes(state) == blob
    stepped = loaded.step([state], np.asarray([9]))[0]
    with torch.inference_mode():
        expected = model(torch.tensor([[3, 1, 4, 1, 5], [3, 1, 4, 1, 5]]))[0, -1].numpy()
        after = model(torch.tensor([[3, 1, 4, 1, 5, 9]]))[0, -1].numpy()
    np.testing.assert_allclose(loaded.embed([state])[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded.embed([stepped])[0], after, rtol=1e-5, atol=1e-5)

    path = convert_transformer_weights(tmp_path)
    assert path == tmp_path / "weights.npz" and path.exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="encoders.numpy_io"):
        converted = load_encoder(tmp_path)
    assert "predates" not in caplog.text
    assert isinstance(converted, TransformerEncoder)
    for key, value in loaded.weights.items():
        np.testing.assert_array_equal(converted.weights[key], value)


def test_transformer_weights_must_fit_the_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hp = {"emb_dim": 8, "ffn_dim": 16, "max_len": 6}
    build_encoder("transformer", make_item_vectors(), hp).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hyperparameters"]["ffn_dim"] = 12
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="shape"):
        load_encoder(tmp_path)
    config["hyperparameters"].update(ffn_dim=16, num_blocks=3)  # no blocks.2 saved
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="missing"):
        load_encoder(tmp_path)
    config["hyperparameters"].update(num_blocks=2, no_such_option=1)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="bad transformer config"):
        load_encoder(tmp_path)
    (tmp_path / "weights.npz").write_bytes(b"not an archive")
    config["hyperparameters"].pop("no_such_option")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderError):
        load_encoder(tmp_path)
