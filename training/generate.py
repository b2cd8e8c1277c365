"""Synthetic, structured listening data: a catalog and play/skip sessions, deterministic per seed.

The process is built so that *order* carries signal a popularity or co-occurrence baseline
cannot fully use, while staying cheap (all sessions advance together, one numpy step per
position; no per-event work is proportional to the catalog size).

Catalog
    ``n_genres`` genres (ring-ordered, see :data:`training.synth_tables.GENRES`) with audio
    profiles, ``n_moods`` moods on the valence/arousal circle. Artists have a main genre
    (sometimes a secondary, neighbouring one), a main mood and 1+ albums of ~10 tracks. Each
    track has a latent *position* in ``[0, 1]`` along its genre's axis (artists and albums are
    clustered on it, an album's tracks rise along it in track order; energy and tempo rise
    with it). Popularity is exactly Zipf over tracks,
    correlated with the artist.
Users
    A Dirichlet taste over genres and moods, a favourite position per genre and a skip
    propensity.
Sessions
    A latent state (genre ``g``, mood ``m``, position ``x``, signed velocity ``v``). A session
    starts at a genre/mood drawn from the user's taste, near their favourite position. Each
    step the state drifts (``x += v``: the direction is fixed per session, so the next track
    lies *ahead* of the previous ones), sometimes moves to a neighbouring genre on the genre
    graph or to a neighbouring mood. The track is then, in order of priority: the next track of
    the last played album (``p_album``), a random popular track (``p_explore``), or a draw
    from a window of the genre's tracks around ``x`` weighted by a Gaussian kernel in rank,
    popularity ``** popularity_bias`` and mood affinity, excluding recent tracks. Tracks far
    from the state (other genre, other mood, far in rank) are likelier to be skipped.
Time
    Epoch milliseconds from ``start_ts``: within a session the next event follows the previous
    one's ``ms_played`` plus a short pause; a user's sessions are hours apart.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson
from tqdm import tqdm

from schemas import AUDIO_FEATURES, PlayEvent, Track
from training import synth_tables as tables
from training.errors import DataError
from training.io import write_events, write_tracks

logger = logging.getLogger(__name__)

_WINDOW = 24  # candidate tracks per window draw
_RECENT = 8  # recent tracks excluded from window draws
_HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """Every knob of the synthetic process; the same config always gives the same data."""

    tracks: int = 20_000
    users: int = 1_000
    sessions_per_user: int = 10
    seed: int = 0
    n_genres: int = 20
    n_moods: int = 10
    mean_session_length: float = 14.0
    max_session_length: int = 200
    zipf_exponent: float = 1.0
    popularity_bias: float = 0.5
    p_genre_jump: float = 0.06
    p_mood_change: float = 0.08
    p_album: float = 0.1
    p_explore: float = 0.03
    p_hit: float = 0.06
    p_start_hit: float = 0.5
    speed_ranks: float = 6.0
    kernel_ranks: float = 2.5
    mean_gap_hours: float = 20.0
    start_ts: int = 1_704_067_200_000  # 2024-01-01T00:00:00Z

    def __post_init__(self) -> None:
        checks = [
            (self.tracks >= 50, "tracks must be >= 50"),
            (self.users >= 1, "users must be >= 1"),
            (self.sessions_per_user >= 1, "sessions_per_user must be >= 1"),
            (1 <= self.n_genres <= len(tables.GENRES), f"n_genres must be 1..{len(tables.GENRES)}"),
            (2 <= self.n_moods <= len(tables.MOODS), f"n_moods must be 2..{len(tables.MOODS)}"),
            (2 <= self.mean_session_length <= self.max_session_length, "bad session lengths"),
            (self.start_ts >= 0, "start_ts must be >= 0"),
        ]
        probs = ("p_genre_jump", "p_mood_change", "p_album", "p_explore", "p_hit", "p_start_hit")
        for prob in probs:
            checks.append((0.0 <= getattr(self, prob) <= 1.0, f"{prob} must be in [0, 1]"))
        errors = [msg for ok, msg in checks if not ok]
        if errors:
            raise DataError("invalid generator config: " + "; ".join(errors))


@dataclass(frozen=True, slots=True)
class _Catalog:
    """Arrays describing the catalog (index = item index = row of ``tracks.jsonl``)."""

    genre: np.ndarray  # (N,) main genre
    mood: np.ndarray  # (N,) mood
    duration_ms: np.ndarray  # (N,)
    popularity: np.ndarray  # (N,) Zipf weight, max 1
    next_in_album: np.ndarray  # (N,) next track of the album or -1
    order: np.ndarray  # track indices sorted by (genre, position)
    offsets: np.ndarray  # (G + 1,) start of each genre in ``order``
    rank: np.ndarray  # (N,) rank of each track inside its genre
    tracks: list[Track]


def _zipf(rng: np.random.Generator, latent: np.ndarray, exponent: float) -> np.ndarray:
    """Zipf weights ``1 / rank**exponent``, ranks given by sorting ``latent`` (descending)."""
    ranks = np.empty(len(latent), dtype=np.int64)
    ranks[np.argsort(-latent, kind="stable")] = np.arange(len(latent))
    return (ranks + 1.0) ** -exponent


def _sizes(rng: np.random.Generator, total: int, mean_extra: float) -> np.ndarray:
    """Group sizes ``1 + Poisson(mean_extra)`` summing exactly to ``total``."""
    sizes = 1 + rng.poisson(mean_extra, size=int(total / (1 + mean_extra) * 1.5) + 8)
    while sizes.sum() < total:
        sizes = np.concatenate([sizes, 1 + rng.poisson(mean_extra, size=len(sizes))])
    cum = np.cumsum(sizes)
    n = int(np.searchsorted(cum, total)) + 1
    sizes = sizes[:n].copy()
    sizes[-1] -= int(cum[n - 1] - total)
    return sizes


def _build_catalog(cfg: GeneratorConfig, rng: np.random.Generator) -> _Catalog:
    n, n_genres, n_moods = cfg.tracks, cfg.n_genres, cfg.n_moods
    genre_names = tables.GENRES[:n_genres]
    mood_names = [name for name, _ in tables.MOODS[:n_moods]]
    album_size = _sizes(rng, n, 9.0)
    artist_albums = _sizes(rng, len(album_size), 2.0)
    n_albums, n_artists = len(album_size), len(artist_albums)
    album_artist = np.repeat(np.arange(n_artists), artist_albums)
    track_album = np.repeat(np.arange(n_albums), album_size)
    album_start = np.cumsum(album_size) - album_size
    track_no = np.arange(n) - album_start[track_album]
    track_artist = album_artist[track_album]

    # Artists: main genre (uneven genre sizes), sometimes a neighbouring second genre, a mood.
    genre_weight = _zipf(rng, rng.random(n_genres), 0.6)
    artist_genre = rng.choice(n_genres, size=n_artists, p=genre_weight / genre_weight.sum())
    has_second = (rng.random(n_artists) < 0.25) & (n_genres > 1)
    second = (artist_genre + rng.choice([-1, 1], size=n_artists)) % n_genres
    genre_mood = rng.dirichlet(np.full(n_moods, 0.7), size=n_genres)
    mood_cum = np.cumsum(genre_mood[artist_genre], axis=1)
    artist_mood = np.minimum((mood_cum < rng.random(n_artists)[:, None]).sum(1), n_moods - 1)
    step = rng.choice([-1, 1], size=n_albums) * (rng.random(n_albums) < 0.3)
    album_mood = (artist_mood[album_artist] + step) % n_moods
    step = rng.choice([-1, 1], size=n) * (rng.random(n) < 0.15)
    mood = (album_mood[track_album] + step) % n_moods
    genre = artist_genre[track_artist]

    # Latent position along the genre axis: artists and albums are clustered on it.
    artist_center = rng.random(n_artists)
    album_off = rng.normal(0.0, 0.03, size=n_albums)
    # Inside an album the position rises with the track number (albums play "forwards").
    in_album = (track_no - (album_size[track_album] - 1) / 2) * 0.004
    pos = artist_center[track_artist] + album_off[track_album] + in_album
    pos += rng.normal(0.0, 0.004, size=n)
    pos = np.clip(pos, 0.0, 1.0)
    order = np.lexsort((np.arange(n), pos, genre))
    counts = np.bincount(genre, minlength=n_genres)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - offsets[genre[order]]

    # Audio: genre profile + mood (circumplex) + artist offset + position + noise.
    profile = tables.GENRE_PROFILES[:n_genres]
    ang = tables.mood_angles(n_moods)
    feats = profile[genre, :8].copy()
    feats[:, 2] += 0.25 * np.cos(ang[mood])
    feats[:, 1] += 0.15 * np.sin(ang[mood])
    feats[:, 0] += 0.08 * np.sin(ang[mood])
    feats[:, 1] += 0.15 * (pos - 0.5)
    feats[:, 3] += 20.0 * (pos - 0.5)
    feats += rng.normal(0.0, 0.5, size=(n_artists, 8))[track_artist] * tables.FEATURE_NOISE
    feats += rng.normal(0.0, 1.0, size=(n, 8)) * tables.FEATURE_NOISE
    feats = np.clip(feats, tables.FEATURE_LOW, tables.FEATURE_HIGH)
    duration_s = profile[genre, 8] * rng.lognormal(-0.045, 0.3, size=n)
    duration_ms = (np.clip(duration_s, 60.0, 900.0) * 1000).astype(np.int64)

    latent = np.log(_zipf(rng, rng.random(n_artists), 1.0))[track_artist] + rng.normal(0, 1, n)
    popularity = _zipf(rng, latent, cfg.zipf_exponent)
    last = track_no == album_size[track_album] - 1
    next_in_album = np.where(last, -1, np.arange(n) + 1)

    artist_year = rng.integers(1965, 2021, size=n_artists)
    album_no = np.arange(n_albums) - (np.cumsum(artist_albums) - artist_albums)[album_artist]
    album_gap = rng.integers(1, 4, size=n_albums)
    album_year = np.minimum(artist_year[album_artist] + album_no * album_gap, 2024)
    artist_names = tables.make_names(rng, n_artists, style="artist", unique=True)
    album_names = tables.make_names(rng, n_albums, style="title")
    titles = tables.make_names(rng, n, style="title")
    rounded = [np.round(feats[:, j], d).tolist() for j, d in enumerate(tables.FEATURE_DECIMALS)]
    width = max(6, len(str(n - 1)))
    tracks: list[Track] = []
    for i in range(n):
        a, b = int(track_artist[i]), int(track_album[i])
        genres = [genre_names[genre[i]]]
        if has_second[a]:
            genres.append(genre_names[second[a]])
        tracks.append(
            Track(
                track_id=f"t{i:0{width}d}",
                title=titles[i],
                artist=artist_names[a],
                genres=genres,
                moods=[mood_names[mood[i]]],
                duration_ms=int(duration_ms[i]),
                album=album_names[b],
                year=int(album_year[b]),
                audio={name: rounded[j][i] for j, name in enumerate(AUDIO_FEATURES)},
            )
        )
    return _Catalog(
        genre, mood, duration_ms, popularity, next_in_album, order, offsets, rank, tracks
    )


def _draw(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row of ``weights`` (rows need not be normalised, sum > 0)."""
    cum = np.cumsum(weights, axis=1)
    r = rng.random(len(weights)) * cum[:, -1]
    # ``<=``: the first column whose cumulative weight exceeds r, never a zero-weight one.
    return np.minimum((cum <= r[:, None]).sum(axis=1), weights.shape[1] - 1)


