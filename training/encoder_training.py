"""Next-track training of the learned session encoders (``lstm`` and ``transformer``).

Every prefix of every training session predicts its next item. The loss is the full softmax
cross-entropy over the catalogue when it has at most ``full_softmax_max_items`` items (exact;
default 10k: its cost grows with the catalogue, see :class:`EncoderTrainingConfig`), otherwise
a sampled softmax with shared
negatives drawn from the smoothed target distribution (``count ** 0.75``), log-Q correction and
accidental hits removed. Validation (a seeded share of whole sessions) always uses the exact
full softmax and reports HR@k / MRR@k over all next-item predictions; early stopping keeps the
best epoch's weights.

Models live in ``encoders.lstm_model`` / ``encoders.transformer_model``, the data iterator in
:mod:`training.sequences`; this module holds only the loop and the loss maths. A trained model
is returned as its numpy encoder, :class:`encoders.lstm.LstmEncoder` or
:class:`encoders.transformer.TransformerEncoder` (both served without torch).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from encoders.base import SessionEncoder, check_item_vectors
from encoders.lstm import GruModelConfig
from encoders.lstm_model import GruSessionModel
from encoders.lstm_model import encoder_from_model as lstm_encoder
from encoders.torch_io import load_model_weights
from encoders.transformer import TransformerModelConfig
from encoders.transformer_model import SasRecModel
from encoders.transformer_model import encoder_from_model as transformer_encoder
from training.errors import DataError, TrainingError
from training.sequences import (
    IGNORE_TARGET,
    count_batches,
    heard_matrix,
    iterate_batches,
    prepare_sequences,
    split_sessions,
    target_counts,
)

logger = logging.getLogger(__name__)

TrainableEncoder = Literal["lstm", "transformer"]
LossMode = Literal["auto", "full", "sampled"]
MonitorMetric = Literal["val_loss", "val_hr"]

#: Rows of logits materialised at once during evaluation.
_EVAL_CHUNK = 4096


@dataclass(frozen=True)
class EncoderTrainingConfig:
    """Hyperparameters of :func:`train_encoder` (defaults tuned for ~20k items on 2 cores).

    Model: ``emb_dim`` is the item-embedding (= query) width for both encoders;
    ``hidden_dim`` is the GRU hidden size (``lstm``) or the feed-forward width
    (``transformer``); ``num_layers`` GRU layers; ``num_blocks`` / ``num_heads`` Transformer
    blocks and heads; ``tied`` shares input and output item embeddings; ``init_scale`` is the
    RMS entry of the initial item table (fitted from the CF vectors); ``max_len`` is the
    training truncation and the Transformer's window.
    Optimisation: AdamW with ``lr`` and ``weight_decay``, gradient-norm clip ``grad_clip``
    (0 = off), ``dropout``, at most ``epochs`` epochs of ``batch_size`` sessions and at most
    ``max_steps`` optimiser steps in all (``None``: no such bound; the last epoch then ends
    part-way and is validated like the others). The step bound keeps training time in
    proportion at scale without depending on the machine's speed: 4,000 steps is about 6.5
    epochs of lastfm1k-lessr's 1M plays (~2.5 min per encoder on 2 cores) and more than the
    15 epochs of a 10k-session set.
    Loss: ``loss="full"`` (exact softmax), ``"sampled"`` (``negatives`` shared negatives per
    batch) or ``"auto"`` (full up to ``full_softmax_max_items`` items). At 20k items the full
    softmax costs ~4x more per epoch than 2048 sampled negatives for the same held-out HR@20,
    hence the 10k default.
    Validation: ``validation_share`` of the sessions (at most ``max_val_sessions``), split
    with ``seed``; early stopping on ``monitor`` (``"val_hr"``: HR@``eval_k``, or
    ``"val_loss"``) after ``patience`` epochs without an improvement of ``min_delta``.
    Repeats: the worker never recommends a track already heard in the session, so with
    ``skip_repeats`` targets heard earlier in their session are left out of the loss and the
    validation, and with ``exclude_heard`` validation ranks only unheard items (as the
    evaluator does). Small data: the batch shrinks so an epoch has at least
    ``min_steps_per_epoch`` optimiser steps.
    ``threads`` is the torch intra-op thread count during training (restored afterwards).
    """

    emb_dim: int = 64
    hidden_dim: int = 128
    num_layers: int = 1
    num_blocks: int = 2
    num_heads: int = 1
    tied: bool = True
    init_scale: float = 0.1
    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    dropout: float = 0.2
    max_len: int = 50
    loss: LossMode = "auto"
    full_softmax_max_items: int = 10_000
    negatives: int = 2048
    skip_repeats: bool = True
    exclude_heard: bool = True
    min_steps_per_epoch: int = 20
    validation_share: float = 0.1
    max_val_sessions: int = 3000
    patience: int = 2
    monitor: MonitorMetric = "val_hr"
    min_delta: float = 1e-4
    grad_clip: float = 5.0
    eval_k: int = 20
    seed: int = 0
    threads: int = 2
    max_steps: int | None = 4000

    def __post_init__(self) -> None:
        positive = ("emb_dim", "hidden_dim", "num_layers", "num_blocks", "num_heads", "epochs")
        counts = ("batch_size", "max_len", "negatives", "eval_k", "threads", "min_steps_per_epoch")
        for name in (*positive, *counts):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.init_scale <= 0 or self.weight_decay < 0 or self.patience < 0:
            raise DataError("lr and init_scale must be > 0, weight_decay and patience >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise DataError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_steps is not None and self.max_steps < 1:
            raise DataError(f"max_steps must be >= 1 or None, got {self.max_steps}")


@dataclass
class TrainingReport:
    """What happened during training; :meth:`to_dict` is JSON-serialisable."""

    name: str
    loss_mode: Literal["full", "sampled"]
    n_items: int
    n_train_sessions: int
    n_val_sessions: int
    n_train_events: int
    n_val_events: int
    batch_size: int = 0
    epochs_run: int = 0
    best_epoch: int = 0
    stopped_early: bool = False
    #: Optimiser steps taken; ``stopped_at_max_steps`` when ``max_steps`` ended training.
    steps: int = 0
    stopped_at_max_steps: bool = False
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_hr: list[float] = field(default_factory=list)
    val_mrr: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    eval_k: int = 20
    best_val_loss: float | None = None
    best_val_hr: float | None = None
    best_val_mrr: float | None = None
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (floats rounded to 6 digits)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float):
                return round(value, 6) if math.isfinite(value) else None
            if isinstance(value, list):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return clean(asdict(self))


# ------------------------------------------------------------------------------------------
# Loss and metric maths (pure functions of tensors)
# ------------------------------------------------------------------------------------------


def full_softmax_loss(
    queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of ``queries (N, D) @ items (n_items, D).T`` against ``targets (N,)``."""
    return F.cross_entropy(queries @ items.T, targets)


