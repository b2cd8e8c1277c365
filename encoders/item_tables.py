"""The item tables the PyTorch session models share (``lstm``'s GRU and the ``transformer``).

Each model holds an input table ``item_emb`` of ``n_items + 1`` rows (the last one is the
padding row, always zero) and, unless the tables are tied, a separate output table
``out_emb``: the item vectors retrieval searches. Both start from the same table, fitted to
the LightFM item vectors (:func:`encoders.base.fit_item_vectors`) or small noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from encoders.base import fit_item_vectors
from encoders.errors import EncoderError


class ItemTables(nn.Module):
    """Base of the session models: ``pad_index``, ``reset_item_embeddings``, ``item_weights``
    over the ``item_emb`` / ``out_emb`` the subclass creates (``config`` has ``n_items`` and
    ``emb_dim``)."""

    config: Any
    item_emb: nn.Embedding
    out_emb: nn.Parameter | None

    @property
    def pad_index(self) -> int:
        """Index used to right-pad input sequences."""
        return int(self.config.n_items)

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