def _transition(rng: np.random.Generator, n: int, sizes: np.ndarray) -> np.ndarray:
    """Row-stochastic genre/mood graph: ring neighbours (±1, ±2) plus one random chord per
    node; nodes of size 0 get no incoming weight."""
    t = np.zeros((n, n))
    idx = np.arange(n)
    for shift, w in ((1, 1.0), (2, 0.4)):
        t[idx, (idx + shift) % n] += w
        t[idx, (idx - shift) % n] += w
    t[idx, rng.integers(0, n, size=n)] += 0.3
    np.fill_diagonal(t, 0.0)
    t *= sizes[None, :] > 0
    empty = t.sum(1) == 0
    t[empty] = sizes.astype(np.float64)
    return t / t.sum(axis=1, keepdims=True)


def _simulate(
    cfg: GeneratorConfig, cat: _Catalog, rng: np.random.Generator, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Run every session in lock-step; returns ``(tracks, skips)`` of shape ``(S, L_max)``
    (``-1`` / ``False`` past a session's end)."""
    n_users, n_genres, n_moods = cfg.users, cfg.n_genres, cfg.n_moods
    counts = np.diff(cat.offsets)
    genre_trans = _transition(rng, n_genres, counts)
    mood_aff = tables.mood_affinity(n_moods)
    mood_trans = mood_aff - np.eye(n_moods) * mood_aff.diagonal()
    mood_trans /= mood_trans.sum(1, keepdims=True)
    genre_pop = counts / counts.sum()

    taste = 0.85 * rng.dirichlet(np.full(n_genres, 0.3), size=n_users) + 0.15 * genre_pop
    taste *= counts > 0
    mood_taste = rng.dirichlet(np.full(n_moods, 0.5), size=n_users)
    anchor = rng.random((n_users, n_genres))
    skip_bias = rng.normal(0.0, 0.4, size=n_users)

    n_sessions = n_users * cfg.sessions_per_user
    user = np.repeat(np.arange(n_users), cfg.sessions_per_user)
    sigma = 0.6
    mu = math.log(cfg.mean_session_length) - sigma**2 / 2
    lengths = np.rint(rng.lognormal(mu, sigma, size=n_sessions)).astype(np.int64)
    lengths = np.clip(lengths, 2, cfg.max_session_length)
    max_len = int(lengths.max())

    g = _draw(rng, taste[user])
    m = _draw(rng, mood_taste[user])
    x = np.clip(anchor[user, g] + rng.normal(0.0, 0.1, size=n_sessions), 0.0, 1.0)
    v = rng.choice([-1.0, 1.0], size=n_sessions) * rng.lognormal(0.0, 0.4, n_sessions)
    v *= cfg.speed_ranks / np.exp(0.08)
    last_played = np.full(n_sessions, -1, dtype=np.int64)
    recent = np.full((n_sessions, _RECENT), -1, dtype=np.int64)
    out_tracks = np.full((n_sessions, max_len), -1, dtype=np.int64)
    out_skips = np.zeros((n_sessions, max_len), dtype=bool)
    pop_w = cat.popularity**cfg.popularity_bias
    cum_pop = np.cumsum(cat.popularity) / cat.popularity.sum()
    genre_cum = np.concatenate([[0.0], np.cumsum(cat.popularity[cat.order])])
    tail = np.log(cat.popularity) / np.log(cat.popularity.min())  # 0 = most popular, 1 = least
    span = np.maximum(counts - 1, 1).astype(np.float64)
    window = np.arange(_WINDOW)

    for t in tqdm(range(max_len), desc="sessions", unit="step", disable=not progress):
        act = np.nonzero(lengths > t)[0]
        b = len(act)
        ga, ma, xa, va, last = g[act], m[act], x[act], v[act], last_played[act]
        if t > 0:
            jump = rng.random(b) < cfg.p_genre_jump
            if jump.any():
                ga[jump] = _draw(rng, genre_trans[ga[jump]])
            turn = rng.random(b) < cfg.p_mood_change
            if turn.any():
                ma[turn] = _draw(rng, mood_trans[ma[turn]])
            xa = xa + (va + rng.normal(0.0, 1.0, b)) / span[ga]
            low, high = xa < 0.0, xa > 1.0
            xa = np.where(low, -xa, np.where(high, 2.0 - xa, xa))
            va = np.where(low | high, -va, va)
            xa = np.clip(xa, 0.0, 1.0)

        # Window draw around x in the current genre.
        n_g = counts[ga]
        center = xa * span[ga]
        start = np.clip(np.floor(center).astype(np.int64) - _WINDOW // 2 + 1, 0, None)
        start = np.minimum(start, np.maximum(n_g - _WINDOW, 0))
        idx = start[:, None] + window
        valid = idx < n_g[:, None]
        idx = np.minimum(idx, n_g[:, None] - 1)
        cand = cat.order[cat.offsets[ga][:, None] + idx]
        w = np.exp(-0.5 * ((idx - center[:, None]) / cfg.kernel_ranks) ** 2)
        w *= pop_w[cand] * mood_aff[ma[:, None], cat.mood[cand]] * valid
        w *= ~(cand[:, :, None] == recent[act][:, None, :]).any(axis=2)
        dead = w.sum(axis=1) <= 0
        w[dead] = valid[dead]
        chosen = cand[np.arange(b), _draw(rng, w)]

        # A hit: a popularity-weighted draw from the whole current genre; the state jumps to it.
        hit = rng.random(b) < (cfg.p_start_hit if t == 0 else cfg.p_hit)
        if hit.any():
            lo, hi = genre_cum[cat.offsets[ga[hit]]], genre_cum[cat.offsets[ga[hit] + 1]]
            at = np.searchsorted(genre_cum, lo + rng.random(int(hit.sum())) * (hi - lo)) - 1
            at = np.clip(at, cat.offsets[ga[hit]], cat.offsets[ga[hit] + 1] - 1)
            chosen[hit] = cat.order[at]
            xa[hit] = cat.rank[chosen[hit]] / span[ga[hit]]
        if t > 0:
            follow = np.where(last >= 0, cat.next_in_album[np.maximum(last, 0)], -1)
            use_album = (follow >= 0) & (rng.random(b) < cfg.p_album) & ~hit
            chosen = np.where(use_album, follow, chosen)
            ga = np.where(use_album, cat.genre[follow], ga)
            explore = ~use_album & ~hit & (rng.random(b) < cfg.p_explore)
            picks = np.minimum(np.searchsorted(cum_pop, rng.random(b)), len(cum_pop) - 1)
            chosen = np.where(explore, picks, chosen)

        # Skips: likelier far from the session's state (genre, mood, rank), for unpopular tracks.
        dist_rank = np.abs(cat.rank[chosen] - xa * span[ga]) / cfg.kernel_ranks
        logit = (
            -3.7
            + skip_bias[user[act]]
            + 2.8 * (cat.genre[chosen] != ga)
            + 1.8 * (1.0 - mood_aff[ma, cat.mood[chosen]])
            + 0.4 * np.clip(dist_rank - 1.0, 0.0, 4.0)
            + 0.8 * tail[chosen]
        )
        skip = rng.random(b) < 1.0 / (1.0 + np.exp(-logit))
        played = ~skip
        # A played track pulls the state to it (the listener "settles" where they are).
        same = played & (cat.genre[chosen] == ga)
        xa = np.where(same, 0.5 * xa + 0.5 * cat.rank[chosen] / span[ga], xa)
        # ... and a played track sometimes sets the mood the listener is in.
        adopt = played & (rng.random(b) < 0.35)
        ma = np.where(adopt, cat.mood[chosen], ma)
        g[act], m[act], x[act], v[act] = ga, ma, xa, va
        last_played[act] = np.where(played, chosen, last)
        recent[act, t % _RECENT] = chosen
        out_tracks[act, t] = chosen
        out_skips[act, t] = skip
    return out_tracks, out_skips


def generate(
    config: GeneratorConfig, *, progress: bool = False
) -> tuple[list[Track], list[PlayEvent]]:
    """Generate ``(catalog, events)``; events are in time order across all sessions.

    Pure: the result depends only on ``config`` (``progress`` only shows tqdm bars on stderr).
    """
    rng = np.random.default_rng(config.seed)
    cat = _build_catalog(config, rng)
    tracks_mat, skips_mat = _simulate(config, cat, rng, progress)
    n_sessions, max_len = tracks_mat.shape
    mask = tracks_mat >= 0
    safe = np.maximum(tracks_mat, 0)
    dur = cat.duration_ms[safe]
    partial = rng.random(tracks_mat.shape) < 0.12
    frac = np.where(partial, rng.uniform(0.5, 1.0, size=tracks_mat.shape), 1.0)
    ms_play = (dur * frac).astype(np.int64)
    ms_skip = rng.integers(1_500, 30_000, size=tracks_mat.shape)
    ms = np.where(skips_mat, np.minimum(ms_skip, dur), ms_play) * mask
    pause = rng.integers(200, 4_000, size=tracks_mat.shape) * mask
    elapsed = np.cumsum(ms + pause, axis=1)
    offset_in_session = elapsed - (ms + pause)  # time from the session's start to each event
    duration = elapsed[:, -1]

    spu = config.sessions_per_user
    gap_h = rng.lognormal(math.log(config.mean_gap_hours) - 0.5, 1.0, size=(config.users, spu))
    gaps = (np.maximum(gap_h, 0.5) * _HOUR_MS).astype(np.int64)
    first = rng.integers(0, 7 * 24 * _HOUR_MS, size=config.users)
    prev_end = np.concatenate(
        [np.zeros((config.users, 1), np.int64), duration.reshape(config.users, spu)[:, :-1]], 1
    )
    starts = config.start_ts + first[:, None] + np.cumsum(prev_end + gaps, axis=1) - gaps[:, :1]
    ts = starts.reshape(-1)[:, None] + offset_in_session

    sess_idx, step_idx = np.nonzero(mask)
    ev_ts = ts[sess_idx, step_idx]
    order = np.lexsort((step_idx, sess_idx, ev_ts))
    uw, sw = max(5, len(str(config.users - 1))), max(4, len(str(spu - 1)))
    ew = max(4, len(str(max_len - 1)))
    user_ids = [f"u{u:0{uw}d}" for u in range(config.users)]
    session_ids = [f"{user_ids[s // spu]}-s{s % spu:0{sw}d}" for s in range(n_sessions)]
    track_ids = [t.track_id for t in cat.tracks]
    s_list = sess_idx[order].tolist()
    k_list = step_idx[order].tolist()
    tr_list = tracks_mat[sess_idx, step_idx][order].tolist()
    skip_list = skips_mat[sess_idx, step_idx][order].tolist()
    ms_list = ms[sess_idx, step_idx][order].tolist()
    ts_list = ev_ts[order].tolist()
    events: list[PlayEvent] = []
    for i in tqdm(range(len(order)), desc="events", unit="ev", disable=not progress):
        s, k = s_list[i], k_list[i]
        sid = session_ids[s]
        events.append(
            PlayEvent(
                event_id=f"{sid}-e{k:0{ew}d}",
                user_id=user_ids[s // spu],
                session_id=sid,
                track_id=track_ids[tr_list[i]],
                event_type="skip" if skip_list[i] else "play",
                ts=ts_list[i],
                ms_played=ms_list[i],
            )
        )
    logger.info(
        "generated %d tracks, %d sessions, %d events (%.1f%% skips)",
        len(cat.tracks),
        n_sessions,
        len(events),
        100.0 * float(skips_mat[mask].mean()),
    )
    return cat.tracks, events


def write_dataset(
    out_dir: str | os.PathLike[str],
    tracks: Sequence[Track],
    events: Sequence[PlayEvent],
    config: GeneratorConfig | None = None,
) -> dict[str, Path]:
    """Write ``tracks.jsonl`` and ``events.jsonl`` (and ``generator.json``, the config, when
    given) into ``out_dir``; returns the paths by name. Output is byte-identical for the same
    inputs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"tracks": out / "tracks.jsonl", "events": out / "events.jsonl"}
    write_tracks(paths["tracks"], tracks)
    write_events(paths["events"], events)
    if config is not None:
        paths["config"] = out / "generator.json"
        payload = {"format": "nexttrack-generator/v1", **asdict(config)}
        paths["config"].write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    return paths
