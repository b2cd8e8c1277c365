"""The PyTorch model of the ``lstm`` encoder, for training and fine-tuning (imports torch).

Serving does not need this module: :class:`encoders.lstm.LstmEncoder` runs the same weights
with numpy. :func:`encoder_from_model` turns a trained :class:`GruSessionModel` into that
encoder, :func:`model_from_encoder` goes back (to fine-tune, or as a reference in tests).
The torch <-> numpy weight helpers are :mod:`encoders.torch_io`'s (re-exported here).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from encoders.item_tables import ItemTables
from encoders.lstm import GruModelConfig, LstmEncoder
from encoders.torch_io import (
    load_model_weights,
    load_torch_weights,
    model_weights,
    save_torch_weights,
    state_dict_from_weights,
)

__all__ = [
    "GruModelConfig",
    "GruSessionModel",
    "encoder_from_model",
    "load_torch_weights",
    "model_from_encoder",
    "model_weights",
    "save_torch_weights",
    "state_dict_from_weights",
]


class GruSessionModel(ItemTables):
    """Embedding -> GRU -> linear projection into the item-embedding space.

    Inputs are item indices ``(B, T)``, right-padded with :attr:`pad_index` (= ``n_items``);
    the GRU is causal, so padding after the real items never changes their outputs.
    """

    def __init__(self, config: GruModelConfig, init_vectors: np.ndarray | None = None) -> None:
        super().__init__()
        self.config = config
        n, d = config.n_items, config.emb_dim
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.gru = nn.GRU(
            d,
            config.hidden_dim,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out_proj = nn.Linear(config.hidden_dim, d)
        self.out_emb: nn.Parameter | None = None
        if not config.tied:
            self.out_emb = nn.Parameter(torch.empty(n, d))
        self.reset_item_embeddings(init_vectors)

    def forward(self, inputs: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """Query vectors ``(B, T, emb_dim)`` for every prefix of right-padded ``inputs``."""
        x = self.dropout(self.item_emb(inputs))
        out, _ = self.gru(x, h0)
        return self.out_proj(self.dropout(out))

    def hidden_states(self, inputs: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden state ``(num_layers, B, hidden_dim)`` after running all of ``inputs``."""
        _, h_n = self.gru(self.dropout(self.item_emb(inputs)), h0)
        return h_n

    def step(self, items: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One event per session: ``(B,)`` items, ``(num_layers, B, H)`` -> new hidden state."""
        _, h_n = self.gru(self.dropout(self.item_emb(items[:, None])), h)
        return h_n

    def project(self, h_top: torch.Tensor) -> torch.Tensor:
        """Query vectors ``(B, emb_dim)`` from the top layer's hidden state ``(B, H)``."""
        return self.out_proj(self.dropout(h_top))


def encoder_from_model(model: GruSessionModel) -> LstmEncoder:
    """The numpy serving encoder of a (trained) model; later changes to the model do not
    reach it."""
    return LstmEncoder(model.config, model_weights(model))


def model_from_encoder(encoder: LstmEncoder) -> GruSessionModel:
    """A torch model (eval mode) holding a copy of the encoder's weights."""
    model = GruSessionModel(encoder.model_config)
    load_model_weights(model, encoder.weights, "lstm")
    return model.eval()
