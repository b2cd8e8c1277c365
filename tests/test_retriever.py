"""HybridRetriever: exclusions, filters (rare ones too), both scores, similar, live catalog."""

from __future__ import annotations

import numpy as np
import pytest

from index.ann import VectorIndex, set_threads
from index.bench import clustered_dataset
from index.errors import InvalidInputError, UnknownItemError
from index.filters import CatalogFilters
from index.retriever import HybridRetriever

N = 4000
K = 10


@pytest.fixture(autouse=True, scope="module")
def _threads() -> None:
    set_threads(1)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    cf, cf_q = clustered_dataset(N, 16, 64, seed=11)
    cb, cb_q = clustered_dataset(N, 8, 64, n_clusters=20, seed=12)
    return {"cf": cf, "cf_q": cf_q, "cb": cb, "cb_q": cb_q}


def tags(n: int, start: int = 0) -> tuple[list[list[str]], list[list[str]]]:
    """1% of items are "Rare" (every 100th), the rest "pop" or "rock"; moods alternate."""
    genres = [
        ["Rare"] if i % 100 == 0 else (["pop"] if i % 3 else ["rock", "pop"])
        for i in range(start, start + n)
    ]
    moods = [["happy"] if i % 2 else ["sad"] for i in range(start, start + n)]
    return genres, moods


def make(data: dict[str, np.ndarray], kind: str = "hnsw", **kw: int) -> HybridRetriever:
    genres, moods = tags(N)
    params = {"M": 16, "efConstruction": 40} if kind == "hnsw" else None  # fast builds
    return HybridRetriever(
        VectorIndex.build(data["cf"], kind, params=params),  # type: ignore[arg-type]
        data["cf"],
        cb_index=VectorIndex.build(data["cb"], kind, params=params),  # type: ignore[arg-type]
        cb_vectors=data["cb"],
        filters=CatalogFilters.from_lists(genres, moods),
        **{"exact_threshold": 0, **kw},  # exercise the ANN path
    )


@pytest.fixture(scope="module")
def retriever(data) -> HybridRetriever:
    return make(data)


def test_exclusions_honoured(retriever, data) -> None:
    first = retriever.recommend(data["cf_q"], data["cb_q"], k=K)
    exclude = [{x.item for x in row} | {0, 1, 2} for row in first]
    second = retriever.recommend(data["cf_q"], data["cb_q"], exclude, k=K)
    for row, ex in zip(second, exclude, strict=True):
        assert len(row) == K and not {x.item for x in row} & ex


@pytest.mark.parametrize("method", ["weighted_sum", "rrf", "cf_only", "cb_only"])
def test_both_scores_present_and_exact(retriever, data, method) -> None:
    out = retriever.recommend(data["cf_q"], data["cb_q"], k=K, method=method)
    for r, row in enumerate(out):
        assert len(row) == K and len({x.item for x in row}) == K
        assert [x.score for x in row] == sorted((x.score for x in row), reverse=True)
        for x in row:
            assert x.cf_score == pytest.approx(
                float(data["cf"][x.item] @ data["cf_q"][r]), abs=1e-5
            )
            assert x.cb_score == pytest.approx(
                float(data["cb"][x.item] @ data["cb_q"][r]), abs=1e-5
            )


def test_cf_only_matches_exact_search(data) -> None:
    flat = make(data, "flat")
    exclude = [set(range(r, N, 37)) for r in range(len(data["cf_q"]))]
    out = flat.recommend(data["cf_q"], None, exclude, k=K, method="cf_only", genre_filter=["pop"])
    pop = np.array(["pop" in g for g in tags(N)[0]])
    for r, row in enumerate(out):
        s = data["cf"] @ data["cf_q"][r]
        s[~pop | np.isin(np.arange(N), list(exclude[r]))] = -np.inf
        assert [x.item for x in row] == np.argsort(-s, kind="stable")[:K].tolist()
        assert all(x.cb_score is None for x in row)  # no cb query given


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_rare_filter_full_length(data, kind) -> None:
    r = make(data, kind)  # the filter is too selective for ANN depth: exact over the subset
    exclude = [{0, 100, 200}] * len(data["cf_q"])
    out = r.recommend(data["cf_q"], data["cb_q"], exclude, k=K, genre_filter=["rare"])
    for row in out:
        assert len(row) == K  # 40 rare items, 3 excluded: 37 available
        assert all(x.item % 100 == 0 and x.item not in {0, 100, 200} for x in row)
    # 40 rare items, all but 4 excluded: exactly those 4 come back
    excl = [set(range(0, N, 100)) - {500, 900, 1300, 3900}]
    out = r.recommend(data["cf_q"][:1], data["cb_q"][:1], excl, k=K, genre_filter=["RARE "])
    assert sorted(x.item for x in out[0]) == [500, 900, 1300, 3900]


