"""GRU4Rec-style recurrent session encoder (registered under the product name ``"lstm"``),
served with numpy only.

The model is trained with PyTorch (:class:`encoders.lstm_model.GruSessionModel`): an item
embedding table (initialised from the collaborative vectors, see
:func:`encoders.base.fit_item_vectors`), input dropout, an ``nn.GRU``, dropout and a linear
output projection from the hidden state into the item-embedding space. Scores are
``out @ E.T`` where ``E`` is the *tied* item embedding table by default (``tied=False`` adds a
separate output table); ``E`` is what :meth:`LstmEncoder.item_vectors` returns, so retrieval
over it must use the inner product (the query is not normalised; scaling a query does not
change its ranking).

:class:`LstmEncoder` runs the trained weights with numpy (no torch import, so the worker does
not pay torch's memory): PyTorch's GRU cell equations, gate order ``r, z, n`` as in
``weight_ih_l{k}`` / ``weight_hh_l{k}``::

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

one fused ``[x, h] @ W`` matmul per layer for the whole batch, float32 throughout. Dropout is
the identity at inference.

State layout (float32, ``num_layers * hidden_dim`` values): the GRU hidden state, layer 0
first; the initial state is all zeros. One event costs one GRU cell step per layer whatever
the session length, and stepping reproduces the hidden states of training-time
full-sequence runs. The empty session embeds to ``out_proj(0)`` (the projection bias, a
constant query); the worker uses popularity for empty sessions anyway.

Saved directory: ``config.json``, ``weights.npz`` (the model's ``state_dict`` as float32
arrays under the same keys, read here with numpy) and ``weights.pt`` (the torch
``state_dict``, for training and fine-tuning). A directory written before ``weights.npz``
existed is converted from ``weights.pt`` on load (this imports torch);
:func:`convert_torch_weights` writes the missing ``weights.npz`` once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import (
    NUMPY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    EncoderName,
    check_items,
    pack_state,
    read_encoder_config,
    stack_states,
    unpack_state,
    write_encoder_config,
)
from encoders.errors import EncoderError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GruModelConfig:
    """Shape and regularisation of the GRU model (and of :class:`LstmEncoder`)."""

    n_items: int
    emb_dim: int = 64
    hidden_dim: int = 128
    num_layers: int = 1
    dropout: float = 0.2
    tied: bool = True

    def __post_init__(self) -> None:
        if min(self.n_items, self.emb_dim, self.hidden_dim, self.num_layers) < 1:
            raise EncoderError(f"invalid GRU model config {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise EncoderError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_saved(cls, config: Mapping[str, Any]) -> GruModelConfig:
        """From a ``config.json`` dict (``n_items`` + ``hyperparameters``)."""
        hp = dict(config.get("hyperparameters", {}))
        try:
            return cls(n_items=int(config["n_items"]), **hp)
        except (KeyError, TypeError, ValueError) as exc:
            raise EncoderError(f"bad lstm config: {exc}") from exc


def weight_shapes(config: GruModelConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every array of the model's ``state_dict``."""
    n, d, h = config.n_items, config.emb_dim, config.hidden_dim
    shapes: dict[str, tuple[int, ...]] = {"item_emb.weight": (n + 1, d)}
    for k in range(config.num_layers):
        shapes[f"gru.weight_ih_l{k}"] = (3 * h, d if k == 0 else h)
        shapes[f"gru.weight_hh_l{k}"] = (3 * h, h)
        shapes[f"gru.bias_ih_l{k}"] = (3 * h,)
        shapes[f"gru.bias_hh_l{k}"] = (3 * h,)
    shapes["out_proj.weight"] = (d, h)
    shapes["out_proj.bias"] = (d,)
    if not config.tied:
        shapes["out_emb"] = (n, d)
    return shapes