def sampled_softmax_loss(
    queries: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    negatives: torch.Tensor,
    log_q: torch.Tensor,
) -> torch.Tensor:
    """Sampled softmax with shared ``negatives (K,)``, log-Q correction, accidental hits removed.

    ``log_q`` is ``log(K * q)`` per item, the log expected count of each item in a sample.
    """
    pos = (queries * items[targets]).sum(-1) - log_q[targets]
    neg = queries @ items[negatives].T - log_q[negatives][None, :]
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos[:, None], neg], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def exclude_items(logits: torch.Tensor, heard: torch.Tensor) -> torch.Tensor:
    """``logits (N, n_items)`` with ``-inf`` at the ``heard (N, T)`` indices (``n_items`` = pad)."""
    extended = torch.cat([logits, logits.new_zeros(len(logits), 1)], dim=1)
    return extended.scatter_(1, heard, float("-inf"))[:, :-1]


def rank_metrics(logits: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[float, float]:
    """Sums of HR@k and MRR@k over rows (rank = number of items scored above the target)."""
    target_scores = logits.gather(1, targets[:, None])
    rank = (logits > target_scores).sum(1)
    hit = rank < k
    return float(hit.sum()), float(torch.where(hit, 1.0 / (rank + 1.0), 0.0).sum())


# ------------------------------------------------------------------------------------------
# Model construction and evaluation
# ------------------------------------------------------------------------------------------


def build_model(
    name: TrainableEncoder, init_item_vectors: np.ndarray, config: EncoderTrainingConfig
) -> GruSessionModel | SasRecModel:
    """A fresh model whose item embeddings start from ``init_item_vectors`` (any width)."""
    n_items = int(init_item_vectors.shape[0])
    if name == "lstm":
        gru = GruModelConfig(
            n_items=n_items,
            emb_dim=config.emb_dim,
            hidden_dim=config.hidden_dim,
            num_layers=config.num_layers,
            dropout=config.dropout,
            tied=config.tied,
        )
        model: GruSessionModel | SasRecModel = GruSessionModel(gru)
    elif name == "transformer":
        sas = TransformerModelConfig(
            n_items=n_items,
            emb_dim=config.emb_dim,
            num_blocks=config.num_blocks,
            num_heads=config.num_heads,
            ffn_dim=config.hidden_dim,
            max_len=config.max_len,
            dropout=config.dropout,
            tied=config.tied,
        )
        model = SasRecModel(sas)
    else:
        raise TrainingError(f"cannot train encoder {name!r}; expected 'lstm' or 'transformer'")
    model.reset_item_embeddings(init_item_vectors, seed=config.seed, rms=config.init_scale)
    return model


@torch.inference_mode()
def evaluate_model(
    model: GruSessionModel | SasRecModel,
    sequences: Sequence[np.ndarray],
    batch_size: int,
    k: int = 20,
    skip_repeats: bool = True,
    exclude_heard: bool = True,
) -> tuple[float, float, float]:
    """Exact full-softmax (mean loss, HR@k, MRR@k) over every next-item prediction.

    ``skip_repeats`` leaves out targets heard earlier in the session; ``exclude_heard`` ranks
    only items not heard so far (the loss is the plain softmax cross-entropy either way).
    """
    was_training = model.training
    model.eval()
    items = model.item_weights()
    loss_sum = hit_sum = rr_sum = 0.0
    count = 0
    pad = model.pad_index
    for batch in iterate_batches(sequences, batch_size, pad, skip_repeats=skip_repeats):
        mask_np = batch.targets != IGNORE_TARGET
        if not mask_np.any():
            continue
        out = model(torch.from_numpy(batch.inputs))
        mask = torch.from_numpy(mask_np)
        queries, targets = out[mask], torch.from_numpy(batch.targets)[mask]
        heard = torch.from_numpy(heard_matrix(batch.inputs, pad)[mask_np])
        for start in range(0, len(targets), _EVAL_CHUNK):
            stop = start + _EVAL_CHUNK
            q, t = queries[start:stop], targets[start:stop]
            logits = q @ items.T
            loss_sum += float(F.cross_entropy(logits, t, reduction="sum"))
            if exclude_heard:
                logits = exclude_items(logits, heard[start:stop])
            hits, rrs = rank_metrics(logits, t, k)
            hit_sum, rr_sum, count = hit_sum + hits, rr_sum + rrs, count + len(t)
    model.train(was_training)
    if count == 0:
        return math.nan, math.nan, math.nan
    return loss_sum / count, hit_sum / count, rr_sum / count


def effective_batch_size(n_sessions: int, batch_size: int, min_steps: int) -> int:
    """``batch_size``, shrunk so that an epoch over ``n_sessions`` has ``min_steps`` batches."""
    return max(1, min(batch_size, math.ceil(n_sessions / max(min_steps, 1))))


def _is_better(value: float, best: float | None, metric: MonitorMetric, min_delta: float) -> bool:
    if best is None:
        return True
    if metric == "val_loss":
        return value < best - min_delta
    return value > best + min_delta


# ------------------------------------------------------------------------------------------
# The training loop
# ------------------------------------------------------------------------------------------


def train_encoder(
    name: TrainableEncoder,
    sessions: list[list[int]],
    init_item_vectors: np.ndarray,
    config: EncoderTrainingConfig,
    progress: bool = True,
    *,
    init_weights: Mapping[str, np.ndarray] | None = None,
) -> tuple[SessionEncoder, TrainingReport]:
    """Train a next-track model on ``sessions`` and wrap it as a session encoder.

    ``sessions`` are lists of item indices (plays only, chronological); sessions shorter than
    two items are skipped, longer ones keep their last ``max_len + 1`` items. The item table
    has ``len(init_item_vectors)`` rows, initialised from those vectors, unless
    ``init_weights`` (a model of the same shape, e.g. an earlier fit's ``weights.pt``) give
    every weight's starting value: training then goes on from there. Raises ``DataError``
    when no session is usable and ``TrainingError`` when the loss diverges.
    """
    started = time.perf_counter()
    vectors = check_item_vectors(init_item_vectors)
    n_items = vectors.shape[0]
    sequences = prepare_sequences(sessions, config.max_len, n_items)
    train, val = split_sessions(
        sequences, config.validation_share, config.seed, config.max_val_sessions
    )
    if not train:
        raise DataError("no training session has two or more plays")
    batch_size = effective_batch_size(len(train), config.batch_size, config.min_steps_per_epoch)
    use_full = config.loss == "full" or (
        config.loss == "auto" and n_items <= config.full_softmax_max_items
    )
    report = TrainingReport(
        name=name,
        loss_mode="full" if use_full else "sampled",
        n_items=n_items,
        n_train_sessions=len(train),
        n_val_sessions=len(val),
        n_train_events=sum(len(s) - 1 for s in train),
        n_val_events=sum(len(s) - 1 for s in val),
        batch_size=batch_size,
        eval_k=config.eval_k,
        config=asdict(config),
    )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        model = _fit(name, train, val, vectors, config, report, use_full, progress, init_weights)
    finally:
        torch.set_num_threads(previous_threads)
    report.seconds = time.perf_counter() - started
    logger.info(
        "trained %s: %d epochs%s (best %d), val loss %s, HR@%d %s, %.1fs",
        name,
        report.epochs_run,
        f" (the {config.max_steps}-step budget)" if report.stopped_at_max_steps else "",
        report.best_epoch,
        report.best_val_loss,
        config.eval_k,
        report.best_val_hr,
        report.seconds,
    )
    encoder: SessionEncoder
    if isinstance(model, GruSessionModel):
        encoder = lstm_encoder(model)
    else:
        encoder = transformer_encoder(model)
    return encoder, report


def _fit(
    name: TrainableEncoder,
    train: list[np.ndarray],
    val: list[np.ndarray],
    vectors: np.ndarray,
    config: EncoderTrainingConfig,
    report: TrainingReport,
    use_full: bool,
    progress: bool,
    init_weights: Mapping[str, np.ndarray] | None = None,
) -> nn.Module:
    """The epoch loop; fills ``report`` and returns the model with the best weights loaded."""
    n_items = vectors.shape[0]
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sampler = torch.Generator().manual_seed(config.seed)
    model = build_model(name, vectors, config)
    if init_weights is not None:
        load_model_weights(model, init_weights, name)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    q = target_counts(train, n_items).astype(np.float64) ** 0.75 + 1e-3
    q /= q.sum()
    sample_probs = torch.from_numpy(q).float()
    log_q = torch.log(torch.from_numpy(q * config.negatives)).float()

    best_metric: float | None = None
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bad_epochs = 0
    batch_size = report.batch_size
    n_batches = count_batches(len(train), batch_size)
    max_steps = config.max_steps
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        loss_sum, loss_count = 0.0, 0
        bar = tqdm(
            total=n_batches,
            desc=f"{name} epoch {epoch}/{config.epochs}",
            file=sys.stderr,
            disable=not progress,
            dynamic_ncols=True,
        )
        for step, batch in enumerate(
            iterate_batches(
                train, batch_size, model.pad_index, rng, skip_repeats=config.skip_repeats
            )
        ):
            if max_steps is not None and report.steps >= max_steps:
                break  # the step budget ends this epoch part-way
            mask_np = batch.targets != IGNORE_TARGET
            if not mask_np.any():
                bar.update(1)
                continue
            out = model(torch.from_numpy(batch.inputs))
            mask = torch.from_numpy(mask_np)
            queries, targets = out[mask], torch.from_numpy(batch.targets)[mask]
            items = model.item_weights()
            if use_full:
                loss = full_softmax_loss(queries, items, targets)
            else:
                negatives = torch.multinomial(
                    sample_probs, config.negatives, replacement=True, generator=sampler
                )
                loss = sampled_softmax_loss(queries, items, targets, negatives, log_q)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            report.steps += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                bar.close()
                raise TrainingError(f"{name} training diverged (loss {value}) in epoch {epoch}")
            loss_sum += value * len(targets)
            loss_count += len(targets)
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum / loss_count:.4f}")
        report.train_loss.append(loss_sum / max(loss_count, 1))
        report.epoch_seconds.append(time.perf_counter() - epoch_started)
        report.epochs_run = epoch
        out_of_steps = max_steps is not None and report.steps >= max_steps
        if not val:
            bar.close()
            report.best_epoch = epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if out_of_steps:
                report.stopped_at_max_steps = epoch < config.epochs
                break
            continue
        val_loss, val_hr, val_mrr = evaluate_model(
            model, val, batch_size, config.eval_k, config.skip_repeats, config.exclude_heard
        )
        report.val_loss.append(val_loss)
        report.val_hr.append(val_hr)
        report.val_mrr.append(val_mrr)
        bar.set_postfix(
            loss=f"{report.train_loss[-1]:.4f}",
            val_loss=f"{val_loss:.4f}",
            hr=f"{val_hr:.3f}",
        )
        bar.close()
        logger.debug(
            "%s epoch %d: train %.4f, val %.4f, HR@%d %.4f, MRR %.4f",
            name,
            epoch,
            report.train_loss[-1],
            val_loss,
            config.eval_k,
            val_hr,
            val_mrr,
        )
        metric = val_loss if config.monitor == "val_loss" else val_hr
        if _is_better(metric, best_metric, config.monitor, config.min_delta):
            best_metric, bad_epochs = metric, 0
            report.best_epoch = epoch
            report.best_val_loss, report.best_val_hr, report.best_val_mrr = (
                val_loss,
                val_hr,
                val_mrr,
            )
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                report.stopped_early = epoch < config.epochs
                break
        if out_of_steps:
            report.stopped_at_max_steps = epoch < config.epochs
            break
    model.load_state_dict(best_state)
    return model.eval()
