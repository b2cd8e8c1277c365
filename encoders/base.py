"""The session-encoder protocol every backend (``mean``, ``lstm``, ``transformer``) implements.

A session encoder turns the tracks heard so far in a session into a query vector. It is run
*incrementally*: the worker keeps one state per session and advances it by one event at a
time, in batches across sessions. States are 1-D numpy arrays so they serialise compactly and
restore exactly.
"""

from __future__ import annotations

import functools
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from encoders.errors import EncoderError, EncoderInputError, EncoderStateError

EncoderName = Literal["mean", "lstm", "transformer"]
ENCODER_NAMES: tuple[EncoderName, ...] = ("mean", "lstm", "transformer")


@runtime_checkable
class SessionEncoder(Protocol):
    """What the worker and the evaluator need from an encoder."""

    #: ``"mean"``, ``"lstm"`` or ``"transformer"``.
    name: EncoderName

    @property
    def dim(self) -> int:
        """Size of the query vectors returned by :meth:`embed`."""
        ...

    def initial_state(self) -> np.ndarray:
        """The state of an empty session."""
        ...

    def step(self, states: Sequence[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
        """Advance each state by one item index (``items`` is int64, one per state)."""
        ...

    def embed(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """Query vectors ``(len(states), dim)`` float32 in the retrieval space."""
        ...

    def item_vectors(self) -> np.ndarray:
        """Item vectors ``(n_items, dim)`` float32 that queries are searched against."""
        ...

    def state_to_bytes(self, state: np.ndarray) -> bytes:
        """Compact, exact serialisation of one state."""
        ...

    def state_from_bytes(self, data: bytes) -> np.ndarray:
        """Inverse of :meth:`state_to_bytes`; raises ``EncoderStateError`` on a bad blob."""
        ...

    def save(self, directory: Path) -> None:
        """Write ``config.json`` (and weights) so :func:`encoders.load_encoder` restores it."""
        ...


def encode_sequence(encoder: SessionEncoder, items: Sequence[int]) -> np.ndarray:
    """Run ``encoder`` over a whole sequence, one step at a time; returns the final state."""
    state = encoder.initial_state()
    for item in items:
        state = encoder.step([state], np.asarray([item], dtype=np.int64))[0]
    return state


# --------------------------------------------------------------------------------------------
# Optional helpers shared by the concrete encoders (not part of the protocol).
# --------------------------------------------------------------------------------------------

#: Version byte written at the start of every serialised state.
STATE_FORMAT_VERSION = 1
#: ``format_version`` written into every encoder ``config.json``.
CONFIG_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
#: torch ``state_dict`` of a learned encoder (training, fine-tuning).
WEIGHTS_FILE = "weights.pt"
#: The same weights as numpy arrays (``np.savez``), read by the torch-free serving path.
NUMPY_WEIGHTS_FILE = "weights.npz"

_DTYPE_CODES: dict[str, bytes] = {"float32": b"f", "int64": b"q"}
# version (uint8), dtype code (1 char), element count (uint32), little endian: 6 bytes.
_STATE_HEADER = struct.Struct("<BcI")


@functools.lru_cache(maxsize=64)
def _state_header(dtype_name: str, size: int) -> bytes:
    return _STATE_HEADER.pack(STATE_FORMAT_VERSION, _DTYPE_CODES[dtype_name], size)


@functools.lru_cache(maxsize=16)
def _layout(dtype: np.dtype | type) -> tuple[np.dtype, np.dtype, str]:
    """``(dtype, its little-endian form, its name)``: computed once per dtype, because numpy
    builds a new dtype object (and looks its name up) on every call, for every event."""
    dt = np.dtype(dtype)
    return dt, dt.newbyteorder("<"), dt.name


def pack_state(state: np.ndarray, dtype: np.dtype | type, size: int) -> bytes:
    """Serialise a 1-D state: 6-byte header (version, dtype code, length) + raw little-endian.

    Raises ``EncoderStateError`` when ``state`` is not a 1-D array of ``size`` elements.
    """
    _, little, name = _layout(dtype)
    arr = np.asarray(state)
    if arr.ndim != 1 or arr.shape[0] != size:
        raise EncoderStateError(f"state has shape {arr.shape}, expected ({size},)")
    if arr.dtype != little:
        arr = arr.astype(little)
    return _state_header(name, size) + arr.tobytes()


def unpack_state(data: bytes, dtype: np.dtype | type, size: int) -> np.ndarray:
    """Inverse of :func:`pack_state`; raises ``EncoderStateError`` on any mismatch."""
    dt, little, name = _layout(dtype)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncoderStateError(f"state blob must be bytes, got {type(data).__name__}")
    blob = bytes(data)
    header = _state_header(name, size)
    if len(blob) == len(header) + size * dt.itemsize and blob.startswith(header):
        body = np.frombuffer(blob, dtype=little, offset=len(header))
        return body.astype(dt, copy=True)
    # slow path: say what is wrong
    if len(blob) < _STATE_HEADER.size:
        raise EncoderStateError(f"state blob too short ({len(blob)} bytes)")
    version, code, count = _STATE_HEADER.unpack_from(blob)
    if version != STATE_FORMAT_VERSION:
        raise EncoderStateError(f"state format version {version}, expected {STATE_FORMAT_VERSION}")
    if code != _DTYPE_CODES[dt.name]:
        raise EncoderStateError(f"state dtype code {code!r}, expected {_DTYPE_CODES[dt.name]!r}")
    if count != size:
        raise EncoderStateError(f"state has {count} elements, expected {size}")
    expected = len(header) + size * dt.itemsize
    raise EncoderStateError(f"state blob has {len(blob)} bytes, expected {expected}")


#: Rows per block of :func:`matmul_rows`.
ROW_BLOCK = 8


def matmul_rows(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` for ``(N, K)`` rows, each row's result bit for bit independent of the other
    rows.

    A BLAS picks its kernel, and so its order of additions, by the shape of the whole product
    (``N = 1`` goes to a matrix-vector routine, larger ``N`` to blocked ones), so the same
    session stepped in batches of different sizes gets results that differ in the last bits.
    The worker needs them equal: a replayed event whose state change was lost is computed
    again and its answer must be the same bytes. Here every product has the same shape:
    blocks of :data:`ROW_BLOCK` rows, the last one zero-padded, multiplied as one stack (a
    few microseconds more per call than one product).
    """
    n, k = x.shape
    blocks = np.zeros((n + (-n) % ROW_BLOCK, k), dtype=x.dtype)
    blocks[:n] = x
    # a stack of (ROW_BLOCK, K) matrices: numpy multiplies each with the same BLAS call
    out = np.matmul(blocks.reshape(-1, ROW_BLOCK, k), w)
    return out.reshape(-1, w.shape[1])[:n]


def stack_states(states: Sequence[np.ndarray], dtype: np.dtype | type, size: int) -> np.ndarray:
    """Stack 1-D states into a ``(B, size)`` array; raises ``EncoderStateError`` on a bad one."""
    if len(states) == 0:
        return np.zeros((0, size), dtype=dtype)
    try:
        batch = np.stack([np.asarray(s) for s in states])
    except ValueError as exc:
        raise EncoderStateError(f"states of different shapes: {exc}") from exc
    if batch.ndim != 2 or batch.shape[1] != size:
        raise EncoderStateError(f"states have shape {batch.shape[1:]}, expected ({size},)")
    if batch.dtype != np.dtype(dtype):
        if np.dtype(dtype).kind == "i" and batch.dtype.kind not in "iu":
            raise EncoderStateError(f"states have dtype {batch.dtype}, expected {dtype}")
        batch = batch.astype(dtype)
    return batch


def check_items(items: np.ndarray, n_items: int, batch: int) -> np.ndarray:
    """Validate a step's item indices: int, 1-D, one per state, in ``[0, n_items)``."""
    arr = np.asarray(items)
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise EncoderInputError(f"items has shape {arr.shape}, expected ({batch},)")
    if arr.size and arr.dtype.kind not in "iu":
        raise EncoderInputError(f"items must be integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n_items):
        raise EncoderInputError(f"item index out of range [0, {n_items})")
    return arr


def write_encoder_config(directory: Path, config: dict[str, Any]) -> None:
    """Write ``config.json`` (adds ``format_version``) into ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": CONFIG_FORMAT_VERSION, **config}
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_encoder_config(directory: Path) -> dict[str, Any]:
    """Read and check ``config.json``; raises ``EncoderError`` when missing or incompatible."""
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise EncoderError(f"no encoder config at {path}") from exc
    except json.JSONDecodeError as exc:
        raise EncoderError(f"encoder config {path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise EncoderError(f"encoder config {path} is not a JSON object")
    if config.get("format_version") != CONFIG_FORMAT_VERSION:
        raise EncoderError(
            f"encoder config {path} has format_version {config.get('format_version')!r}, "
            f"expected {CONFIG_FORMAT_VERSION}"
        )
    if config.get("name") not in ENCODER_NAMES:
        raise EncoderError(f"encoder config {path} names unknown encoder {config.get('name')!r}")
    return config


def check_item_vectors(vectors: np.ndarray) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 ``(n_items, dim)`` array, all finite."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EncoderError(f"item vectors must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise EncoderError("item vectors contain NaN or infinite values")
    return arr


def fit_item_vectors(vectors: np.ndarray, dim: int, seed: int = 0, rms: float = 0.1) -> np.ndarray:
    """Initial ``(n_items, dim)`` embedding table from collaborative vectors of any width.

    Wider vectors are projected onto their top ``dim`` right-singular directions, narrower
    ones are padded with small noise; the result is rescaled so its root-mean-square entry is
    ``rms`` and a little noise (1% of ``rms``) breaks ties between identical rows.
    """
    src = check_item_vectors(vectors).astype(np.float64)
    rng = np.random.default_rng(seed)
    n, d = src.shape
    if d > dim:
        _, _, vt = np.linalg.svd(src, full_matrices=False)
        out = src @ vt[:dim].T
    elif d < dim:
        scale = float(np.sqrt(np.mean(src**2))) or 1.0
        out = np.concatenate([src, rng.normal(0.0, 0.1 * scale, (n, dim - d))], axis=1)
    else:
        out = src.copy()
    current = float(np.sqrt(np.mean(out**2)))
    out = out * (rms / current) if current > 0 else np.zeros_like(out)
    out += rng.normal(0.0, 0.01 * rms, out.shape)
    return out.astype(np.float32)


def check_weight_arrays(
    kind: str, shapes: Mapping[str, tuple[int, ...]], weights: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """``weights`` (a ``state_dict`` as arrays) as C-contiguous float32 arrays of exactly the
    ``shapes`` keys and shapes, all finite; ``EncoderError`` naming the ``kind`` of encoder
    when they do not fit."""
    missing, unexpected = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
    if missing or unexpected:
        raise EncoderError(
            f"{kind} weights do not fit the config: missing {missing}, unexpected {unexpected}"
        )
    out: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        arr = np.ascontiguousarray(weights[key], dtype=np.float32)
        if arr.shape != shape:
            raise EncoderError(f"{kind} weight {key} has shape {arr.shape}, expected {shape}")
        if not np.isfinite(arr).all():
            raise EncoderError(f"{kind} weight {key} holds NaN or infinite values")
        out[key] = arr
    return out


def read_numpy_weights(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``weights.npz`` (no pickles); ``EncoderError`` when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as exc:
        raise EncoderError(f"no encoder weights at {path}") from exc
    except Exception as exc:  # zip / format errors of a corrupted or foreign file
        raise EncoderError(f"cannot read encoder weights {path}: {exc}") from exc


def write_numpy_weights(path: Path, weights: Mapping[str, np.ndarray]) -> None:
    """Write ``weights`` to ``path`` (``.npz``, uncompressed) via a temporary file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **weights)
    os.replace(tmp, path)


def load_weights(directory: Path) -> dict[str, Any]:
    """Load ``weights.pt`` (a torch ``state_dict``) safely: ``weights_only=True``, on the CPU."""
    import torch  # local: the protocol module itself does not need torch

    path = Path(directory) / WEIGHTS_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise EncoderError(f"no encoder weights at {path}") from exc
    except Exception as exc:  # pickle / zip errors of a corrupted or foreign file
        raise EncoderError(f"cannot read encoder weights {path}: {exc}") from exc
