"""Cold-start check on a tiny synthetic hetrec-like dataset (never the real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from training.coldstart import (
    ColdStartConfig,
    evaluate_coldstart,
    hetrec_tracks,
    metadata_matrix,
    split_coldstart,
)
from training.importers import load_hetrec
from training.lightfm_model import TrainingConfig

GENRES = ("rock", "jazz", "techno", "folk")
FLAVOURS = {
    "rock": ("guitar", "loud"),
    "jazz": ("saxophone", "smooth"),
    "techno": ("berlin", "minimal techno"),
    "folk": ("acoustic", "storytelling"),
}


def write_fixture(root: Path, n_artists: int = 160, n_users: int = 120, seed: int = 0) -> Path:
    """Artists of four genres tagged by genre; each user listens mostly inside one genre."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    genre_of = np.arange(n_artists) % len(GENRES)
    tags = [t for g in GENRES for t in (g, *FLAVOURS[g])]
    tag_id = {t: i + 1 for i, t in enumerate(tags)}
    (root / "artists.dat").write_text(
        "id\tname\turl\tpictureURL\n"
        + "".join(f"{a + 1}\tArtist {a}\thttp://x/{a}\t\n" for a in range(n_artists))
    )
    (root / "tags.dat").write_text(
        "tagID\ttagValue\n" + "".join(f"{i}\t{t}\n" for t, i in tag_id.items())
    )
    tagged = ["userID\tartistID\ttagID\tday\tmonth\tyear\n"]
    for a in range(n_artists):
        g = GENRES[genre_of[a]]
        for user, tag in ((1, g), (2, g), (3, FLAVOURS[g][a % 2])):
            tagged.append(f"{user}\t{a + 1}\t{tag_id[tag]}\t1\t1\t2010\n")
    (root / "user_taggedartists.dat").write_text("".join(tagged))
    plays = ["userID\tartistID\tweight\n"]
    for u in range(n_users):
        g = u % len(GENRES)
        own = np.flatnonzero(genre_of == g)
        chosen = set(rng.choice(own, 14, replace=False).tolist())
        chosen |= set(rng.choice(n_artists, 2, replace=False).tolist())
        for a in sorted(chosen):
            plays.append(f"{u + 1}\t{a + 1}\t{int(rng.integers(1, 500))}\n")
    (root / "user_artists.dat").write_text("".join(plays))
    return root


@pytest.fixture(scope="module")
def hetrec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("hetrec"))


def fast_config(**kwargs: object) -> ColdStartConfig:
    lightfm = TrainingConfig(no_components=16, epochs=20, learning_rate=0.05, seed=1)
    return ColdStartConfig(lightfm=lightfm, **kwargs)  # type: ignore[arg-type]


def test_split_holds_out_cold_artists_completely(hetrec_dir: Path) -> None:
    data = load_hetrec(hetrec_dir)
    split = split_coldstart(data, fast_config(cold_share=0.2))
    cold = split.cold
    assert cold.sum() == 32  # 20% of 160 artists with listeners
    assert split.train[:, cold].nnz == 0 and split.warm_test[:, cold].nnz == 0
    assert split.cold_test[:, ~cold].nnz == 0
    total = split.train.nnz + split.warm_test.nnz + split.cold_test.nnz
    assert total == len(data.weights)
    # every user keeps at least one training interaction when they have warm ones
    warm_per_user = (split.train + split.warm_test)[:, ~cold].getnnz(axis=1)
    assert np.all(split.train.getnnz(axis=1)[warm_per_user > 0] >= 1)
    again = split_coldstart(data, fast_config(cold_share=0.2))
    assert np.array_equal(again.cold, cold)  # seeded


def test_metadata_has_tags_but_no_artist_identity(hetrec_dir: Path) -> None:
    data = load_hetrec(hetrec_dir)
    tracks = hetrec_tracks(data)
    assert "rock" in tracks[0].genres and "rock" in tracks[0].tags
    meta = metadata_matrix(data, fast_config())
    assert meta.shape[0] == 160
    assert np.allclose(np.asarray(meta.sum(axis=1)).ravel(), 1.0)
    # tags {genre, flavour} + genres {genre (+ "minimal techno")}: at most 3, no name feature
    assert meta.getnnz(axis=1).max() <= 3
    assert meta.shape[1] < 160


def test_hybrid_beats_pure_cf_on_cold_artists(hetrec_dir: Path, tmp_path: Path) -> None:
    report = evaluate_coldstart(hetrec_dir, fast_config(cold_share=0.2), progress=False)
    cf, hybrid, content = (report.models[m] for m in ("cf", "hybrid", "content"))
    assert hybrid["cold_auc"] > cf["cold_auc"] + 0.2
    assert hybrid["cold_auc"] > 0.8 and content["cold_auc"] > 0.8
    assert 0.3 < cf["cold_auc"] < 0.7  # no information about cold artists
    for metrics in report.models.values():
        for key in ("warm_auc", "warm_recall@20", "cold_auc", "cold_recall@20"):
            assert 0.0 <= metrics[key] <= 1.0
    assert hybrid["warm_auc"] > 0.7
    obj = orjson.loads(report.write_json(tmp_path / "coldstart.json").read_bytes())
    assert set(obj) == {"models", "protocol", "data", "seconds"}
    assert obj["data"]["n_cold_items"] == 32
    assert "cold_auc" in report.table()


def test_cli_evaluate_coldstart(hetrec_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streams.cli import build_app

    args = ["evaluate-coldstart", "--hetrec", str(hetrec_dir), "--epochs", "5"]
    args += ["--components", "8", "--no-progress", "--report", str(tmp_path / "c.json")]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "hybrid" in result.output and "cold_auc" in result.output
    assert set(orjson.loads((tmp_path / "c.json").read_bytes())["models"]) == {
        "cf",
        "content",
        "hybrid",
    }
