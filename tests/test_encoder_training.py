"""Training of the learned encoders on tiny synthetic sequential data, and the data iterator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import SessionEncoder, load_encoder
from encoders.errors import EncoderError
from encoders.lstm import LstmEncoder
from encoders.lstm_model import GruSessionModel
from encoders.transformer import TransformerEncoder
from encoders.transformer_model import SasRecModel
from training.encoder_training import (
    EncoderTrainingConfig,
    TrainableEncoder,
    effective_batch_size,
    exclude_items,
    rank_metrics,
    train_encoder,
)
from training.errors import DataError
from training.sequences import (
    IGNORE_TARGET,
    count_batches,
    heard_matrix,
    iterate_batches,
    pad_batch,
    prepare_sequences,
    repeat_targets,
    split_sessions,
)

N_ITEMS = 200


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def successor_sessions(count: int, seed: int, p_next: float = 0.85) -> list[list[int]]:
    """Sessions where item ``i`` is followed by ``i + 1 mod N`` with probability ``p_next``."""
    rng = np.random.default_rng(seed)
    sessions = []
    for _ in range(count):
        session = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(4, 16))):
            nxt = (session[-1] + 1) % N_ITEMS if rng.random() < p_next else rng.integers(N_ITEMS)
            session.append(int(nxt))
        sessions.append(session)
    return sessions


def random_sessions(count: int, seed: int) -> list[list[int]]:
    """Structure-free sessions (a model can only overfit them)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, N_ITEMS, size=int(rng.integers(3, 10))).tolist() for _ in range(count)]


def init_vectors(dim: int = 16) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N_ITEMS, dim)).astype(np.float32)


def small_config(**overrides: object) -> EncoderTrainingConfig:
    base: dict[str, object] = {
        "emb_dim": 32,
        "hidden_dim": 64,
        "epochs": 8,
        "batch_size": 32,
        "lr": 3e-3,
        "dropout": 0.1,
        "max_len": 16,
        "patience": 2,
        "threads": 1,
        "seed": 0,
    }
    base.update(overrides)
    return EncoderTrainingConfig(**base)  # type: ignore[arg-type]


def hit_rate_at(encoder: SessionEncoder, sessions: list[list[int]], k: int) -> float:
    """HR@k of predicting each held-out session's last item from the rest, batched."""
    states = [encoder.initial_state() for _ in sessions]
    prefixes = [s[:-1] for s in sessions]
    for t in range(max(len(p) for p in prefixes)):
        active = [i for i, p in enumerate(prefixes) if len(p) > t]
        items = np.asarray([prefixes[i][t] for i in active], dtype=np.int64)
        for i, state in zip(active, encoder.step([states[i] for i in active], items), strict=True):
            states[i] = state
    scores = encoder.embed(states) @ encoder.item_vectors().T
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([s[-1] in row for s, row in zip(sessions, top, strict=True)]))


@pytest.fixture(scope="module")
def datasets() -> tuple[list[list[int]], list[list[int]]]:
    return successor_sessions(600, seed=0), successor_sessions(200, seed=1)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_learns_successor_structure(
    name: TrainableEncoder, datasets: tuple[list[list[int]], list[list[int]]], tmp_path: Path
) -> None:
    train, test = datasets
    encoder, report = train_encoder(name, train, init_vectors(), small_config(), progress=False)
    assert encoder.name == name
    hr = hit_rate_at(encoder, test, k=10)
    counts = np.bincount(np.concatenate(train), minlength=N_ITEMS)
    popular = set(np.argsort(-counts)[:10].tolist())
    popularity_hr = float(np.mean([s[-1] in popular for s in test]))
    assert hr > 0.5, (hr, report.val_hr)
    assert hr > popularity_hr + 0.4
    assert report.loss_mode == "full"
    assert report.best_val_hr is not None and report.best_val_hr > 0.5
    assert 1 <= report.best_epoch <= report.epochs_run <= 8
    json.dumps(report.to_dict())  # the artifacts manifest records it
    # the trained encoder survives save/load
    encoder.save(tmp_path / name)
    loaded = load_encoder(tmp_path / name)
    assert hit_rate_at(loaded, test[:50], k=10) == hit_rate_at(encoder, test[:50], k=10)
    # served with numpy from weights.npz; weights.pt kept for fine-tuning
    saved = {p.name for p in (tmp_path / name).iterdir()}
    assert saved == {"config.json", "weights.npz", "weights.pt"}
    model: GruSessionModel | SasRecModel
    if name == "lstm":
        assert isinstance(encoder, LstmEncoder) and isinstance(loaded, LstmEncoder)
        model = GruSessionModel(encoder.model_config)
    else:
        assert isinstance(encoder, TransformerEncoder) and isinstance(loaded, TransformerEncoder)
        model = SasRecModel(encoder.model_config)
    model.load_state_dict(torch.load(tmp_path / name / "weights.pt", weights_only=True))
    model.eval()
    with torch.inference_mode():
        queries = model(torch.tensor([test[0][:-1]]))[0, -1].numpy()
    states = [encoder.initial_state()]
    for item in test[0][:-1]:
        states = encoder.step(states, np.asarray([item]))
    np.testing.assert_allclose(encoder.embed(states)[0], queries, rtol=0, atol=1e-5)