@pytest.mark.parametrize("max_depth", [1024, 4096])
def test_locally_rare_filter_searches_deeper(data, max_depth, caplog) -> None:
    """Half the catalog passes the filter, but none of it near the query: the first ANN
    rounds find nothing usable, so the depth doubles (then exact scoring if still short)."""
    q = data["cf_q"][:1]
    order = np.argsort(-(data["cf"] @ q[0]))
    genres = [["head"] for _ in range(N)]
    for i in order[N // 2 :]:
        genres[i] = ["tail"]
    params = {"M": 16, "efConstruction": 40}
    r = HybridRetriever(
        VectorIndex.build(data["cf"], "hnsw", params=params),
        data["cf"],
        filters=CatalogFilters.from_lists(genres),
        exact_threshold=0,
        max_ann_depth=max_depth,
    )
    with caplog.at_level("DEBUG", logger="index.retriever"):
        out = r.recommend(q, None, k=K, method="cf_only", genre_filter=["tail"])[0]
    assert len(out) == K and all(genres[x.item] == ["tail"] for x in out)
    assert [x.item for x in out] == order[N // 2 : N // 2 + K].tolist()
    assert ("fall back to exact" in caplog.text) == (max_depth == 1024)


def test_filter_semantics(retriever, data) -> None:
    q, qb = data["cf_q"][:8], data["cb_q"][:8]
    genres, moods = tags(N)
    both = retriever.recommend(q, qb, k=K, genre_filter=["rare", "rock"], mood_filter=["sad"])
    for row in both:  # OR within genres, AND with the mood
        assert len(row) == K
        for x in row:
            assert {"Rare", "rock"} & set(genres[x.item]) and moods[x.item] == ["sad"]
    assert retriever.recommend(q, qb, k=K, genre_filter=["jazz"]) == [[]] * 8
    f = retriever.filters
    assert f.allowed_mask(None, []) is None and f.allowed_mask(["rare"]).sum() == 40


def test_similar(data) -> None:
    r = make(data)
    near = data["cf"][42] + 1e-3 * np.ones(16, np.float32)
    near_cb = data["cb"][42] + 1e-3 * np.ones(8, np.float32)
    genres, moods = tags(1, start=42)
    unit = [v[None] / np.linalg.norm(v) for v in (near, near_cb)]
    (dup,) = r.add_items(unit[0], unit[1], genres, moods)
    for kwargs in ({}, {"use_cb": False}, {"use_cf": False}, {"method": "rrf"}):
        out = r.similar(42, K, **kwargs)
        assert len(out) == K and out[0].item == dup and 42 not in {x.item for x in out}
        assert all(x.cf_score is not None and x.cb_score is not None for x in out)
    assert all(x.item % 100 == 0 for x in r.similar(42, 5, genre_filter=["rare"]))
    with pytest.raises(UnknownItemError):
        r.similar(N + 10)


def test_live_catalog(data) -> None:
    r = make(data)
    q, qb = data["cf_q"], data["cb_q"]
    top = {x.item for row in r.recommend(q, qb, k=K) for x in row}
    r.retire(top)
    r.retire(list(top)[:3])  # idempotent
    after = r.recommend(q, qb, k=K)
    assert all(len(row) == K and not {x.item for x in row} & top for row in after)
    assert not {x.item for x in r.similar(next(iter(top)), K)} & top
    with pytest.raises(UnknownItemError):
        r.update_item(next(iter(top)), cf_vector=data["cf"][0])

    ids = r.add_items(q[:2], qb[:2], [["new"], ["new"]], [["sad"], ["happy"]])
    assert ids.tolist() == [N, N + 1] and r.n_items == N + 2
    out = r.recommend(q[:2], qb[:2], k=K, method="cf_only")
    assert [row[0].item for row in out] == [N, N + 1]
    assert [x.item for x in r.recommend(q[:1], qb[:1], k=K, genre_filter=["new"])[0]] == [N, N + 1]

    r.update_item(7, cf_vector=q[5], cb_vector=qb[5], genres=["moved"])
    assert r.recommend(q[5:6], qb[5:6], k=1, method="cf_only")[0][0].item == 7
    assert [x.item for x in r.recommend(q[:1], None, k=K, genre_filter=["moved"])[0]] == [7]


def test_no_content_space_and_errors(data) -> None:
    r = HybridRetriever.build(data["cf"][:500], kind="flat")
    out = r.recommend(data["cf_q"][:3], None, k=K)
    assert all(len(row) == K and row[0].cb_score is None for row in out)
    with pytest.raises(InvalidInputError):
        r.recommend(data["cf_q"][:3], data["cb_q"][:3], k=K)
    with pytest.raises(InvalidInputError):
        r.recommend(data["cf_q"][:3], None, k=K, method="cb_only")
    with pytest.raises(InvalidInputError):
        r.recommend(data["cf_q"][:3], None, [set()], k=K)
    with pytest.raises(InvalidInputError):
        r.recommend(data["cf_q"][:3], None, k=0)
    with pytest.raises(InvalidInputError):
        r.add_items(data["cf"][:1], data["cb"][:1])


def test_memoized_search_repeats_no_search_and_changes_no_result(data, monkeypatch) -> None:
    """The offline replay ranks a batch under several fusion variants inside
    ``memoized_search``: same lists as without it, one index search per space and depth."""
    retriever = make(data)
    exclude = [{0, 1, 2, i} for i in range(len(data["cf_q"]))]
    variants = [("weighted_sum", 0.7, 0.3), ("weighted_sum", 0.2, 0.8), ("rrf", 0.5, 0.5)]

    def ranked() -> list[list[list[int]]]:
        return [
            [
                [x.item for x in row]
                for row in retriever.recommend(
                    data["cf_q"], data["cb_q"], exclude, K, method, cf, cb
                )
            ]
            for method, cf, cb in variants
        ]

    calls: list[int] = []
    original = VectorIndex.search

    def counted(self: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(k)
        return original(self, queries, k)

    monkeypatch.setattr(VectorIndex, "search", counted)
    plain = ranked()  # every variant searches both spaces
    searched = len(calls)
    calls.clear()
    with retriever.memoized_search():
        memoized = ranked()
    assert memoized == plain
    assert searched > 0 and len(calls) * len(variants) == searched


@pytest.mark.parametrize("method", ["weighted_sum", "rrf"])
def test_nb_only_items_come_only_from_the_neighbours_and_by_their_score(
    retriever, data, method
) -> None:
    """Under REPEATS=allow a heard track is ranked by its neighbour (repeat) score alone: the
    best cf/cb items, marked ``nb_only``, leave the answer when no neighbour score carries
    them, and one with a neighbour score comes back at the neighbours' rank."""
    from index.neighbours import NeighbourCandidates

    q_cf, q_cb = data["cf_q"][:1], data["cb_q"][:1]
    first = retriever.recommend(q_cf, q_cb, k=K, method=method)[0]
    heard = [x.item for x in first[:3]]
    none = NeighbourCandidates(np.zeros(0, np.int64), np.zeros(0, np.float32), N, 1)
    gone = retriever.rank(
        q_cf, q_cb, k=K, method=method, neighbours=none, nb_weight=0.5, nb_only=[heard]
    ).lists()[0]
    assert len(gone) == K and not {x.item for x in gone} & set(heard)
    # heard[2] carries the only neighbour score; the others stay out
    nb = NeighbourCandidates(np.array([heard[2]]), np.array([1.0], np.float32), N, 1)
    weights = {"cf_weight": 0.1, "cb_weight": 0.1, "nb_weight": 0.9}
    back = retriever.rank(
        q_cf, q_cb, k=K, method=method, neighbours=nb, nb_only=[heard], **weights
    ).lists()[0]
    items = [x.item for x in back]
    assert items[0] == heard[2] and heard[0] not in items and heard[1] not in items
    # its fused score is the neighbour part alone (its cf/cb scores add nothing)
    alone = 0.9 if method == "weighted_sum" else 0.9 / (60 + 1)
    assert back[0].score == pytest.approx(alone)
    counted = retriever.rank(q_cf, q_cb, k=K, method=method, neighbours=nb, **weights)
    assert counted.lists()[0][0].score > alone + 1e-6


@pytest.mark.parametrize("method", ["weighted_sum", "rrf"])
def test_a_content_space_of_weight_zero_is_not_searched_but_still_scores(
    data, method, monkeypatch
) -> None:
    """``cb_weight=0`` (e.g. the fusion chosen on lastfm1k-lessr): only the cf space is
    searched, every answer still carries its exact cb score, and the ranking is the one the
    cf scores give alone (a weight-0 space adds nothing to the fused score)."""
    retriever = make(data)
    searched: list[int] = []
    original = VectorIndex.search

    def spy(self: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        searched.append(self.dim)
        return original(self, queries, k)

    monkeypatch.setattr(VectorIndex, "search", spy)
    out = retriever.recommend(
        data["cf_q"], data["cb_q"], k=K, method=method, cf_weight=1.0, cb_weight=0.0
    )
    assert set(searched) == {data["cf"].shape[1]}  # the cf index only
    cf_alone = retriever.recommend(data["cf_q"], None, k=K, method=method)
    for r, (row, alone) in enumerate(zip(out, cf_alone, strict=True)):
        assert [x.item for x in row] == [x.item for x in alone]
        for x in row:
            assert x.cb_score == pytest.approx(
                float(data["cb"][x.item] @ data["cb_q"][r]), abs=1e-5
            )
