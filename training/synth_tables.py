"""Fixed tables behind the synthetic data generator (:mod:`training.generate`).

Kept apart so the generator module holds only the process. Everything here is constant data
plus one deterministic name maker; nothing is random unless a generator is passed in.
"""

from __future__ import annotations

import numpy as np

#: Genre names in ring order: neighbours on the ring are musically related, and the genre
#: transition graph is built from ring neighbours (plus a few random chords).
GENRES: tuple[str, ...] = (
    "rock",
    "indie",
    "punk",
    "metal",
    "industrial",
    "techno",
    "house",
    "disco",
    "funk",
    "soul",
    "r&b",
    "hip hop",
    "reggae",
    "latin",
    "pop",
    "k-pop",
    "synthpop",
    "trance",
    "drum and bass",
    "ambient",
    "classical",
    "jazz",
    "blues",
    "country",
    "folk",
)

#: Per-genre means, columns in :data:`schemas.AUDIO_FEATURES` order (danceability, energy,
#: valence, tempo, acousticness, instrumentalness, loudness, speechiness) plus the mean track
#: duration in seconds as a ninth column.
GENRE_PROFILES: np.ndarray = np.array(
    [
        [0.50, 0.75, 0.50, 125, 0.10, 0.05, -7.0, 0.05, 230],
        [0.55, 0.62, 0.45, 118, 0.25, 0.10, -8.0, 0.04, 220],
        [0.45, 0.90, 0.50, 160, 0.02, 0.02, -5.0, 0.07, 160],
        [0.38, 0.95, 0.30, 140, 0.01, 0.10, -4.5, 0.08, 290],
        [0.55, 0.85, 0.25, 130, 0.03, 0.35, -6.0, 0.06, 280],
        [0.72, 0.85, 0.35, 130, 0.02, 0.80, -7.0, 0.05, 380],
        [0.80, 0.78, 0.55, 124, 0.04, 0.60, -7.0, 0.06, 340],
        [0.80, 0.75, 0.80, 118, 0.10, 0.15, -8.0, 0.05, 260],
        [0.78, 0.70, 0.75, 108, 0.12, 0.20, -8.0, 0.06, 250],
        [0.62, 0.55, 0.60, 100, 0.35, 0.05, -9.0, 0.05, 220],
        [0.70, 0.55, 0.50, 95, 0.18, 0.02, -7.0, 0.10, 225],
        [0.78, 0.65, 0.50, 95, 0.12, 0.02, -6.5, 0.28, 215],
        [0.75, 0.58, 0.70, 85, 0.15, 0.08, -8.0, 0.12, 235],
        [0.75, 0.72, 0.72, 105, 0.22, 0.03, -6.0, 0.08, 220],
        [0.68, 0.68, 0.60, 118, 0.15, 0.01, -6.0, 0.07, 205],
        [0.70, 0.80, 0.62, 122, 0.08, 0.01, -4.5, 0.08, 200],
        [0.65, 0.70, 0.55, 120, 0.05, 0.20, -7.0, 0.04, 230],
        [0.58, 0.88, 0.40, 138, 0.02, 0.75, -6.0, 0.04, 400],
        [0.55, 0.92, 0.40, 172, 0.02, 0.55, -5.0, 0.07, 330],
        [0.30, 0.20, 0.25, 80, 0.75, 0.88, -20.0, 0.04, 380],
        [0.25, 0.18, 0.30, 95, 0.95, 0.90, -22.0, 0.04, 420],
        [0.55, 0.35, 0.55, 110, 0.75, 0.55, -14.0, 0.05, 320],
        [0.50, 0.45, 0.45, 100, 0.55, 0.15, -11.0, 0.05, 260],
        [0.58, 0.55, 0.62, 112, 0.45, 0.02, -8.0, 0.04, 210],
        [0.48, 0.35, 0.45, 105, 0.80, 0.10, -12.0, 0.04, 215],
    ],
    dtype=np.float64,
)

#: Spread of each feature around its genre/mood/artist mean (same column order, no duration).
FEATURE_NOISE: np.ndarray = np.array([0.08, 0.08, 0.12, 12.0, 0.10, 0.12, 2.0, 0.03])
#: Valid range of each feature (ratios in [0, 1], tempo in BPM, loudness in dB).
FEATURE_LOW: np.ndarray = np.array([0.0, 0.0, 0.0, 40.0, 0.0, 0.0, -40.0, 0.0])
FEATURE_HIGH: np.ndarray = np.array([1.0, 1.0, 1.0, 220.0, 1.0, 1.0, 0.0, 1.0])
#: Decimals kept per feature in ``tracks.jsonl``.
FEATURE_DECIMALS: tuple[int, ...] = (3, 3, 3, 1, 3, 3, 2, 3)

