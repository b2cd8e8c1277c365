"""Importers of real listening data into the project's own ``tracks.jsonl`` / ``events.jsonl``.

Each importer reads one public format and writes ``OUT/tracks.jsonl`` (``schemas.Track`` per
line) and ``OUT/events.jsonl`` (``schemas.PlayEvent`` per line, time order), and returns an
:class:`ImportReport` (counts, and the bad rows it skipped by reason).

- :func:`import_lastfm1k`: Last.fm-1K listening history (TSV, sessions split at time gaps).
- :func:`import_hetrec`: hetrec2011-lastfm-2k user-artist play counts and tags
  (:func:`load_hetrec` gives the raw arrays for evaluation).
- :func:`import_sessions_csv`: a plain CSV, one session of track ids per line (one file or
  several in time order, e.g. the LESSR ``valid.txt test.txt``).
- :func:`import_30music`: the 30Music session-rec slices (TSV plays, tags and skips JSON).
"""

from training.importers.common import ImportReport, normalise_name, stable_track_id
from training.importers.hetrec import HetrecData, import_hetrec, load_hetrec, looks_like_genre
from training.importers.lastfm1k import import_lastfm1k, parse_timestamp_ms
from training.importers.sessions_csv import import_sessions_csv
from training.importers.thirtymusic import import_30music

__all__ = [
    "HetrecData",
    "ImportReport",
    "import_30music",
    "import_hetrec",
    "import_lastfm1k",
    "import_sessions_csv",
    "load_hetrec",
    "looks_like_genre",
    "normalise_name",
    "parse_timestamp_ms",
    "stable_track_id",
]
