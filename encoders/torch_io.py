"""torch <-> numpy weights of the learned encoders' PyTorch models (imports torch).

Both learned encoders (``lstm``, ``transformer``) are served with numpy from their model's
``state_dict`` held as float32 arrays; their torch models (:mod:`encoders.lstm_model`,
:mod:`encoders.transformer_model`) use these helpers to go between the two and to read and
write ``weights.pt`` (the torch ``state_dict``, kept for training and fine-tuning).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from encoders.base import WEIGHTS_FILE, load_weights
from encoders.errors import EncoderError


def model_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` as float32 numpy arrays (copies, detached from the model)."""
    return {
        key: value.detach().to("cpu", torch.float32).numpy().copy()
        for key, value in model.state_dict().items()
    }


def state_dict_from_weights(weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy weights -> a torch ``state_dict`` (copies)."""
    return {
        key: torch.from_numpy(np.array(value, dtype=np.float32)) for key, value in weights.items()
    }


def load_model_weights(model: nn.Module, weights: Mapping[str, np.ndarray], kind: str) -> None:
    """Copy ``weights`` into ``model`` (strict); ``EncoderError`` naming ``kind`` on a misfit."""
    try:
        model.load_state_dict(state_dict_from_weights(weights))
    except RuntimeError as exc:
        raise EncoderError(f"{kind} weights do not fit the config: {exc}") from exc


def save_torch_weights(directory: Path, weights: Mapping[str, np.ndarray]) -> None:
    """Write ``weights.pt`` (a torch ``state_dict``) into ``directory``."""
    torch.save(state_dict_from_weights(weights), Path(directory) / WEIGHTS_FILE)


def load_torch_weights(directory: Path) -> dict[str, np.ndarray]:
    """``weights.pt`` of ``directory`` (``weights_only=True``) as float32 numpy arrays."""
    state_dict = load_weights(Path(directory))
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise EncoderError(f"{Path(directory) / WEIGHTS_FILE} is not a state_dict of tensors")
    return {key: value.to(torch.float32).numpy() for key, value in state_dict.items()}
