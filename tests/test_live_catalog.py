"""The live catalog without Kafka: ModelBundle add/update/retire, apply_tracks, encoders."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from encoders import build_encoder
from encoders.extended import ExtendedItemsEncoder
from index.retriever import HybridRetriever
from schemas import PlayEvent, Track
from serving.catalog import apply_tracks, collaborative_vectors, content_vectors
from serving.engine import RecommendationEngine
from serving.model import ModelBundle, RetrievalParams, load_model, rank_sessions

PARAMS = RetrievalParams(top_k=10)


@pytest.fixture
def model(small_artifacts: Path) -> ModelBundle:
    """A fresh mean-encoder model per test (the tests mutate it)."""
    return load_model(small_artifacts, "mean", index_type="hnsw")


def learned_model(small_artifacts: Path, name: str) -> ModelBundle:
    """A model with a small untrained lstm/transformer encoder (own item space)."""
    base = load_model(small_artifacts, "mean", index_type="flat")
    art = base.artifacts
    hp = {"emb_dim": 16, "hidden_dim": 16} if name == "lstm" else {"emb_dim": 16, "max_len": 8}
    encoder = build_encoder(name, art.cf_vectors, hp)  # type: ignore[arg-type]
    retriever = HybridRetriever.build(
        encoder.item_vectors(),
        art.cb_vectors,
        [t.genres for t in art.tracks],
        [t.moods for t in art.tracks],
        kind="flat",
    )
    return replace(base, encoder=encoder, retriever=retriever)


def twin(model: ModelBundle, source: int, track_id: str, **changes: object) -> Track:
    """A new track with the metadata of ``model.tracks[source]``."""
    return replace(model.tracks[source], track_id=track_id, **changes)  # type: ignore[arg-type]


def similar_ids(model: ModelBundle, item: int, k: int = 10, **kw: object) -> list[str]:
    return [model.tracks[f.item].track_id for f in model.retriever.similar(item, k, **kw)]  # type: ignore[arg-type]


def test_new_track_is_placed_indexed_and_steppable(model: ModelBundle) -> None:
    n = model.n_items
    new = twin(model, 7, "new-1")
    changes = apply_tracks(model, [new])
    assert changes.added == ["new-1"] and changes.changed
    item = model.track_index["new-1"]
    assert item == n and model.n_items == n + 1 and model.tracks[item] == new
    assert model.popularity.shape == (n + 1,) and model.popularity[item] == 0
    assert model.cb_vectors is not None and model.cb_vectors.shape[0] == n + 1
    # Same metadata as track 7: identical content vector, so it is 7's nearest in cb space.
    np.testing.assert_allclose(model.cb_vectors[item], model.cb_vectors[7], atol=1e-6)
    assert similar_ids(model, 7, use_cf=False)[0] == "new-1"
    # The mean encoder steps with the new item (its cold-start LightFM vector).
    enc = model.encoder
    assert enc.item_vectors().shape[0] == n + 1
    state = enc.step([enc.initial_state()], np.array([item]))[0]
    np.testing.assert_allclose(state[:-1], enc.item_vectors()[item])
    # A session that played it is answered, without it.
    (ranked,) = rank_sessions(model, [state], [["new-1"]], [["new-1"]], PARAMS)
    assert len(ranked) == 10 and "new-1" not in {r.track_id for r in ranked}


def test_cold_start_vector_is_the_lightfm_one(model: ModelBundle) -> None:
    new = twin(model, 3, "cold")
    cb = content_vectors(model, [new])
    cf = collaborative_vectors(model, [new], cb)
    art = model.artifacts
    assert art.featurizer is not None and art.cf_feature_embeddings is not None
    from training.content import ContentFeaturizer
    from training.lightfm_model import cold_start_vectors

    # Training's route (scipy sparse metadata features) gives the very same vector.
    fitted = ContentFeaturizer.from_dict(art.featurizer.to_dict())
    sparse = fitted.metadata_features([new])
    np.testing.assert_array_equal(sparse.toarray(), art.featurizer.metadata_rows([new]).toarray())
    expected = cold_start_vectors(sparse, art.cf_feature_embeddings)
    np.testing.assert_array_equal(cf, expected)


def test_update_changes_labels_and_content(model: ModelBundle) -> None:
    track = model.tracks[11]
    changed = replace(track, genres=["brand-new-genre"], moods=["zen"])
    changes = apply_tracks(model, [changed])
    assert changes.updated == [track.track_id]
    assert model.tracks[11] == changed
    genre_only = model.retriever.filters.usable_mask(["brand-new-genre"], None)
    assert np.flatnonzero(genre_only).tolist() == [11]
    # Unchanged record: nothing to do.
    assert apply_tracks(model, [changed]).unchanged == [track.track_id]


def test_updating_an_added_track_recomputes_its_vectors(model: ModelBundle) -> None:
    apply_tracks(model, [twin(model, 5, "added")])
    item = model.track_index["added"]
    before = model.encoder.item_vectors()[item].copy()
    other = model.tracks[600]
    moved = twin(model, 600, "added", artist=other.artist)
    assert apply_tracks(model, [moved]).updated == ["added"]
    after = model.encoder.item_vectors()[item]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(model.retriever.vectors("cf")[item], after)


def test_retired_track_is_never_recommended(model: ModelBundle) -> None:
    top = int(np.argmax(model.popularity))
    top_id = model.tracks[top].track_id
    neighbour = similar_ids(model, 20, 1)[0]
    changes = apply_tracks(
        model, [Track(top_id, "", "", retired=True), Track(neighbour, "", "", retired=True)]
    )
    assert sorted(changes.retired) == sorted({top_id, neighbour})
    assert model.tracks[top].retired
    popular = model.popular_items(RetrievalParams(top_k=50), set())
    assert top_id not in {p.track_id for p in popular} and len(popular) == 50
    assert neighbour not in similar_ids(model, 20, 50)
    queries = model.encoder.step(
        [model.encoder.initial_state()], np.array([model.track_index[neighbour]])
    )
    (ranked,) = rank_sessions(model, queries, [[top_id]], [[]], RetrievalParams(top_k=100))
    assert not {r.track_id for r in ranked} & {top_id, neighbour}
    # Tombstones of retired or unknown tracks change nothing.
    again = apply_tracks(
        model, [Track(top_id, "", "", retired=True), Track("nope", "", "", retired=True)]
    )
    assert not again.changed


def test_retired_track_can_come_back_under_a_new_index(model: ModelBundle) -> None:
    old = model.tracks[30]
    apply_tracks(model, [Track(old.track_id, "", "", retired=True)])
    assert apply_tracks(model, [old]).added == [old.track_id]
    new_item = model.track_index[old.track_id]
    assert new_item == model.n_items - 1 and model.is_retired(30)
    assert old.track_id in similar_ids(model, 31, 20, use_cf=False)


def test_last_record_of_a_batch_wins(model: ModelBundle) -> None:
    new = twin(model, 40, "flash")
    changes = apply_tracks(model, [new, Track("flash", "", "", retired=True)])
    assert not changes.changed and "flash" not in model.track_index
    changes = apply_tracks(model, [Track("flash", "", "", retired=True), new])
    assert changes.added == ["flash"]


def test_add_tracks_rejects_live_ids_and_bad_shapes(model: ModelBundle) -> None:
    live = model.tracks[0]
    with pytest.raises(ValueError, match="already"):
        model.add_tracks([live], np.zeros((1, model.encoder.dim)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="shape"):
        model.add_tracks([twin(model, 0, "x")], np.zeros((1, 3)), None)
    with pytest.raises(KeyError):
        model.update_track(Track("unknown", "t", "a"))


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_learned_encoder_new_track_is_recommendable_not_steppable(
    small_artifacts: Path, small_dataset, name: str
) -> None:
    model = learned_model(small_artifacts, name)
    n = model.n_items
    new = twin(model, 9, "new-learned")
    apply_tracks(model, [new])
    enc = model.encoder
    assert isinstance(enc, ExtendedItemsEncoder) and enc.name == name
    assert enc.item_vectors().shape == (n + 1, enc.dim) and enc.n_base_items == n
    # Its vector: mean of the encoder vectors of its content neighbours (9 among them).
    assert np.linalg.norm(enc.item_vectors()[n]) > 0
    # Stepping with the new item leaves the state unchanged; known items still step.
    start = enc.step([enc.initial_state()], np.array([1]))[0]
    same, moved = enc.step([start, start], np.array([n, 2]))
    np.testing.assert_array_equal(same, start)
    assert not np.array_equal(moved, start)
    # A play of the new track goes through the engine: heard, excluded, no crash.
    engine = RecommendationEngine(model, RetrievalParams(top_k=10))
    first = small_dataset.events[0]
    plays = [
        PlayEvent("e1", "u", "s", model.tracks[9].track_id, "play", 1),
        PlayEvent("e2", "u", "s", "new-learned", "play", 2),
    ]
    assert first is not None
    outcomes = engine.process(plays, {"s": None})
    assert len(outcomes) == 2
    assert "new-learned" in outcomes[-1].state.heard
    assert "new-learned" not in {i.track_id for i in outcomes[-1].recommendation.items}
    # ... and recommendable: the nearest in cb space to its twin.
    assert similar_ids(model, 9, 1, use_cf=False) == ["new-learned"]


def test_lightfm_vectors_are_memory_mapped_and_never_written(small_artifacts: Path) -> None:
    """The artifacts' LightFM matrix is mapped read-only (no resident memory in a worker whose
    encoder has its own item space); a live addition copies it instead of writing to it."""
    from serving.artifacts import load_artifacts

    art = load_artifacts(small_artifacts)
    assert isinstance(art.cf_vectors, np.memmap) and not art.cf_vectors.flags.writeable
    model = load_model(small_artifacts, "mean", index_type="flat")
    before = np.array(model.artifacts.cf_vectors)
    apply_tracks(model, [twin(model, 3, "mapped-new")])
    assert model.n_items == before.shape[0] + 1
    np.testing.assert_array_equal(model.artifacts.cf_vectors, before)