def test_sampled_softmax_learns(datasets: tuple[list[list[int]], list[list[int]]]) -> None:
    train, test = datasets
    config = small_config(loss="sampled", negatives=64)
    encoder, report = train_encoder("lstm", train, init_vectors(), config, progress=False)
    assert report.loss_mode == "sampled"
    assert hit_rate_at(encoder, test, k=10) > 0.5


def test_early_stopping_stops_and_keeps_best() -> None:
    config = small_config(epochs=40, patience=1, dropout=0.0, lr=1e-2, monitor="val_loss")
    sessions = random_sessions(300, seed=0)
    _, report = train_encoder("lstm", sessions, init_vectors(), config, progress=False)
    assert report.stopped_early
    assert report.epochs_run < 40
    assert report.best_epoch == report.epochs_run - 1
    assert report.best_val_loss == min(report.val_loss)


@pytest.mark.parametrize("validation_share", [0.1, 0.0])
def test_the_step_budget_ends_training_part_way_through_an_epoch(validation_share: float) -> None:
    """``max_steps`` bounds the optimiser steps in all, whatever the epochs: the epoch it
    falls in ends part-way and is validated (when there is validation) like the others."""
    sessions = successor_sessions(400, seed=1)
    free = small_config(epochs=3, patience=10, validation_share=validation_share, max_steps=None)
    _, full = train_encoder("lstm", sessions, init_vectors(), free, progress=False)
    per_epoch = full.steps // 3
    budget = per_epoch + per_epoch // 2  # one and a half epochs
    config = small_config(
        epochs=3, patience=10, validation_share=validation_share, max_steps=budget
    )
    _, report = train_encoder("lstm", sessions, init_vectors(), config, progress=False)
    assert report.steps == budget and report.epochs_run == 2
    assert report.stopped_at_max_steps and not full.stopped_at_max_steps
    assert len(report.train_loss) == 2
    if validation_share:
        assert len(report.val_loss) == 2


def test_same_seed_same_result(datasets: tuple[list[list[int]], list[list[int]]]) -> None:
    train = datasets[0][:200]
    config = small_config(epochs=2)
    runs = [train_encoder("transformer", train, init_vectors(), config, progress=False)[1]]
    runs.append(train_encoder("transformer", train, init_vectors(), config, progress=False)[1])
    assert runs[0].val_loss == runs[1].val_loss
    assert runs[0].train_loss == runs[1].train_loss
    other = train_encoder(
        "transformer", train, init_vectors(), small_config(epochs=2, seed=1), progress=False
    )[1]
    assert other.val_loss != runs[0].val_loss


def test_init_vectors_of_other_width_and_validation_free_training() -> None:
    sessions = successor_sessions(100, seed=2)
    config = small_config(epochs=2, validation_share=0.0, emb_dim=8)
    encoder, report = train_encoder("lstm", sessions, init_vectors(dim=24), config, progress=False)
    assert encoder.item_vectors().shape == (N_ITEMS, 8)
    assert report.n_val_sessions == 0 and report.best_epoch == 2 and report.best_val_loss is None
    json.dumps(report.to_dict())


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_training_goes_on_from_earlier_weights(name: TrainableEncoder, tmp_path: Path) -> None:
    """The final fit's warm start: ``init_weights`` (an earlier fit's ``weights.pt``) are the
    starting point, so a step with a tiny learning rate stays next to them, and a model of
    another shape is refused."""
    from encoders.torch_io import load_torch_weights

    sessions = successor_sessions(150, seed=4)
    first, _ = train_encoder(name, sessions, init_vectors(), small_config(epochs=2), progress=False)
    first.save(tmp_path / name)
    weights = load_torch_weights(tmp_path / name)
    config = small_config(epochs=1, validation_share=0.0, lr=1e-7, dropout=0.0)
    again, _ = train_encoder(
        name, sessions, init_vectors(), config, progress=False, init_weights=weights
    )
    np.testing.assert_allclose(again.item_vectors(), first.item_vectors(), atol=1e-4)
    fresh, _ = train_encoder(name, sessions, init_vectors(), config, progress=False)
    assert not np.allclose(fresh.item_vectors(), first.item_vectors(), atol=1e-4)
    with pytest.raises(EncoderError):
        train_encoder(name, sessions, init_vectors(), small_config(emb_dim=8), init_weights=weights)