#: Moods on the valence/arousal circumplex: (name, angle in degrees). Angle 0 is pleasant,
#: 90 aroused, 180 unpleasant, 270 calm; the ring order makes neighbours similar moods.
MOODS: tuple[tuple[str, float], ...] = (
    ("happy", 20.0),
    ("uplifting", 50.0),
    ("energetic", 80.0),
    ("aggressive", 115.0),
    ("angry", 145.0),
    ("dark", 180.0),
    ("melancholic", 210.0),
    ("sad", 235.0),
    ("dreamy", 265.0),
    ("peaceful", 295.0),
    ("chill", 320.0),
    ("romantic", 345.0),
)

_SYLLABLES: tuple[str, ...] = (
    "ka", "lo", "mi", "ra", "ven", "tor", "sha", "el", "dra", "quin", "bel", "nor", "zu", "fa",
    "ri", "mon", "tes", "va", "lin", "go", "sol", "cy", "den", "mar", "ish", "pa", "ro", "ne",
    "thi", "ul", "ba", "kor", "si", "an", "te", "vo", "lu", "dax", "em", "or", "yu", "hal",
)  # fmt: skip

_WORDS: tuple[str, ...] = (
    "night", "silver", "river", "golden", "echo", "heart", "fire", "static", "summer", "glass",
    "shadow", "neon", "ocean", "velvet", "paper", "thunder", "midnight", "city", "garden",
    "electric", "desert", "winter", "honey", "broken", "wild", "crystal", "lonely", "satellite",
    "morning", "signal", "ghost", "dancing", "stone", "wire", "blue", "little", "secret",
    "gravity", "horizon", "lantern", "mirror", "orbit", "rain", "rebel", "slow", "sugar", "tide",
    "violet", "wolf", "young", "dream", "machine", "home", "light", "forever", "fading",
)  # fmt: skip


def mood_angles(n_moods: int) -> np.ndarray:
    """Circumplex angles (radians) of the first ``n_moods`` moods."""
    return np.deg2rad(np.array([angle for _, angle in MOODS[:n_moods]]))


def mood_affinity(n_moods: int, width_deg: float = 40.0, floor: float = 0.05) -> np.ndarray:
    """``(M, M)`` similarity of moods: 1 on the diagonal, Gaussian in angular distance."""
    ang = mood_angles(n_moods)
    diff = np.abs(ang[:, None] - ang[None, :])
    diff = np.minimum(diff, 2 * np.pi - diff)
    return np.maximum(np.exp(-0.5 * (diff / np.deg2rad(width_deg)) ** 2), floor)


def make_names(rng: np.random.Generator, n: int, *, style: str, unique: bool = False) -> list[str]:
    """``n`` deterministic fake names.

    ``style`` is ``"artist"`` (invented words from syllables, sometimes "The ..."), or
    ``"title"`` (1-3 capitalised English words). With ``unique=True`` a repeated name gets
    extra syllables until it is new.
    """
    syl = np.array(_SYLLABLES)
    words = np.array(_WORDS)
    if style == "artist":
        n_words = rng.integers(1, 3, size=n)
        n_syl = rng.integers(2, 4, size=(n, 2))
        picks = rng.integers(0, len(syl), size=(n, 2, 3))
        the = rng.random(n) < 0.15
        parts_all = syl[picks]
        names = []
        for i in range(n):
            name = " ".join(
                "".join(parts_all[i, w, : n_syl[i, w]]).capitalize() for w in range(n_words[i])
            )
            names.append(f"The {name}s" if the[i] else name)
    elif style == "title":
        n_words = rng.integers(1, 4, size=n)
        picks = words[rng.integers(0, len(words), size=(n, 3))]
        names = [" ".join(w.capitalize() for w in picks[i, : n_words[i]]) for i in range(n)]
    else:
        raise ValueError(f"unknown name style {style!r}")
    if unique:
        seen: set[str] = set()
        extra = rng.integers(0, len(syl), size=(n, 4))
        for i, name in enumerate(names):
            k = 0
            while name in seen:
                name = name + str(syl[extra[i, k % 4]]) if k < 8 else f"{name} {k}"
                k += 1
            seen.add(name)
            names[i] = name
    return names
