"""Saving and loading of the numpy-served learned encoders (``lstm``, ``transformer``).

A saved directory holds ``config.json`` (name, dim, n_items and the model's hyperparameters),
``weights.npz`` (the model's ``state_dict`` as float32 arrays, what serving reads with numpy
only) and ``weights.pt`` (the torch ``state_dict``, for training; written when torch is
installed). A directory written before ``weights.npz`` existed is read with torch and
converted in memory at load; :meth:`NumpyWeightsIO.convert_torch_weights` writes the missing
file once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from encoders.base import (
    NUMPY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    EncoderName,
    read_encoder_config,
    read_numpy_weights,
    write_encoder_config,
    write_numpy_weights,
)
from encoders.errors import EncoderError

logger = logging.getLogger(__name__)


class SavedConfig(Protocol):
    """A model config dataclass that can be rebuilt from a ``config.json`` dict."""

    @classmethod
    def from_saved(cls, config: Mapping[str, Any]) -> Any: ...


class NumpyWeightsIO:
    """Mixin: ``config``/``save``/``load``/``convert_torch_weights`` for an encoder built as
    ``cls(model_config, weights)`` (which checks the weights against the config)."""

    name: EncoderName
    config_class: ClassVar[type[SavedConfig]]
    model_config: Any
    #: The model's ``state_dict`` as float32 arrays (what :meth:`save` writes).
    weights: dict[str, np.ndarray]
    n_items: int  # provided by the encoder (a property)
    dim: int

    def __init__(self, config: Any, weights: Mapping[str, Any]) -> None:  # pragma: no cover
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable config written by :meth:`save`."""
        hp = asdict(self.model_config)
        n_items = hp.pop("n_items")
        return {"name": self.name, "dim": self.dim, "n_items": n_items, "hyperparameters": hp}

    def save(self, directory: Path) -> None:
        """Write ``config.json``, ``weights.npz`` and (when torch is installed) ``weights.pt``."""
        directory = Path(directory)
        write_encoder_config(directory, self.config())
        write_numpy_weights(directory / NUMPY_WEIGHTS_FILE, self.weights)
        try:
            from encoders.torch_io import save_torch_weights
        except ImportError:
            logger.warning("torch is not installed: %s has no %s", directory, WEIGHTS_FILE)
        else:
            save_torch_weights(directory, self.weights)
        logger.info(
            "saved %s encoder (%d items, dim %d) to %s",
            self.name,
            self.n_items,
            self.dim,
            directory,
        )

    @classmethod
    def saved_config(cls, directory: Path) -> Any:
        """The model config of the encoder saved in ``directory``; ``EncoderError`` if it
        holds another encoder."""
        config = read_encoder_config(directory)
        if config["name"] != cls.name:
            raise EncoderError(f"{directory} holds a {config['name']!r} encoder, not {cls.name!r}")
        return cls.config_class.from_saved(config)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read ``config.json`` and ``weights.npz`` (numpy only) from ``directory``; a
        directory with only ``weights.pt`` is read with torch and converted in memory."""
        directory = Path(directory)
        config = cls.saved_config(directory)
        path = directory / NUMPY_WEIGHTS_FILE
        if path.exists():
            return cls(config, read_numpy_weights(path))
        if not (directory / WEIGHTS_FILE).exists():
            raise EncoderError(
                f"no encoder weights in {directory} ({NUMPY_WEIGHTS_FILE} or {WEIGHTS_FILE})"
            )
        logger.info(
            "%s encoder in %s predates the numpy weights (no %s): reading %s with torch. "
            "Re-train, or convert it once with %s.convert_torch_weights(%r), to serve it "
            "without importing torch",
            cls.name,
            directory,
            NUMPY_WEIGHTS_FILE,
            WEIGHTS_FILE,
            cls.__name__,
            str(directory),
        )
        return cls(config, _torch_weights(directory))

    @classmethod
    def convert_torch_weights(cls, directory: Path) -> Path:
        """Write ``weights.npz`` next to ``weights.pt`` in a saved directory (imports torch);
        for artifacts written before the numpy weights existed. Returns the new file."""
        directory = Path(directory)
        encoder = cls(cls.saved_config(directory), _torch_weights(directory))  # checks them
        path = directory / NUMPY_WEIGHTS_FILE
        write_numpy_weights(path, encoder.weights)
        logger.info("converted %s to %s", directory / WEIGHTS_FILE, path)
        return path


def _torch_weights(directory: Path) -> dict[str, np.ndarray]:
    """``weights.pt`` as numpy arrays (imports torch)."""
    try:
        from encoders.torch_io import load_torch_weights
    except ImportError as exc:
        raise EncoderError(
            f"{directory} has no {NUMPY_WEIGHTS_FILE} and torch is not installed to read "
            f"{WEIGHTS_FILE}; re-train or convert it where torch is available"
        ) from exc
    return load_torch_weights(directory)
