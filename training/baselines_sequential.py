"""Sequence-aware session baselines: sequential rules (SR) and VSTAN.

Both follow the ranking rule of :class:`training.baselines.SessionBaseline` (heard items
excluded, popularity tie-break and fill) and are tuned like the others, on training data only
(:func:`training.baselines.tune_baseline`, grids in :data:`training.baselines.DEFAULT_GRIDS`).

``sr`` (Ludewig & Jannach 2018; session-rec ``SequentialRules``)
    For every pair of plays ``a`` at position ``i`` and ``b`` at position ``j`` of a training
    session with ``1 <= d = j - i <= steps`` and ``a != b``, the rule ``a -> b`` gains
    ``w(d)``:

    - ``div``: ``w(d) = 1 / d``;
    - ``linear``: ``w(d) = max(0, 1 - 0.1 (d - 1))`` (adjacent plays weigh 1; session-rec's
      ``1 - 0.1 d`` is the same decay shifted by one step, so ranks differ only through
      ``steps``);
    - ``same``: ``w(d) = 1``.

    Summed over all sessions the rules form a CSR ``(n_items, n_items)``; with ``pruning = N >
    0`` each item keeps its ``N`` heaviest rules (ties by item index). The score of candidate
    ``b`` for a prefix is the weight of the rule ``last played item -> b``. Default grid (9
    points): ``steps`` in ``5, 10, 15`` x ``weighting`` in ``div, linear, same``, ``pruning =
    20`` (session-rec's default).

``vstan`` (Ludewig et al. 2021, "Empirical analysis of session-based recommendation
algorithms"; STAN: Garg et al., SIGIR 2019; as session-rec's ``VSKNN_STAN``)
    Session-kNN where, for a prefix ``s`` of ``L`` plays:

    - (a) the item at position ``p`` (1-based; a repeated item keeps its latest position)
      weighs ``w_p = exp((p - L) / lambda_spw)``, and the similarity to a training session
      ``n`` is the cosine ``sum_{i in s & n} w_i / (sqrt(sum_{i in s} w_i^2) sqrt(|n|))``;
    - (b) recency: the similarity is multiplied by ``exp(-(N - 1 - idx_n) / (lambda_snh N))``
      where ``idx_n`` is ``n``'s index among the ``N`` training sessions (oldest first). The
      session ORDER is our clock: imported and generated sets do not all carry meaningful
      times, and ``exp(-(t - t_n) / lambda)`` ranks neighbours by ``t_n`` alone (the query
      time ``t`` is a common factor), so only the unit differs: ``lambda_snh`` is a share of
      the training sessions (``0.1``: a neighbour 10% of the history older weighs ``1/e``
      less); ``0`` turns the decay off (the default; the candidates are already the
      ``sample`` most recent sessions sharing an item);
    - the ``k`` most similar among the ``sample`` most recent sessions sharing an item vote;
    - (c) an item ``j`` of neighbour ``n`` scores
      ``sim(s, n) * exp(-|pos_n(j) - pos_n(i*)| / lambda_inh) * ipw(s, n) * (1 + lambda_idf
      idf(j))``, where ``pos_n`` is the item's last 1-based position in ``n``, ``i*`` the item
      of ``n`` shared with ``s`` that comes last in ``n``, ``ipw(s, n) = exp((p* - L) /
      lambda_ipw)`` with ``p*`` the latest prefix position holding an item of ``n``
      (``lambda_ipw`` defaults to ``lambda_spw``);
    - (d) ``idf(j) = log(N / df_j)`` with ``df_j`` the number of training sessions holding
      ``j`` (session-rec counts plays; document frequency keeps it non-negative). Like
      session-rec it multiplies the candidate's score (``lambda_idf = 0``: off).

    Default grid (12 points): ``(k, sample)`` in ``(100, 1000), (500, 5000)`` x ``lambda_spw``
    in ``4, 10, 25`` x ``lambda_inh`` in ``6, 20``, with ``lambda_ipw = lambda_spw``,
    ``lambda_idf = 1`` and no recency decay. On the newest training sessions of
    ``lastfm1k-lessr`` (11 plays per session on average), a grid from session-rec's defaults
    (``lambda_spw = 1.02``, ``lambda_inh = 2.05``) up to ``10`` and ``6`` picked its largest
    values, hence these flatter ones.

    All of it runs per batch of prefixes as arrays (the neighbour search of
    :class:`training.baselines.SessionKnnBaseline`, then one pass over the neighbours' items).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from training.baselines import (
    SessionBaseline,
    SessionKnnBaseline,
    flat_sessions,
    last_item_scores,
)
from training.errors import DataError

log = logging.getLogger(__name__)

RuleWeighting = Literal["div", "linear", "same"]
RULE_WEIGHTINGS: tuple[RuleWeighting, ...] = ("div", "linear", "same")


def rule_weight(distance: np.ndarray | int, weighting: RuleWeighting) -> np.ndarray:
    """``w(d)`` of the module doc for play distances ``d >= 1``."""
    d = np.asarray(distance, dtype=np.float64)
    if weighting == "div":
        return 1.0 / d
    if weighting == "linear":
        return np.maximum(0.0, 1.0 - 0.1 * (d - 1.0))
    if weighting == "same":
        return np.ones_like(d)
    raise DataError(f"unknown rule weighting {weighting!r}; choose from {list(RULE_WEIGHTINGS)}")


def sequential_rules(
    sessions: Sequence[Sequence[int]],
    n_items: int,
    steps: int,
    weighting: RuleWeighting,
    pruning: int = 0,
) -> sp.csr_matrix:
    """Rule weights ``R[a, b] = sum over sessions and pairs (a before b, d <= steps) of
    w(d)`` as a CSR ``(n_items, n_items)`` float64 without diagonal; with ``pruning > 0``
    each row keeps its ``pruning`` largest entries (ties by column)."""
    if steps < 1 or pruning < 0:
        raise DataError(f"steps must be >= 1 and pruning >= 0, got {steps}, {pruning}")
    empty = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    items, owner, _ = flat_sessions(sessions, n_items)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for d in range(1, steps + 1):
        weight = float(rule_weight(d, weighting))
        if weight <= 0:
            break  # linear weights only fall from here on
        same = owner[:-d] == owner[d:]
        if not same.any():
            break
        a, b = items[:-d][same], items[d:][same]
        keep = a != b
        rows.append(a[keep])
        cols.append(b[keep])
        vals.append(np.full(int(keep.sum()), weight))
    if not rows:
        return empty
    mat = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )
    mat.sum_duplicates()
    if pruning:
        mat = _top_per_row(mat, pruning)
    return mat


def _top_per_row(mat: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """The ``n`` largest entries of every row of a canonical CSR (ties by column)."""
    co = mat.tocoo()
    row, col, val = co.row.astype(np.int64), co.col.astype(np.int64), co.data
    order = np.lexsort((col, -val, row))
    row, col, val = row[order], col[order], val[order]
    start = np.searchsorted(row, np.arange(mat.shape[0]))
    keep = (np.arange(row.size) - start[row]) < n
    return sp.csr_matrix((val[keep], (row[keep], col[keep])), shape=mat.shape)


class SequentialRulesBaseline(SessionBaseline):
    """SR: the weights of the rules from the last played item (module doc)."""

    name = "sr"

    def __init__(
        self,
        n_items: int,
        *,
        steps: int = 10,
        weighting: RuleWeighting = "div",
        pruning: int = 20,
    ) -> None:
        super().__init__(n_items)
        if weighting not in RULE_WEIGHTINGS:
            raise DataError(f"unknown rule weighting {weighting!r}")
        if steps < 1 or pruning < 0:
            raise DataError(f"steps must be >= 1 and pruning >= 0, got {steps}, {pruning}")
        self.steps, self.weighting, self.pruning = int(steps), weighting, int(pruning)
        self.rules = sp.csr_matrix((n_items, n_items), dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {"steps": self.steps, "weighting": self.weighting, "pruning": self.pruning}

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        self.rules = sequential_rules(
            sessions, self.n_items, self.steps, self.weighting, self.pruning
        )

    def scores(self, plays: Sequence[Sequence[int]]) -> np.ndarray:
        return last_item_scores(self.rules, plays)


def _last_positions(codes: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``codes`` (ascending) and the position of the last occurrence of each."""
    uniq, first_rev = np.unique(codes[::-1], return_index=True)
    return uniq, positions[::-1][first_rev].astype(np.float64)


