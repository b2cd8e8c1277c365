"""SASRec-style causal Transformer session encoder over the last ``max_len`` tracks, served
with numpy only.

The model is trained with PyTorch (:class:`encoders.transformer_model.SasRecModel`): item
embeddings (initialised from the collaborative vectors) scaled by ``sqrt(emb_dim)`` plus
learned positional embeddings, ``num_blocks`` pre-LayerNorm blocks (causal multi-head
self-attention + GELU feed-forward, dropout), a final LayerNorm. The query for a prefix is the
output at its last position; scores are ``query @ E.T`` with ``E`` the input item table when
``tied`` (the default, as in SASRec) or a separate output table (``tied=False``); ``E`` is
:meth:`TransformerEncoder.item_vectors` (search with the inner product; the query is not
normalised).

:class:`TransformerEncoder` runs the trained weights with numpy (no torch import, so the worker
does not pay torch's memory), batched over the windows and float32 throughout, as
``SasRecModel.last_outputs`` does (dropout is the identity at inference)::

    x = item_emb[inputs] * sqrt(emb_dim) + pos_emb[:T]          (zero at padding)
    per block:  x = x + attn_out(attention(qkv(LN1(x))))
                x = x + W2 @ GELU(W1 @ LN2(x) + b1) + b2
    query = LN_final(x at the row's last real position)

with the last block computed at each row's last real position only (keys and values still
cover the row); the block maths (LayerNorm, masked multi-head attention, the erf GELU) are in
:mod:`encoders.transformer_ops`. Queries agree with the torch model's to about ``1e-6``.

Positions count from the start of the window: the oldest item in the window is position 0.
Model inputs are right-padded with :attr:`TransformerEncoder.pad_index` (``n_items``);
attention is causal and skips padded keys; a padded query attends to the real positions and
to itself (so no row is empty; its output is never used).

State layout (int64, ``max_len`` values): the window of the last ``max_len`` item indices,
*right-aligned*: the newest item is the last element and unused slots at the front hold
``-1``. :meth:`TransformerEncoder.step` shifts the new item in; :meth:`embed` runs the model on
the batch of windows. The empty session embeds to the zero vector.

Saved directory: ``config.json``, ``weights.npz`` (the model's ``state_dict`` as float32
arrays under the same keys, read here with numpy) and ``weights.pt`` (the torch
``state_dict``, for training and fine-tuning). A directory written before ``weights.npz``
existed is converted from ``weights.pt`` on load (this imports torch);
:func:`convert_torch_weights` writes the missing ``weights.npz`` once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.base import (
    EncoderName,
    check_items,
    check_weight_arrays,
    pack_state,
    stack_states,
    unpack_state,
)
from encoders.errors import EncoderError, EncoderStateError
from encoders.numpy_io import NumpyWeightsIO
from encoders.transformer_ops import (
    attention_bias,
    block_forward,
    block_last,
    block_weights,
    layer_norm,
)

logger = logging.getLogger(__name__)

#: Value of an unused slot in a window state.
EMPTY_SLOT = -1


@dataclass(frozen=True)
class TransformerModelConfig:
    """Shape and regularisation of the SASRec model (and of :class:`TransformerEncoder`)."""

    n_items: int
    emb_dim: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    ffn_dim: int = 128
    max_len: int = 50
    dropout: float = 0.2
    tied: bool = True

    def __post_init__(self) -> None:
        sizes = (self.n_items, self.emb_dim, self.num_blocks, self.num_heads, self.ffn_dim)
        if min(*sizes, self.max_len) < 1 or self.emb_dim % self.num_heads:
            raise EncoderError(f"invalid transformer model config {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise EncoderError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_saved(cls, config: Mapping[str, Any]) -> TransformerModelConfig:
        """From a ``config.json`` dict (``n_items`` + ``hyperparameters``)."""
        hp = dict(config.get("hyperparameters", {}))
        try:
            return cls(n_items=int(config["n_items"]), **hp)
        except (KeyError, TypeError, ValueError) as exc:
            raise EncoderError(f"bad transformer config: {exc}") from exc


def weight_shapes(config: TransformerModelConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every array of the model's ``state_dict``."""
    n, d, f = config.n_items, config.emb_dim, config.ffn_dim
    shapes: dict[str, tuple[int, ...]] = {
        "item_emb.weight": (n + 1, d),
        "pos_emb.weight": (config.max_len, d),
    }
    for k in range(config.num_blocks):
        p = f"blocks.{k}."
        shapes |= {
            p + "ln1.weight": (d,),
            p + "ln1.bias": (d,),
            p + "qkv.weight": (3 * d, d),
            p + "qkv.bias": (3 * d,),
            p + "attn_out.weight": (d, d),
            p + "attn_out.bias": (d,),
            p + "ln2.weight": (d,),
            p + "ln2.bias": (d,),
            p + "ffn.0.weight": (f, d),
            p + "ffn.0.bias": (f,),
            p + "ffn.2.weight": (d, f),
            p + "ffn.2.bias": (d,),
        }
    shapes |= {"final_ln.weight": (d,), "final_ln.bias": (d,)}
    if not config.tied:
        shapes["out_emb"] = (n, d)
    return shapes


