"""The PyTorch model of the ``transformer`` encoder, for training and fine-tuning (imports
torch).

Serving does not need this module: :class:`encoders.transformer.TransformerEncoder` runs the
same weights with numpy. :func:`encoder_from_model` turns a trained :class:`SasRecModel` into
that encoder, :func:`model_from_encoder` goes back (to fine-tune, or as a reference in tests).

Model: item embeddings (initialised from the collaborative vectors) scaled by
``sqrt(emb_dim)`` plus learned positional embeddings, zeroed at padding; ``num_blocks``
pre-LayerNorm blocks (causal multi-head self-attention + GELU feed-forward, dropout); a final
LayerNorm. Inputs are right-padded with :attr:`SasRecModel.pad_index`; positions count from
the first item of the row.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import EncoderError
from encoders.item_tables import ItemTables
from encoders.torch_io import (
    load_model_weights,
    load_torch_weights,
    model_weights,
    save_torch_weights,
    state_dict_from_weights,
)
from encoders.transformer import TransformerEncoder, TransformerModelConfig

__all__ = [
    "CausalBlock",
    "SasRecModel",
    "TransformerModelConfig",
    "attention_mask",
    "encoder_from_model",
    "load_torch_weights",
    "model_from_encoder",
    "model_weights",
    "save_torch_weights",
    "state_dict_from_weights",
]


def attention_mask(valid: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, 1, T, T)`` mask (True = may attend): causal and not padding.

    A padded query position may also attend to itself, so no row is fully masked (its output
    is never used).
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


def encoder_from_model(model: SasRecModel) -> TransformerEncoder:
    """The numpy serving encoder of a (trained) model; later changes to the model do not
    reach it."""
    return TransformerEncoder(model.config, model_weights(model))


def model_from_encoder(encoder: TransformerEncoder) -> SasRecModel:
    """A torch model (eval mode) holding a copy of the encoder's weights."""
    model = SasRecModel(encoder.model_config)
    load_model_weights(model, encoder.weights, "transformer")
    return model.eval()
