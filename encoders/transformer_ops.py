"""The numpy maths of :class:`encoders.transformer.TransformerEncoder`: the pre-LayerNorm
blocks of ``encoders.transformer_model.SasRecModel`` at inference (dropout is the identity),
float32 throughout, batched over the rows with numpy matmuls.

A block is ``x = x + attn_out(attention(LN1(x)))`` then ``x = x + W2 GELU(W1 LN2(x) + b1) +
b2``. LayerNorm as ``nn.LayerNorm`` (biased variance, eps ``1e-5``). Attention: the fused
``qkv`` linear's outputs are ``q``, ``k``, ``v`` (``D`` each, heads consecutive), computed here
as three matmuls (contiguous per-head slices multiply faster); scores are scaled by
``1 / sqrt(head_dim)`` (folded into the ``q`` weights) and masked additively (``-inf``);
softmax subtracts the row maximum. GELU is the exact ``x * (1 + erf(x / sqrt(2))) / 2`` of
``nn.GELU()``, with a float32 rational approximation of ``erf`` (numpy has none, and the
worker must not load scipy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from encoders.base import matmul_rows

#: ``nn.LayerNorm``'s default epsilon.
LAYER_NORM_EPS = 1e-5
#: Rows of the feed-forward layer computed at once (keeps its hidden activations in cache).
FFN_CHUNK_ROWS = 1024

# GELU(x) = x * (1/2 + erf(x / sqrt(2)) / 2), with erf(z) = z * P(z^2) / Q(z^2) on [-4, 4]
# (float32 erf is +-1 outside): the rational approximation of Eigen's
# ``generic_fast_erf_float`` (absolute error below 5e-7 against ``math.erf``). Coefficients,
# highest power first, of P and Q; below they are rescaled so that the polynomials take
# x^2 directly and the numerator includes the 1/2: GELU(x) = x * (1/2 + u * P'(u^2) / Q'(u^2))
# with u = x clipped to [-4 sqrt(2), 4 sqrt(2)].
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_GELU_P = tuple(
    np.float32(c * 0.5 / math.sqrt(2.0) * 0.5 ** (len(_ERF_P) - 1 - i))
    for i, c in enumerate(_ERF_P)
)
_GELU_Q = tuple(np.float32(c * 0.5 ** (len(_ERF_Q) - 1 - i)) for i, c in enumerate(_ERF_Q))
_GELU_CLIP = np.float32(4.0 * math.sqrt(2.0))


def _polynomial(u2: np.ndarray, coefficients: Sequence[np.float32]) -> np.ndarray:
    """Horner evaluation of ``coefficients`` (highest power first) at ``u2``, a new array."""
    out = u2 * coefficients[0]
    out += coefficients[1]
    for c in coefficients[2:]:
        out *= u2
        out += c
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU ``x * (1 + erf(x / sqrt(2))) / 2`` as ``nn.GELU()``, float32, a new
    array (absolute error below ``1e-6 * max(1, |x|)``)."""
    u = np.clip(x, -_GELU_CLIP, _GELU_CLIP)
    u2 = u * u
    out = _polynomial(u2, _GELU_P)
    out *= u
    out /= _polynomial(u2, _GELU_Q)
    out += 0.5
    np.maximum(out, 0.0, out=out)  # the approximation dips below -1 in the far negative tail
    out *= x
    return out


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``nn.LayerNorm`` over the last axis (biased variance, eps ``1e-5``), a new array."""
    out = x - x.mean(axis=-1, keepdims=True)
    var = np.einsum("...i,...i->...", out, out)[..., None]
    var *= np.float32(1.0 / x.shape[-1])
    var += LAYER_NORM_EPS
    np.sqrt(var, out=var)
    out /= var
    out *= weight
    out += bias
    return out


def softmax_(scores: np.ndarray) -> np.ndarray:
    """In-place softmax over the last axis (row maximum subtracted); returns ``scores``."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


#: A layer's ``(weight, bias)``; a linear layer's weight is laid out for ``x @ weight``.
Layer = tuple[np.ndarray, np.ndarray]


class BlockWeights(NamedTuple):
    """One block's weights, each linear layer as ``(W, b)`` for ``x @ W + b``; the fused
    ``qkv`` layer is split in three and ``query`` is pre-scaled by ``1 / sqrt(head_dim)``."""

    ln1: Layer  # LayerNorm
    query: Layer  # (D, D), (D,)
    key: Layer
    value: Layer
    attn_out: Layer
    ln2: Layer
    ffn_in: Layer  # (D, F), (F,)
    ffn_out: Layer  # (F, D), (D,)


