"""SASRec-style causal Transformer session encoder over the last ``max_len`` tracks.

Model (:class:`SasRecModel`): item embeddings (initialised from the collaborative vectors)
plus learned positional embeddings, ``num_blocks`` pre-LayerNorm blocks
(causal multi-head self-attention + GELU feed-forward, dropout), a final LayerNorm. The query
for a prefix is the output at its last position; scores are ``query @ E.T`` with ``E`` the
input item table when ``tied`` (the default, as in SASRec) or a separate output table
(``tied=False``); ``E`` is :meth:`TransformerEncoder.item_vectors` (search with the inner
product; the query is not normalised).

Positions count from the start of the window: the oldest item in the window is position 0.
Model inputs are right-padded with :attr:`SasRecModel.pad_index`; attention uses a causal mask
combined with a key-padding mask (a padded query attends to itself only, so no row is empty).

State layout (int64, ``max_len`` values): the window of the last ``max_len`` item indices,
*right-aligned*: the newest item is the last element and unused slots at the front hold
``-1``. :meth:`TransformerEncoder.step` shifts the new item in (pure numpy); :meth:`embed`
runs the model on the batch of windows. The empty session embeds to the zero vector.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import (
    EncoderName,
    check_items,
    pack_state,
    stack_states,
    unpack_state,
)
from encoders.errors import EncoderError, EncoderStateError
from encoders.item_tables import ItemTables
from encoders.torch_io import TorchEncoderIO

logger = logging.getLogger(__name__)

#: Value of an unused slot in a window state.
EMPTY_SLOT = -1


@dataclass(frozen=True)
class TransformerModelConfig:
    """Shape and regularisation of :class:`SasRecModel`."""

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


def attention_mask(valid: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, 1, T, T)`` mask (True = may attend): causal and not padding.

    A padded query position may attend to itself, so no row is fully masked (its output is
    never used).
    """
    t = valid.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(t, dtype=torch.bool, device=valid.device)
    mask = causal[None] & valid[:, None, :]
    return (mask | (eye[None] & ~valid[:, :, None]))[:, None]


class CausalBlock(nn.Module):
    """Pre-LayerNorm Transformer block: masked self-attention and a feed-forward layer."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, query_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` ``(B, T, D)``, ``mask`` ``(B, 1, T, T)`` -> ``(B, T, D)``.

        With ``query_index`` ``(B,)`` only that position of each row is computed (keys and
        values still cover the whole row): ``(B, 1, D)``. Used for the last block at inference.
        """
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        if query_index is not None:
            rows = torch.arange(b, device=x.device)
            x, q = x[rows, query_index][:, None], q[rows, query_index][:, None]
            mask = mask[rows, :, query_index][:, :, None]
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x = x + self.dropout(self.attn_out(att.transpose(1, 2).reshape(b, q.shape[1], d)))
        return x + self.dropout(self.ffn(self.ln2(x)))


class SasRecModel(ItemTables):
    """Causal Transformer over right-padded windows of item indices."""

    def __init__(
        self, config: TransformerModelConfig, init_vectors: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.config = config
        n, d = config.n_items, config.emb_dim
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            CausalBlock(d, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_blocks)
        )
        self.final_ln = nn.LayerNorm(d)
        self.out_emb: nn.Parameter | None = None
        if not config.tied:
            self.out_emb = nn.Parameter(torch.empty(n, d))
        nn.init.normal_(self.pos_emb.weight, 0.0, 0.1)
        self.reset_item_embeddings(init_vectors)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Query vectors ``(B, T, emb_dim)`` for every prefix of right-padded ``inputs``."""
        x, mask = self._embed(inputs)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_ln(x)

    def last_outputs(self, inputs: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Query vectors ``(B, emb_dim)`` at position ``last[b]`` of each row only.

        Equals ``forward(inputs)[arange(B), last]``; the last block computes one query row.
        """
        x, mask = self._embed(inputs)
        for block in self.blocks[:-1]:
            x = block(x, mask)
        return self.final_ln(self.blocks[-1](x, mask, query_index=last)[:, 0])

    def _embed(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings ``(B, T, D)`` (zero at padding) and the attention mask."""
        t = inputs.shape[1]
        if t > self.config.max_len:
            raise EncoderError(f"sequence length {t} exceeds max_len {self.config.max_len}")
        valid = inputs != self.pad_index
        pos = torch.arange(t, device=inputs.device)
        x = self.item_emb(inputs) * math.sqrt(self.config.emb_dim) + self.pos_emb(pos)[None]
        return self.emb_dropout(x) * valid[..., None], attention_mask(valid)


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


def shift_in(batch: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Pure window update: drop the oldest slot, append ``items`` as the newest."""
    out = np.empty_like(batch)
    out[:, :-1] = batch[:, 1:]
    out[:, -1] = items
    return out


class TransformerEncoder(TorchEncoderIO):
    """The :class:`encoders.base.SessionEncoder` wrapper around a trained SASRec model."""

    name: EncoderName = "transformer"
    model_class = SasRecModel
    config_class = TransformerModelConfig

    def __init__(self, model: SasRecModel) -> None:
        self.model = model.float().cpu().eval()
        with torch.inference_mode():
            self._item_vectors = model.item_weights().detach().numpy().astype(np.float32)

    @property
    def dim(self) -> int:
        """Size of the query vectors (the item-embedding width)."""
        return self.model.config.emb_dim

    @property
    def n_items(self) -> int:
        """Number of items in the catalogue."""
        return self.model.config.n_items

    @property
    def state_size(self) -> int:
        """Window length ``max_len`` (int64 values in a state)."""
        return self.model.config.max_len

    def initial_state(self) -> np.ndarray:
        """An all-empty window."""
        return np.full(self.state_size, EMPTY_SLOT, dtype=np.int64)

    def _windows(self, states: Sequence[np.ndarray]) -> np.ndarray:
        batch = stack_states(states, np.int64, self.state_size)
        if batch.size and (batch.min() < EMPTY_SLOT or batch.max() >= self.n_items):
            raise EncoderStateError(f"window holds an index outside [-1, {self.n_items})")
        return batch

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """Shift each session's new item into its window (numpy only, no model call)."""
        batch = self._windows(states)
        idx = check_items(items, self.n_items, batch.shape[0])
        return list(shift_in(batch, idx))

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """Run the model on the batch of windows; the last real position's output per row."""
        windows = self._windows(states)
        out = np.zeros((windows.shape[0], self.dim), dtype=np.float32)
        inputs, counts = windows_to_inputs(windows, self.model.pad_index)
        rows = np.flatnonzero(counts > 0)
        if rows.size == 0:
            return out
        with torch.inference_mode():
            last = torch.from_numpy(counts[rows] - 1)
            out[rows] = self.model.last_outputs(torch.from_numpy(inputs[rows]), last).numpy()
        return out

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
