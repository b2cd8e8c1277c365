"""Cold-start check on real data (hetrec2011-lastfm-2k): does the hybrid model place new items?

The LightFM paper's cold-start experiment, on Last.fm users and artists:

Split (seeded)
    ``cold_share`` of the artists that have listeners are COLD: none of their interactions is
    trained on, all go to the cold test set. Of every user's remaining interactions a
    ``test_share`` (at least one kept for training) goes to the warm test set.
Models (LightFM, the project's :class:`training.lightfm_model.TrainingConfig`, trained on the
warm artists only, so a cold artist is never even sampled as a negative)
    ``cf``       identity features only (pure collaborative filtering): a cold artist has no
                 trained parameter, so it gets LightFM's random initial vector (no information).
    ``content``  tag/genre metadata features only (no identity).
    ``hybrid``   identity + metadata features weighted as in the project
                 (:func:`training.lightfm_model.hybrid_item_features`); a cold artist gets its
                 metadata-only vector (:func:`serving.coldstart.cold_start_vectors`).
    Metadata rows come from :meth:`training.content.ContentFeaturizer.metadata_features` on
    tracks built like ``import_hetrec`` does (top tags, genre-like tags). The ``artist=`` name
    feature is left out: here the item IS the artist, so that feature is an identity in disguise.
Scores and metrics
    ``score(u, i) = <user_u, item_i> + bias_i``. Warm: per user, the candidates are the warm
    artists not trained on for that user, the relevant ones the user's warm test artists.
    Cold: the candidates are all cold artists, the relevant ones the user's cold test artists.
    Per user AUC and recall@k (:mod:`training.metrics`), averaged over users with at least one
    relevant candidate. Interactions are binary (play counts are ignored).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import scipy.sparse as sp
from tqdm.auto import tqdm

from schemas.track import Track
from training.content import ContentFeaturizer
from training.errors import DataError
from training.importers.hetrec import HetrecData, load_hetrec, looks_like_genre
from training.lightfm_model import IDENTITY_WEIGHT, TrainingConfig, hybrid_item_features
from training.metrics import auc, recall_at_k

log = logging.getLogger(__name__)

ColdStartModel = Literal["cf", "content", "hybrid"]
COLDSTART_MODELS: tuple[ColdStartModel, ...] = ("cf", "content", "hybrid")


@dataclass(frozen=True)
class ColdStartConfig:
    """Split, features and training settings of the cold-start check."""

    cold_share: float = 0.15
    test_share: float = 0.2
    max_users: int | None = None
    max_tags: int = 10
    vocabulary_tags: int = 1000
    k: int = 20
    seed: int = 0
    models: tuple[ColdStartModel, ...] = COLDSTART_MODELS
    lightfm: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.cold_share < 1.0 or not 0.0 < self.test_share < 1.0:
            raise DataError("cold_share and test_share must be in (0, 1)")
        unknown = [m for m in self.models if m not in COLDSTART_MODELS]
        if unknown:
            raise DataError(f"unknown cold-start models {unknown}; choose from {COLDSTART_MODELS}")


@dataclass
class ColdStartSplit:
    """Users x artists matrices (binary CSR) of the three parts, and the cold artists."""

    train: sp.csr_matrix
    warm_test: sp.csr_matrix
    cold_test: sp.csr_matrix
    cold: np.ndarray  # (n_items,) bool

    @property
    def warm_items(self) -> np.ndarray:
        return np.flatnonzero(~self.cold)

    @property
    def cold_items(self) -> np.ndarray:
        return np.flatnonzero(self.cold)


@dataclass
class ColdStartReport:
    """Metrics per model (``warm_auc``, ``warm_recall@k``, ``cold_auc``, ``cold_recall@k``)."""

    models: dict[str, dict[str, float]]
    protocol: dict[str, Any]
    data: dict[str, Any]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))
        return out

    def table(self) -> str:
        k = self.protocol["k"]
        cols = ["warm_auc", f"warm_recall@{k}", "cold_auc", f"cold_recall@{k}"]
        lines = [f"{'model':<8}  " + "  ".join(f"{c:>15}" for c in cols)]
        for name, m in self.models.items():
            lines.append(f"{name:<8}  " + "  ".join(f"{m[c]:>15.4f}" for c in cols))
        return "\n".join(lines)


def hetrec_tracks(data: HetrecData, max_tags: int = 10) -> list[Track]:
    """One track per artist, as :func:`training.importers.import_hetrec` writes them."""
    out = []
    for i, (tid, name) in enumerate(zip(data.track_ids(), data.artist_names, strict=True)):
        top = data.top_tags(i, max_tags)
        genres = list(dict.fromkeys(t.casefold() for t in top if looks_like_genre(t)))
        out.append(Track(track_id=tid, title=name, artist=name, genres=genres, tags=top))
    return out


def split_coldstart(data: HetrecData, config: ColdStartConfig) -> ColdStartSplit:
    """Seeded cold-artist / warm-test / train split (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    users, items = data.user_idx, data.artist_idx
    n_users, n_items = len(data.user_ids), len(data.artist_ids)
    if config.max_users is not None and config.max_users < n_users:
        kept = np.zeros(n_users, dtype=bool)
        kept[rng.choice(n_users, config.max_users, replace=False)] = True
        users, items = users[kept[users]], items[kept[users]]
    active = np.unique(items)
    n_cold = int(round(config.cold_share * active.size))
    cold = np.zeros(n_items, dtype=bool)
    cold[rng.choice(active, n_cold, replace=False)] = True
    is_cold = cold[items]
    part = np.zeros(users.size, dtype=np.int8)  # 0 train, 1 warm test, 2 cold test
    part[is_cold] = 2
    warm_rows = np.flatnonzero(~is_cold)
    order = warm_rows[np.lexsort((rng.random(warm_rows.size), users[warm_rows]))]
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    for group in np.split(order, bounds):
        n_test = int(round(config.test_share * group.size)) if group.size >= 2 else 0
        part[group[: min(n_test, group.size - 1)]] = 1

    def matrix(mask: np.ndarray) -> sp.csr_matrix:
        ones = np.ones(int(mask.sum()), dtype=np.float32)
        return sp.csr_matrix((ones, (users[mask], items[mask])), shape=(n_users, n_items))

    return ColdStartSplit(matrix(part == 0), matrix(part == 1), matrix(part == 2), cold)


def metadata_matrix(data: HetrecData, config: ColdStartConfig) -> sp.csr_matrix:
    """Row-normalised tag/genre features per artist (no artist-name feature)."""
    tracks = hetrec_tracks(data, config.max_tags)
    with warnings.catch_warnings():  # no audio features: nanmean of empty columns
        warnings.simplefilter("ignore", RuntimeWarning)
        featurizer = ContentFeaturizer.fit(tracks, max_tags=config.vocabulary_tags)
    featurizer = dataclasses.replace(featurizer, artists=[])
    return featurizer.metadata_features(tracks)


def fit_model(
    kind: ColdStartModel,
    split: ColdStartSplit,
    metadata: sp.csr_matrix,
    config: TrainingConfig,
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train one model on the warm artists; returns user vectors ``(U, d)``, item vectors
    ``(I, d)`` and item biases ``(I,)`` for ALL artists (cold ones placed as documented)."""
    from lightfm import LightFM  # heavy import

    warm, cold = split.warm_items, split.cold_items
    n_items, n_warm = split.cold.size, warm.size
    if kind == "cf":
        features = None
    elif kind == "content":
        features = metadata[warm]
    else:
        features = hybrid_item_features(metadata[warm], n_warm)
    model = LightFM(
        no_components=config.no_components,
        learning_rate=config.learning_rate,
        loss=config.loss,
        item_alpha=config.item_alpha,
        max_sampled=config.max_sampled,
        random_state=np.random.RandomState(config.seed),
    )
    interactions = split.train[:, warm].tocsr()
    for _ in tqdm(range(config.epochs), desc=f"lightfm {kind}", disable=not progress):
        model.fit_partial(
            interactions, item_features=features, epochs=1, num_threads=config.threads
        )
    _, user_vectors = model.get_user_representations()
    warm_bias, warm_vectors = model.get_item_representations(features)
    vectors = np.zeros((n_items, config.no_components), dtype=np.float32)
    biases = np.zeros(n_items, dtype=np.float32)
    vectors[warm], biases[warm] = warm_vectors, warm_bias
    if cold.size:
        if kind == "cf":  # nothing is known: LightFM's own initialisation, never trained
            rng = np.random.RandomState(config.seed + 1)
            vectors[cold] = (rng.rand(cold.size, config.no_components) - 0.5) / config.no_components
        else:
            rows = metadata[cold]
            if kind == "hybrid":  # identity weight zero, metadata weighted as in training
                rows = sp.hstack(
                    [sp.csr_matrix((cold.size, n_warm)), rows * (1.0 - IDENTITY_WEIGHT)]
                ).tocsr()
            cold_bias, cold_vectors = model.get_item_representations(rows.astype(np.float32))
            vectors[cold], biases[cold] = cold_vectors, cold_bias
    return user_vectors.astype(np.float32), vectors, biases


def group_metrics(
    scores: np.ndarray,
    relevant: sp.csr_matrix,
    candidates: np.ndarray,
    exclude: sp.csr_matrix | None,
    k: int,
) -> dict[str, float]:
    """Mean per-user AUC and recall@k over ``candidates`` (item indices); ``exclude`` rows
    remove a user's items from the candidates (training items)."""
    is_candidate = np.zeros(scores.shape[1], dtype=bool)
    is_candidate[candidates] = True
    aucs: list[float] = []
    recalls: list[float] = []
    for u in range(scores.shape[0]):
        pos = relevant.indices[relevant.indptr[u] : relevant.indptr[u + 1]]
        pos = pos[is_candidate[pos]]
        if not pos.size:
            continue
        mask = is_candidate.copy()
        if exclude is not None:
            mask[exclude.indices[exclude.indptr[u] : exclude.indptr[u + 1]]] = False
        mask[pos] = True
        cand = np.flatnonzero(mask)
        rel = np.zeros(cand.size, dtype=bool)
        rel[np.searchsorted(cand, pos)] = True
        s = scores[u, cand]
        aucs.append(auc(s[rel], s[~rel]))
        recalls.append(recall_at_k(s, rel, k))
    return {
        "auc": float(np.nanmean(aucs)) if aucs else float("nan"),
        f"recall@{k}": float(np.mean(recalls)) if recalls else float("nan"),
        "users": len(aucs),
    }


def evaluate_coldstart(
    hetrec_dir: str | os.PathLike[str],
    config: ColdStartConfig | None = None,
    *,
    data: HetrecData | None = None,
    progress: bool = True,
) -> ColdStartReport:
    """Run the cold-start check on a hetrec2011-lastfm-2k directory (or loaded ``data``)."""
    config = config or ColdStartConfig()
    started = time.perf_counter()
    data = data if data is not None else load_hetrec(hetrec_dir)
    split = split_coldstart(data, config)
    metadata = metadata_matrix(data, config)
    seconds: dict[str, float] = {"prepare": time.perf_counter() - started}
    has_features = np.asarray(metadata.getnnz(axis=1)) > 0
    models: dict[str, dict[str, float]] = {}
    for kind in config.models:
        t0 = time.perf_counter()
        users, items, biases = fit_model(kind, split, metadata, config.lightfm, progress=progress)
        scores = users @ items.T + biases[None, :]
        warm = group_metrics(scores, split.warm_test, split.warm_items, split.train, config.k)
        cold = group_metrics(scores, split.cold_test, split.cold_items, None, config.k)
        models[kind] = {
            "warm_auc": round(warm["auc"], 6),
            f"warm_recall@{config.k}": round(warm[f"recall@{config.k}"], 6),
            "cold_auc": round(cold["auc"], 6),
            f"cold_recall@{config.k}": round(cold[f"recall@{config.k}"], 6),
            "warm_users": warm["users"],
            "cold_users": cold["users"],
        }
        seconds[kind] = round(time.perf_counter() - t0, 2)
        log.info("cold-start %s: %s", kind, models[kind])
    cold_items = split.cold_items
    data_section = {
        "source": str(hetrec_dir),
        "n_users": int(len(data.user_ids)),
        "n_users_used": int(np.unique(split.train.nonzero()[0]).size),
        "n_items": int(split.cold.size),
        "n_cold_items": int(cold_items.size),
        "cold_items_with_features": round(float(has_features[cold_items].mean()), 4)
        if cold_items.size
        else None,
        "n_train": int(split.train.nnz),
        "n_warm_test": int(split.warm_test.nnz),
        "n_cold_test": int(split.cold_test.nnz),
        "n_metadata_features": int(metadata.shape[1]),
    }
    protocol = {
        "cold_share": config.cold_share,
        "test_share": config.test_share,
        "max_users": config.max_users,
        "k": config.k,
        "seed": config.seed,
        "max_tags": config.max_tags,
        "vocabulary_tags": config.vocabulary_tags,
        "lightfm": config.lightfm.to_dict(),
        "interactions": "binary",
        "score": "user . item + item bias",
    }
    seconds["total"] = round(time.perf_counter() - started, 2)
    seconds["prepare"] = round(seconds["prepare"], 2)
    return ColdStartReport(models, protocol, data_section, seconds)
