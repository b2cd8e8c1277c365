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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.base import (
    EncoderName,
    check_items,
    check_weight_arrays,
    matmul_rows,
    pack_state,
    stack_states,
    unpack_state,
)
from encoders.errors import EncoderError
from encoders.numpy_io import NumpyWeightsIO

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
    return check_weight_arrays("lstm", weight_shapes(config), weights)


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
        gates = matmul_rows(np.concatenate([x, h], axis=1), w)
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


class LstmEncoder(NumpyWeightsIO):
    """The :class:`encoders.base.SessionEncoder` of a trained GRU model, in numpy.

    ``weights`` is the model's ``state_dict`` as arrays (see :func:`weight_shapes`); build one
    from a torch model with :func:`encoders.lstm_model.encoder_from_model`.
    """

    name: EncoderName = "lstm"
    config_class = GruModelConfig

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
        out = matmul_rows(batch[:, -self._hidden :], self._out_w)
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


#: Module-level name kept for callers of the earlier releases.
convert_torch_weights = LstmEncoder.convert_torch_weights