def check_weights(
    config: TransformerModelConfig, weights: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """The weights as C-contiguous float32 arrays; ``EncoderError`` if they do not fit."""
    return check_weight_arrays("transformer", weight_shapes(config), weights)


def windows_to_inputs(windows: np.ndarray, pad_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned ``-1``-padded windows ``(B, N)`` -> right-padded inputs ``(B, T)``, counts.

    ``T`` is the largest count in the batch (at least 1); row ``b`` holds its ``counts[b]``
    items in order at positions ``0 .. counts[b] - 1`` and ``pad_index`` after them.
    """
    b, n = windows.shape
    counts = (windows != EMPTY_SLOT).sum(axis=1)
    t = max(int(counts.max(initial=0)), 1)
    cols = np.arange(t)[None, :]
    src = np.minimum(n - counts[:, None] + cols, n - 1)
    inputs = windows[np.arange(b)[:, None], src]
    return np.where(cols < counts[:, None], inputs, pad_index).astype(np.int64), counts


def padded_length(counts: np.ndarray, window: int) -> np.ndarray:
    """The length each row runs at: its count rounded up to a power of two (at least 4), at
    most ``window``. A function of the row alone, and few distinct lengths per batch."""
    lengths = np.full(counts.shape, 4, dtype=np.int64)
    while (small := lengths < np.minimum(counts, window)).any():
        lengths[small] *= 2
    return np.minimum(lengths, window)


def shift_in(batch: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Pure window update: drop the oldest slot, append ``items`` as the newest."""
    out = np.empty_like(batch)
    out[:, :-1] = batch[:, 1:]
    out[:, -1] = items
    return out


# -- persistence helpers -----------------------------------------------------------------------


class TransformerEncoder(NumpyWeightsIO):
    """The :class:`encoders.base.SessionEncoder` of a trained SASRec model, in numpy.

    ``weights`` is the model's ``state_dict`` as arrays (see :func:`weight_shapes`); build one
    from a torch model with :func:`encoders.transformer_model.encoder_from_model`.
    """

    name: EncoderName = "transformer"
    config_class = TransformerModelConfig

    def __init__(self, config: TransformerModelConfig, weights: Mapping[str, Any]) -> None:
        self.model_config = config
        #: The model's ``state_dict`` as float32 arrays (what :meth:`save` writes).
        self.weights = check_weights(config, weights)
        self._item_emb = self.weights["item_emb.weight"]  # (n_items + 1, d); the pad row is 0
        self._pos_emb = self.weights["pos_emb.weight"]
        self._emb_scale = np.float32(math.sqrt(config.emb_dim))
        self._blocks = [
            block_weights(self.weights, k, config.num_heads) for k in range(config.num_blocks)
        ]
        self._final_ln = (self.weights["final_ln.weight"], self.weights["final_ln.bias"])
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
    def pad_index(self) -> int:
        """Index used to right-pad model inputs (``n_items``, the zero row of the table)."""
        return self.model_config.n_items

    @property
    def state_size(self) -> int:
        """Window length ``max_len`` (int64 values in a state)."""
        return self.model_config.max_len

    def initial_state(self) -> np.ndarray:
        """An all-empty window."""
        return np.full(self.state_size, EMPTY_SLOT, dtype=np.int64)

    def _windows(self, states: Sequence[np.ndarray]) -> np.ndarray:
        batch = stack_states(states, np.int64, self.state_size)
        if batch.size and (batch.min() < EMPTY_SLOT or batch.max() >= self.n_items):
            raise EncoderStateError(f"window holds an index outside [-1, {self.n_items})")
        return batch

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """Shift each session's new item into its window (no model call)."""
        batch = self._windows(states)
        idx = check_items(items, self.n_items, batch.shape[0])
        return list(shift_in(batch, idx))

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """Run the model on the batch of windows; the last real position's output per row.

        Rows run in groups by length, each group padded to a length that depends on its
        rows' own lengths only (:func:`padded_length`): a row padded to a longer neighbour's
        length would sum its attention over more positions and come out different in the
        last bits, and a session's answer must not depend on the sessions it was batched
        with (:func:`encoders.base.matmul_rows`).
        """
        windows = self._windows(states)
        out = np.zeros((windows.shape[0], self.dim), dtype=np.float32)
        inputs, counts = windows_to_inputs(windows, self.pad_index)
        lengths = padded_length(counts, windows.shape[1])
        for length in np.unique(lengths[counts > 0]):
            rows = np.flatnonzero((lengths == length) & (counts > 0))
            group = np.full((rows.size, length), self.pad_index, dtype=np.int64)
            width = min(length, inputs.shape[1])
            group[:, :width] = inputs[rows, :width]
            out[rows] = self.last_outputs(group, counts[rows] - 1)
        return out

    def last_outputs(self, inputs: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Query vectors ``(B, dim)`` at position ``last[b]`` of right-padded ``inputs``
        ``(B, T)`` (``SasRecModel.last_outputs``; ``last[b]`` must be a real position)."""
        b, t = inputs.shape
        if t > self.state_size:
            raise EncoderError(f"sequence length {t} exceeds max_len {self.state_size}")
        counts = (inputs != self.pad_index).sum(axis=1)
        x = self._item_emb[inputs]
        x *= self._emb_scale
        x += self._pos_emb[:t]
        x *= (inputs != self.pad_index)[..., None]
        heads = self.model_config.num_heads
        if len(self._blocks) > 1:
            bias = attention_bias(counts, t)
            for block in self._blocks[:-1]:
                x = block_forward(x, bias, block, heads)
        return layer_norm(block_last(x, last, self._blocks[-1], heads), *self._final_ln)

    def item_vectors(self) -> np.ndarray:
        """``(n_items, dim)`` float32 item embeddings (search with inner product)."""
        return self._item_vectors

    def state_to_bytes(self, state: np.ndarray) -> bytes:
        """6-byte header + ``max_len`` int64 values."""
        return pack_state(state, np.int64, self.state_size)

    def state_from_bytes(self, data: bytes) -> np.ndarray:
        """Inverse of :meth:`state_to_bytes`; ``EncoderStateError`` on a bad blob."""
        state = unpack_state(data, np.int64, self.state_size)
        return self._windows([state])[0]


#: Module-level name kept for callers of the earlier releases.
convert_torch_weights = TransformerEncoder.convert_torch_weights