def test_unusable_data_raises() -> None:
    with pytest.raises(DataError):
        train_encoder("lstm", [[1], [], [2]], init_vectors(), small_config(), progress=False)
    with pytest.raises(DataError):
        train_encoder("lstm", [[1, N_ITEMS]], init_vectors(), small_config(), progress=False)
    with pytest.raises(DataError):
        small_config(batch_size=0)


# -- the data iterator -------------------------------------------------------------------------


def test_prepare_sequences_truncates_and_drops_short() -> None:
    out = prepare_sequences([[1], [1, 2], list(range(10))], max_len=4, n_items=N_ITEMS)
    assert [s.tolist() for s in out] == [[1, 2], [5, 6, 7, 8, 9]]


def test_split_is_seeded_and_covers_everything() -> None:
    seqs = [np.asarray([i, i + 1]) for i in range(50)]
    train, val = split_sessions(seqs, 0.2, seed=3)
    again = split_sessions(seqs, 0.2, seed=3)
    assert [s.tolist() for s in val] == [s.tolist() for s in again[1]]
    assert len(val) == 10 and len(train) == 40
    assert sorted(int(s[0]) for s in train + val) == list(range(50))
    assert len(split_sessions(seqs[:2], 0.01, seed=0)[1]) == 1
    train, val = split_sessions(seqs, 0.5, seed=0, max_validation=5)
    assert len(val) == 5 and len(train) == 45


def test_pad_batch_layout() -> None:
    batch = pad_batch([np.asarray([1, 2, 3]), np.asarray([4, 5])], pad_index=99)
    np.testing.assert_array_equal(batch.inputs, [[1, 2], [4, 99]])
    np.testing.assert_array_equal(batch.targets, [[2, 3], [5, IGNORE_TARGET]])
    assert batch.n_targets == 3


def test_iterate_batches_covers_every_sequence_once() -> None:
    seqs = [np.arange(n + 2) for n in range(70)]
    rng = np.random.default_rng(0)
    batches = list(iterate_batches(seqs, batch_size=8, pad_index=-5, rng=rng, bucket_batches=2))
    assert len(batches) == count_batches(len(seqs), 8, bucket_batches=2)
    assert sum(b.n_targets for b in batches) == sum(len(s) - 1 for s in seqs)
    assert sum(b.inputs.shape[0] for b in batches) == 70


def test_repeat_targets_are_skipped() -> None:
    seq = np.asarray([5, 6, 5, 7, 6, 8])
    np.testing.assert_array_equal(repeat_targets(seq), [False, True, False, True, False])
    batch = pad_batch([seq], pad_index=99, skip_repeats=True)
    np.testing.assert_array_equal(batch.targets, [[6, IGNORE_TARGET, 7, IGNORE_TARGET, 8]])


def test_heard_items_are_excluded_from_ranking() -> None:
    inputs = np.asarray([[2, 0, 9]])  # 9 = pad (n_items = 9)
    heard = heard_matrix(inputs, pad_index=9)
    np.testing.assert_array_equal(heard[0], [[2, 9, 9], [2, 0, 9], [2, 0, 9]])
    logits = torch.arange(9, dtype=torch.float32).repeat(2, 1)
    masked = exclude_items(logits, torch.from_numpy(heard[0, :2]))
    assert torch.isinf(masked[0, 2]) and not torch.isinf(masked[0, 0])
    assert torch.isinf(masked[1, [0, 2]]).all() and torch.isfinite(masked[1, 3:]).all()
    hits, rr = rank_metrics(masked, torch.tensor([8, 1]), k=2)
    assert (hits, rr) == (1.0, 1.0)  # 8 is ranked first; 1 ranks 7th behind 8..3


def test_effective_batch_size() -> None:
    assert effective_batch_size(10_000, 128, 20) == 128
    assert effective_batch_size(215, 128, 20) == 11
    assert effective_batch_size(3, 128, 20) == 1