def check_weights(config: GruModelConfig, weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The weights as C-contiguous float32 arrays; ``EncoderError`` if they do not fit."""
    shapes = weight_shapes(config)
    missing, unexpected = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
    if missing or unexpected:
        raise EncoderError(
            f"lstm weights do not fit the config: missing {missing}, unexpected {unexpected}"
        )
    out: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        arr = np.ascontiguousarray(weights[key], dtype=np.float32)
        if arr.shape != shape:
            raise EncoderError(f"lstm weight {key} has shape {arr.shape}, expected {shape}")
        if not np.isfinite(arr).all():
            raise EncoderError(f"lstm weight {key} holds NaN or infinite values")
        out[key] = arr
    return out


def fuse_gru_layer(
    w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(in + H, 4H)`` matrix and ``(4H,)`` bias for a GRU layer.

    ``[x, h] @ W + b`` gives four ``H``-wide blocks: the ``r`` and ``z`` pre-activations,
    ``W_in x + b_in`` and ``W_hn h + b_hn`` (kept apart because ``r`` multiplies the latter).
    """
    h = w_hh.shape[1]
    inp = w_ih.shape[1]
    w = np.zeros((inp + h, 4 * h), dtype=np.float32)
    w[:inp, : 2 * h] = w_ih[: 2 * h].T
    w[inp:, : 2 * h] = w_hh[: 2 * h].T
    w[:inp, 2 * h : 3 * h] = w_ih[2 * h :].T
    w[inp:, 3 * h :] = w_hh[2 * h :].T
    b = np.concatenate([b_ih[: 2 * h] + b_hh[: 2 * h], b_ih[2 * h :], b_hh[2 * h :]])
    return w, b.astype(np.float32)


def _sigmoid_(x: np.ndarray) -> None:
    """In-place logistic function, ``(1 + tanh(x / 2)) / 2`` (no overflow for large ``|x|``)."""
    x *= 0.5
    np.tanh(x, out=x)
    x += 1.0
    x *= 0.5


def gru_step(
    x: np.ndarray, hidden: np.ndarray, layers: Sequence[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """One GRU time step for a batch: inputs ``(B, in)``, hidden ``(B, L * H)`` -> ``(B, L * H)``.

    ``layers`` holds each layer's fused matrix and bias (:func:`fuse_gru_layer`); layer
    ``k``'s new hidden state is layer ``k + 1``'s input. ``hidden`` is not modified.
    """
    out = np.empty(hidden.shape, dtype=np.float32)
    for k, (w, bias) in enumerate(layers):
        size = w.shape[1] // 4
        h = hidden[:, k * size : (k + 1) * size]
        gates = np.concatenate([x, h], axis=1) @ w
        gates += bias
        rz = gates[:, : 2 * size]
        _sigmoid_(rz)
        n, hn = gates[:, 2 * size : 3 * size], gates[:, 3 * size :]
        hn *= rz[:, :size]
        n += hn
        np.tanh(n, out=n)
        new = out[:, k * size : (k + 1) * size]
        np.subtract(h, n, out=new)  # h' = n + z * (h - n) = (1 - z) * n + z * h
        new *= rz[:, size:]
        new += n
        x = new
    return out


def read_numpy_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``weights.npz`` (no pickles); ``EncoderError`` when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as exc:
        raise EncoderError(f"no encoder weights at {path}") from exc
    except Exception as exc:  # zip / format errors of a corrupted or foreign file
        raise EncoderError(f"cannot read encoder weights {path}: {exc}") from exc


def write_numpy_weights(path: Path, weights: Mapping[str, np.ndarray]) -> None:
    """Write ``weights`` to ``path`` (``.npz``, uncompressed) via a temporary file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **weights)
    os.replace(tmp, path)


def _load_torch_weights(directory: Path, config: GruModelConfig) -> dict[str, np.ndarray]:
    """``weights.pt`` as numpy arrays (imports torch)."""
    try:
        from encoders.lstm_model import load_torch_weights
    except ImportError as exc:
        raise EncoderError(
            f"{directory} has no {NUMPY_WEIGHTS_FILE} and torch is not installed to read "
            f"{WEIGHTS_FILE}; re-train or convert it where torch is available"
        ) from exc
    return check_weights(config, load_torch_weights(directory))


def convert_torch_weights(directory: Path) -> Path:
    """Write ``weights.npz`` next to ``weights.pt`` in a saved lstm directory (imports torch).

    For artifacts written before the numpy weights existed; returns the new file's path.
    """
    directory = Path(directory)
    config = _saved_config(directory)
    path = directory / NUMPY_WEIGHTS_FILE
    write_numpy_weights(path, _load_torch_weights(directory, config))
    logger.info("converted %s to %s", directory / WEIGHTS_FILE, path)
    return path


def _saved_config(directory: Path) -> GruModelConfig:
    config = read_encoder_config(directory)
    if config["name"] != LstmEncoder.name:
        raise EncoderError(f"{directory} holds a {config['name']!r} encoder, not 'lstm'")
    return GruModelConfig.from_saved(config)


class LstmEncoder:
    """The :class:`encoders.base.SessionEncoder` of a trained GRU model, in numpy.

    ``weights`` is the model's ``state_dict`` as arrays (see :func:`weight_shapes`); build one
    from a torch model with :func:`encoders.lstm_model.encoder_from_model`.
    """

    name: EncoderName = "lstm"

    def __init__(self, config: GruModelConfig, weights: Mapping[str, Any]) -> None:
        self.model_config = config
        #: The model's ``state_dict`` as float32 arrays (what :meth:`save` writes).
        self.weights = check_weights(config, weights)
        self._hidden = config.hidden_dim
        self._layers = config.num_layers
        self._item_emb = self.weights["item_emb.weight"]  # (n_items + 1, d); the pad row is 0
        self._gru = [
            fuse_gru_layer(
                self.weights[f"gru.weight_ih_l{k}"],
                self.weights[f"gru.weight_hh_l{k}"],
                self.weights[f"gru.bias_ih_l{k}"],
                self.weights[f"gru.bias_hh_l{k}"],
            )
            for k in range(config.num_layers)
        ]
        self._out_w = np.ascontiguousarray(self.weights["out_proj.weight"].T)
        self._out_b = self.weights["out_proj.bias"]
        table = self.weights.get("out_emb")
        self._item_vectors = self._item_emb[: config.n_items] if table is None else table

    @property
    def dim(self) -> int:
        """Size of the query vectors (the item-embedding width)."""
        return self.model_config.emb_dim

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue."""
        return self.model_config.n_items

    @property
    def state_size(self) -> int:
        """Number of float32 values in a state (``num_layers * hidden_dim``)."""
        return self._layers * self._hidden

    def initial_state(self) -> np.ndarray:
        """All-zero hidden state."""
        return np.zeros(self.state_size, dtype=np.float32)

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """One GRU step per session, batched (one matmul per layer for the whole batch)."""
        batch = stack_states(states, np.float32, self.state_size)
        idx = check_items(items, self.n_items, batch.shape[0])
        if batch.shape[0] == 0:
            return []
        return list(gru_step(self._item_emb[idx], batch, self._gru))

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, dim)`` output projections of the top layer's hidden state."""
        batch = stack_states(states, np.float32, self.state_size)
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = batch[:, -self._hidden :] @ self._out_w
        out += self._out_b
        return out

    def item_vectors(self) -> np.ndarray:
        """``(n_items, dim)`` float32 output item embeddings (search with inner product)."""
        return self._item_vectors

    def state_to_bytes(self, state: np.ndarray) -> bytes:
        """6-byte header + ``num_layers * hidden_dim`` float32 values."""
        return pack_state(state, np.float32, self.state_size)

    def state_from_bytes(self, data: bytes) -> np.ndarray:
        """Inverse of :meth:`state_to_bytes`; ``EncoderStateError`` on a bad blob."""
        return unpack_state(data, np.float32, self.state_size)

    # -- persistence -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable config written by :meth:`save`."""
        hp = asdict(self.model_config)
        n_items = hp.pop("n_items")
        return {"name": self.name, "dim": self.dim, "n_items": n_items, "hyperparameters": hp}

    def save(self, directory: Path) -> None:
        """Write ``config.json``, ``weights.npz`` and (when torch is installed) ``weights.pt``."""
        directory = Path(directory)
        write_encoder_config(directory, self.config())
        write_numpy_weights(directory / NUMPY_WEIGHTS_FILE, self.weights)
        try:
            from encoders.lstm_model import save_torch_weights
        except ImportError:
            logger.warning("torch is not installed: %s has no %s", directory, WEIGHTS_FILE)
        else:
            save_torch_weights(directory, self.weights)
        logger.info(
            "saved lstm encoder (%d items, dim %d) to %s", self.n_items, self.dim, directory
        )

    @classmethod
    def load(cls, directory: Path) -> LstmEncoder:
        """Read ``config.json`` and ``weights.npz`` (numpy only) from ``directory``.

        A directory with only ``weights.pt`` (written before the numpy weights) is read with
        torch and converted in memory.
        """
        directory = Path(directory)
        config = _saved_config(directory)
        path = directory / NUMPY_WEIGHTS_FILE
        if path.exists():
            return cls(config, read_numpy_weights(path))
        if not (directory / WEIGHTS_FILE).exists():
            raise EncoderError(
                f"no encoder weights in {directory} ({NUMPY_WEIGHTS_FILE} or {WEIGHTS_FILE})"
            )
        logger.info(
            "lstm encoder in %s predates the numpy weights (no %s): reading %s with torch. "
            "Re-train, or convert it once with encoders.lstm.convert_torch_weights(%r), to "
            "serve it without importing torch",
            directory,
            NUMPY_WEIGHTS_FILE,
            WEIGHTS_FILE,
            str(directory),
        )
        return cls(config, _load_torch_weights(directory, config))


def __getattr__(name: str) -> Any:
    """``encoders.lstm.GruSessionModel`` still resolves (it lives in ``encoders.lstm_model``)."""
    if name == "GruSessionModel":
        from encoders.lstm_model import GruSessionModel

        return GruSessionModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