def block_weights(weights: Mapping[str, np.ndarray], k: int, heads: int) -> BlockWeights:
    """Block ``k``'s :class:`BlockWeights` from the ``state_dict`` arrays."""
    p = f"blocks.{k}."

    def linear(w: np.ndarray, b: np.ndarray, scale: float = 1.0) -> Layer:
        w, b = w.T * np.float32(scale), b * np.float32(scale)
        return np.ascontiguousarray(w, dtype=np.float32), b.astype(np.float32)

    w_qkv, b_qkv = weights[p + "qkv.weight"], weights[p + "qkv.bias"]
    d = w_qkv.shape[1]
    return BlockWeights(
        ln1=(weights[p + "ln1.weight"], weights[p + "ln1.bias"]),
        query=linear(w_qkv[:d], b_qkv[:d], 1.0 / math.sqrt(d // heads)),
        key=linear(w_qkv[d : 2 * d], b_qkv[d : 2 * d]),
        value=linear(w_qkv[2 * d :], b_qkv[2 * d :]),
        attn_out=linear(weights[p + "attn_out.weight"], weights[p + "attn_out.bias"]),
        ln2=(weights[p + "ln2.weight"], weights[p + "ln2.bias"]),
        ffn_in=linear(weights[p + "ffn.0.weight"], weights[p + "ffn.0.bias"]),
        ffn_out=linear(weights[p + "ffn.2.weight"], weights[p + "ffn.2.bias"]),
    )


def _linear(x: np.ndarray, layer: Layer) -> np.ndarray:
    """``x @ W + b``, a new array (each row independent of the others:
    :func:`encoders.base.matmul_rows`)."""
    out = matmul_rows(x, layer[0])
    out += layer[1]
    return out


def _residual_ffn(x: np.ndarray, block: BlockWeights) -> np.ndarray:
    """``x + FFN(LN2(x))`` for ``(N, D)`` rows, in chunks of :data:`FFN_CHUNK_ROWS`."""
    out = np.empty_like(x)
    for start in range(0, x.shape[0], FFN_CHUNK_ROWS):
        rows = x[start : start + FFN_CHUNK_ROWS]
        chunk = _linear(gelu(_linear(layer_norm(rows, *block.ln2), block.ffn_in)), block.ffn_out)
        chunk += rows
        out[start : start + FFN_CHUNK_ROWS] = chunk
    return out


def _heads(x: np.ndarray, b: int, heads: int) -> np.ndarray:
    """``(B * T, D)`` -> ``(B, heads, T, head_dim)`` (a view)."""
    return x.reshape(b, -1, heads, x.shape[-1] // heads).transpose(0, 2, 1, 3)


def block_forward(
    x: np.ndarray, key_bias: np.ndarray, block: BlockWeights, heads: int
) -> np.ndarray:
    """One block over every position: ``x`` ``(B, T, D)``, additive mask ``(B, 1, T, T)``
    (0 where a query may attend, ``-inf`` elsewhere) -> ``(B, T, D)``."""
    b, t, d = x.shape
    normed = layer_norm(x, *block.ln1).reshape(b * t, d)
    q, k, v = (
        _heads(_linear(normed, layer), b, heads) for layer in (block.query, block.key, block.value)
    )
    scores = q @ k.swapaxes(-1, -2)  # (B, H, T, T)
    scores += key_bias
    att = softmax_(scores) @ v  # (B, H, T, head_dim)
    out = _linear(att.transpose(0, 2, 1, 3).reshape(b * t, d), block.attn_out)
    out += x.reshape(b * t, d)
    return _residual_ffn(out, block).reshape(b, t, d)


def block_last(x: np.ndarray, last: np.ndarray, block: BlockWeights, heads: int) -> np.ndarray:
    """One block at position ``last[b]`` of each row only: ``(B, T, D)`` -> ``(B, D)``.

    Keys and values cover the row; the query (a real position) attends to positions
    ``0 .. last[b]``.
    """
    b, t, d = x.shape
    normed = layer_norm(x, *block.ln1)
    rows = np.arange(b)
    q = _linear(normed[rows, last], block.query).reshape(b, heads, 1, -1)
    k, v = (
        _heads(_linear(normed.reshape(b * t, d), layer), b, heads)
        for layer in (block.key, block.value)
    )
    scores = q @ k.swapaxes(-1, -2)  # (B, H, 1, T)
    scores += np.where(np.arange(t) <= last[:, None], np.float32(0.0), np.float32(-np.inf))[
        :, None, None
    ]
    att = softmax_(scores) @ v  # (B, H, 1, head_dim)
    out = _linear(att.reshape(b, d), block.attn_out)
    out += x[rows, last]
    return _residual_ffn(out, block)


def attention_bias(counts: np.ndarray, t: int) -> np.ndarray:
    """Additive ``(B, 1, T, T)`` mask of right-padded rows with ``counts`` real items:
    ``0`` where query ``i`` may attend key ``j`` (``j <= i`` and ``j`` real, or ``j == i``),
    ``-inf`` elsewhere."""
    pos = np.arange(t)
    allowed = (pos[None, :] <= pos[:, None])[None] & (pos < counts[:, None])[:, None, :]
    allowed |= np.eye(t, dtype=bool)[None]
    return np.where(allowed, np.float32(0.0), np.float32(-np.inf))[:, None]
