"""GRU4Rec-style recurrent session encoder (registered under the product name ``"lstm"``).

Model (:class:`GruSessionModel`): an item embedding table (initialised from the collaborative
vectors, see :func:`encoders.base.fit_item_vectors`), input dropout, an ``nn.GRU``, dropout and a
linear output projection from the hidden state into the item-embedding space. Scores are
``out @ E.T`` where ``E`` is the *tied* item embedding table by default (``tied=False`` adds a
separate output table); ``E`` is what :meth:`LstmEncoder.item_vectors` returns, so retrieval
over it must use the inner product (the query is not normalised; scaling a query does not
change its ranking).

State layout (float32, ``num_layers * hidden_dim`` values): the GRU hidden state, layer 0
first; the initial state is all zeros. One event costs one GRU cell step per layer whatever
the session length: :meth:`LstmEncoder.step` runs the *same* ``nn.GRU`` module on a length-1
sequence, so stepping reproduces the hidden states of training-time full-sequence runs.
The empty session embeds to ``out_proj(0)`` (the projection bias, a constant query); the
worker uses popularity for empty sessions anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from encoders.base import (
    EncoderName,
    check_items,
    fit_item_vectors,
    pack_state,
    stack_states,
    unpack_state,
)
from encoders.errors import EncoderError
from encoders.torch_io import TorchEncoderIO

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GruModelConfig:
    """Shape and regularisation of :class:`GruSessionModel`."""

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


class GruSessionModel(nn.Module):
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

    @property
    def pad_index(self) -> int:
        """Index used to right-pad input sequences."""
        return self.config.n_items

    def reset_item_embeddings(
        self, init_vectors: np.ndarray | None, seed: int = 0, rms: float = 0.1
    ) -> None:
        """Initialise the item table(s) from ``init_vectors`` (or small noise when ``None``)."""
        n, d = self.config.n_items, self.config.emb_dim
        if init_vectors is None:
            table = np.random.default_rng(seed).normal(0.0, rms, (n, d)).astype(np.float32)
        else:
            if init_vectors.shape[0] != n:
                raise EncoderError(f"init vectors have {init_vectors.shape[0]} rows, not {n}")
            table = fit_item_vectors(init_vectors, d, seed=seed, rms=rms)
        with torch.no_grad():
            self.item_emb.weight[:n] = torch.from_numpy(table)
            self.item_emb.weight[n] = 0.0
            if self.out_emb is not None:
                self.out_emb.copy_(torch.from_numpy(table))

    def item_weights(self) -> torch.Tensor:
        """``(n_items, emb_dim)`` output item embeddings (the retrieval item vectors)."""
        if self.out_emb is not None:
            return self.out_emb
        return self.item_emb.weight[: self.config.n_items]

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


class LstmEncoder(TorchEncoderIO):
    """The :class:`encoders.base.SessionEncoder` wrapper around a trained GRU model.

    The model is put in eval mode; wrap it only after training (the item vectors are cached).
    """

    name: EncoderName = "lstm"
    model_class = GruSessionModel
    config_class = GruModelConfig

    def __init__(self, model: GruSessionModel) -> None:
        self.model = model.float().cpu().eval()
        cfg = model.config
        self._hidden = cfg.hidden_dim
        self._layers = cfg.num_layers
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
        """Number of float32 values in a state (``num_layers * hidden_dim``)."""
        return self._layers * self._hidden

    def initial_state(self) -> np.ndarray:
        """All-zero hidden state."""
        return np.zeros(self.state_size, dtype=np.float32)

    def _to_hidden(self, batch: np.ndarray) -> torch.Tensor:
        """``(B, L*H)`` numpy -> ``(L, B, H)`` contiguous tensor."""
        h = torch.from_numpy(batch).view(batch.shape[0], self._layers, self._hidden)
        return h.transpose(0, 1).contiguous()

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """One GRU step per session, batched, under ``torch.inference_mode()``."""
        batch = stack_states(states, np.float32, self.state_size)
        idx = check_items(items, self.n_items, batch.shape[0])
        if batch.shape[0] == 0:
            return []
        with torch.inference_mode():
            h_n = self.model.step(torch.from_numpy(idx), self._to_hidden(batch))
            out = h_n.transpose(0, 1).reshape(batch.shape[0], self.state_size).numpy()
        return list(np.array(out, dtype=np.float32))

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, dim)`` output projections of the top layer's hidden state."""
        batch = stack_states(states, np.float32, self.state_size)
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            top = torch.from_numpy(np.ascontiguousarray(batch[:, -self._hidden :]))
            return self.model.project(top).numpy().astype(np.float32)

    def item_vectors(self) -> np.ndarray:
        """``(n_items, dim)`` float32 output item embeddings (search with inner product)."""
        return self._item_vectors

    def state_to_bytes(self, state: np.ndarray) -> bytes:
        """6-byte header + ``num_layers * hidden_dim`` float32 values."""
        return pack_state(state, np.float32, self.state_size)

    def state_from_bytes(self, data: bytes) -> np.ndarray:
        """Inverse of :meth:`state_to_bytes`; ``EncoderStateError`` on a bad blob."""
        return unpack_state(data, np.float32, self.state_size)