def _expand_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR rows ``rows`` (each non-empty): the entry indices of all of them, in order,
    and the start of each row's run in that array."""
    counts = indptr[rows + 1] - indptr[rows]
    starts = np.cumsum(counts) - counts
    offset = np.repeat(indptr[rows] - starts, counts)
    entries = np.arange(int(counts.sum()), dtype=np.int64) + offset
    return entries, starts


class VstanBaseline(SessionKnnBaseline):
    """VSTAN: sequence- and (order-)time-aware session-kNN (module doc)."""

    name = "vstan"

    def __init__(
        self,
        n_items: int,
        *,
        k: int = 100,
        sample: int = 5000,
        lambda_spw: float = 4.0,
        lambda_snh: float = 0.0,
        lambda_inh: float = 2.05,
        lambda_ipw: float | None = None,
        lambda_idf: float = 1.0,
    ) -> None:
        super().__init__(n_items, k=k, sample=sample, weighting="none", similarity="cosine")
        self.name = "vstan"
        if lambda_spw <= 0 or lambda_inh <= 0 or (lambda_ipw is not None and lambda_ipw <= 0):
            raise DataError("lambda_spw, lambda_inh and lambda_ipw must be > 0")
        if lambda_snh < 0 or lambda_idf < 0:
            raise DataError("lambda_snh and lambda_idf must be >= 0")
        self.lambda_spw, self.lambda_snh = float(lambda_spw), float(lambda_snh)
        self.lambda_inh, self.lambda_idf = float(lambda_inh), float(lambda_idf)
        self.lambda_ipw = float(lambda_ipw) if lambda_ipw is not None else self.lambda_spw
        self._last_pos = np.zeros(0, dtype=np.float64)
        self.idf = np.zeros(n_items, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "sample": self.sample,
            "lambda_spw": self.lambda_spw,
            "lambda_snh": self.lambda_snh,
            "lambda_inh": self.lambda_inh,
            "lambda_ipw": self.lambda_ipw,
            "lambda_idf": self.lambda_idf,
        }

    def _prefix_weights(self, length: int) -> np.ndarray:
        """``w_p = exp((p - length) / lambda_spw)`` for ``p = 1..length``."""
        return np.exp((np.arange(1, length + 1, dtype=np.float64) - length) / self.lambda_spw)

    def _fit(self, sessions: Sequence[Sequence[int]]) -> None:
        super()._fit(sessions)
        self._x.sort_indices()  # canonical: the columns of a row ascending
        n = len(sessions)
        items, owner, pos = flat_sessions(sessions, self.n_items)
        # the last position of each (session, item), in CSR order (row, then column)
        uniq, last_pos = _last_positions(owner * self.n_items + items, pos + 1)
        if uniq.size != self._x.nnz:  # pragma: no cover - binary_session_matrix's layout
            raise DataError("session matrix and positions disagree")
        self._last_pos = last_pos
        df = np.asarray(self._x.getnnz(axis=0), dtype=np.float64)
        self.idf = np.where(df > 0, np.log(max(n, 1) / np.maximum(df, 1.0)), 0.0)
        if self.lambda_snh > 0 and n:
            age = (n - 1 - np.arange(n, dtype=np.float64)) / (self.lambda_snh * n)
            self._recency = np.exp(-age)
        else:
            self._recency = None

    def scores(self, plays: Sequence[Sequence[int]]) -> np.ndarray:
        """Dense ``(B, n_items)`` VSTAN scores (module doc, (c) and (d))."""
        b, n_items = len(plays), self.n_items
        nb = self.neighbours(plays).tocoo()
        if not nb.nnz:
            return np.zeros((b, n_items), dtype=np.float64)
        pair_row, pair_sess, pair_sim = nb.row.astype(np.int64), nb.col.astype(np.int64), nb.data
        # the prefixes' distinct items with their latest 1-based position, as sorted codes
        lengths = np.asarray([len(p) for p in plays], dtype=np.int64)
        flat, owner, pos = flat_sessions(plays, n_items)
        prefix_codes, prefix_pos = _last_positions(owner * n_items + flat, pos + 1)
        # every item of every neighbour session, grouped by (prefix, neighbour) pair
        entries, starts = _expand_rows(self._x.indptr.astype(np.int64), pair_sess)
        counts = np.diff(np.append(starts, entries.size))
        row = np.repeat(pair_row, counts)
        item = self._x.indices[entries].astype(np.int64)
        npos = self._last_pos[entries]
        code = row * n_items + item
        at = np.minimum(np.searchsorted(prefix_codes, code), prefix_codes.size - 1)
        shared = prefix_codes[at] == code
        pos_star = np.maximum.reduceat(np.where(shared, npos, 0.0), starts)
        p_star = np.maximum.reduceat(np.where(shared, prefix_pos[at], 0.0), starts)
        ipw = np.exp((p_star - lengths[pair_row]) / self.lambda_ipw)
        weight = np.repeat(pair_sim * ipw, counts) * np.exp(
            -np.abs(npos - np.repeat(pos_star, counts)) / self.lambda_inh
        )
        if self.lambda_idf > 0:
            weight = weight * (1.0 + self.lambda_idf * self.idf[item])
        out = np.bincount(code, weights=weight, minlength=b * n_items)
        return out.reshape(b, n_items)


#: The constructors :func:`training.baselines.make_baseline` looks up by name.
SEQUENTIAL_BASELINES: dict[str, Callable[..., SessionBaseline]] = {
    "sr": SequentialRulesBaseline,
    "vstan": VstanBaseline,
}
