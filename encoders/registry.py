"""Build fresh encoders by name and load saved ones from an encoder directory.

An encoder directory (``artifacts/encoders/<name>/``) holds ``config.json``::

    {"format_version": 1, "name": "lstm", "n_items": 20000, "dim": 64,
     "hyperparameters": {"emb_dim": 64, "hidden_dim": 128, ...}}

and, for the learned encoders (``lstm``, ``transformer``), ``weights.npz`` (the model's
``state_dict`` as float32 arrays, which they serve from with numpy only) and ``weights.pt``
(the same ``state_dict`` for torch, loaded with ``weights_only=True``; training and
fine-tuning). A directory written before ``weights.npz`` existed has only ``weights.pt``: it
is converted at load, with torch. The ``mean`` encoder stores no weights: its item vectors
are the artifacts' collaborative vectors and must be passed to :func:`load_encoder`.

This module imports no torch: the torch models are imported inside :func:`build_encoder`, so
loading any saved encoder with ``weights.npz`` keeps torch out of the process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import ENCODER_NAMES, EncoderName, SessionEncoder, read_encoder_config
from encoders.errors import EncoderError
from encoders.lstm import GruModelConfig, LstmEncoder
from encoders.mean import MeanEncoder
from encoders.transformer import TransformerEncoder, TransformerModelConfig

logger = logging.getLogger(__name__)


def build_encoder(
    name: EncoderName, item_vectors: np.ndarray, config: Mapping[str, Any] | None = None
) -> SessionEncoder:
    """A fresh (untrained, for the learned ones) encoder.

    ``config`` holds hyperparameters: ``decay`` for ``mean``; the fields of
    :class:`~encoders.lstm.GruModelConfig` / :class:`~encoders.transformer.TransformerModelConfig`
    (except ``n_items``, taken from ``item_vectors``) for ``lstm`` / ``transformer``, whose item
    embeddings are initialised from ``item_vectors``. The learned ones are initialised by
    torch (imported here; seed it with ``torch.manual_seed``).
    """
    hp = dict(config or {})
    try:
        if name == "mean":
            return MeanEncoder(item_vectors, decay=float(hp.pop("decay", 1.0)), **hp)
        n_items = int(np.shape(item_vectors)[0])
        if name == "lstm":
            gru_config = GruModelConfig(n_items, **hp)
            from encoders.lstm_model import GruSessionModel, encoder_from_model

            return encoder_from_model(GruSessionModel(gru_config, item_vectors))
        if name == "transformer":
            model_config = TransformerModelConfig(n_items, **hp)
            from encoders import transformer_model

            model = transformer_model.SasRecModel(model_config, item_vectors)
            return transformer_model.encoder_from_model(model)
    except TypeError as exc:
        raise EncoderError(f"bad hyperparameters for encoder {name!r}: {exc}") from exc
    raise EncoderError(f"unknown encoder {name!r}; expected one of {ENCODER_NAMES}")


def load_encoder(directory: Path, item_vectors: np.ndarray | None = None) -> SessionEncoder:
    """Restore the encoder saved in ``directory`` (see the module docstring for the layout).

    ``item_vectors`` are required for ``mean``; for the learned encoders they are optional and
    only checked against the saved catalogue size. Only an ``lstm`` or ``transformer``
    directory without ``weights.npz`` imports torch (to convert its ``weights.pt``).
    """
    directory = Path(directory)
    config = read_encoder_config(directory)
    name = config["name"]
    if name == "mean":
        if item_vectors is None:
            raise EncoderError("loading the mean encoder needs the item vectors")
        encoder: SessionEncoder = MeanEncoder.load(directory, item_vectors)
    elif name == "lstm":
        encoder = LstmEncoder.load(directory)
    else:
        encoder = TransformerEncoder.load(directory)
    if item_vectors is not None and int(np.shape(item_vectors)[0]) != config.get("n_items"):
        raise EncoderError(
            f"encoder in {directory} was saved for {config.get('n_items')} items, "
            f"got item vectors for {np.shape(item_vectors)[0]}"
        )
    logger.debug("loaded %s encoder from %s", name, directory)
    return encoder
