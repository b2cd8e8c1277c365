"""Saving and loading of the PyTorch-served encoders (``transformer``; ``lstm`` is served with
numpy, see :mod:`encoders.lstm`).

An encoder directory holds ``config.json`` (name, dim, n_items and the model's
hyperparameters) and ``weights.pt`` (the model's ``state_dict``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from torch import nn

from encoders.base import (
    WEIGHTS_FILE,
    EncoderName,
    load_weights,
    read_encoder_config,
    write_encoder_config,
)
from encoders.errors import EncoderError

logger = logging.getLogger(__name__)


class TorchEncoderIO:
    """Mixin: ``config``/``save``/``from_config``/``load`` for an encoder wrapping ``model``
    (an instance of ``model_class`` built from a frozen ``config_class`` dataclass)."""

    name: EncoderName
    model: Any
    model_class: ClassVar[type[nn.Module]]
    config_class: ClassVar[type]
    n_items: int  # provided by the encoder (a property)
    dim: int

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable config written by :meth:`save`."""
        hp = asdict(self.model.config)
        n_items = hp.pop("n_items")
        return {"name": self.name, "dim": self.dim, "n_items": n_items, "hyperparameters": hp}

    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``weights.pt`` (the model's ``state_dict``)."""
        directory = Path(directory)
        write_encoder_config(directory, self.config())
        torch.save(self.model.state_dict(), directory / WEIGHTS_FILE)
        logger.info(
            "saved %s encoder (%d items, dim %d) to %s",
            self.name,
            self.n_items,
            self.dim,
            directory,
        )

    @classmethod
    def model_config(cls, config: Mapping[str, Any]) -> Any:
        """The model's config dataclass from a saved config (``n_items`` + hyperparameters)."""
        hp = dict(config.get("hyperparameters", {}))
        try:
            return cls.config_class(n_items=int(config["n_items"]), **hp)
        except (KeyError, TypeError) as exc:
            raise EncoderError(f"bad {cls.name} config: {exc}") from exc

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None
    ) -> Self:
        """Rebuild from a ``config.json`` dict and (optionally) saved weights."""
        model = cls.model_class(cls.model_config(config))
        if state_dict is not None:
            try:
                model.load_state_dict(state_dict)
            except RuntimeError as exc:
                raise EncoderError(f"{cls.name} weights do not fit the config: {exc}") from exc
        return cls(model)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read ``config.json`` and ``weights.pt`` from ``directory``."""
        directory = Path(directory)
        config = read_encoder_config(directory)
        if config["name"] != cls.name:
            raise EncoderError(f"{directory} holds a {config['name']!r} encoder, not {cls.name!r}")
        return cls.from_config(config, load_weights(directory))
