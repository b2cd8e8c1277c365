"""Pieces shared by the importers: the report, bad-row bookkeeping, stable ids, output paths."""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from schemas.validation import MAX_STRING_CHARS
from training.errors import DataError

logger = logging.getLogger(__name__)

#: How many bad rows are quoted (in the report and the log) before they are only counted.
MAX_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an importer read and wrote. ``bad_reasons`` counts skipped rows by reason."""

    source: str
    input_path: str
    tracks_path: Path
    events_path: Path
    n_tracks: int
    n_events: int
    n_sessions: int
    n_users: int
    rows_read: int
    bad_rows: int
    bad_reasons: dict[str, int] = field(default_factory=dict)
    bad_examples: tuple[str, ...] = ()
    #: Format-specific remarks for the summary (one line each), e.g. what could not be joined.
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """A few human-readable lines for the CLI."""
        lines = [
            f"{self.source}: {self.rows_read} rows read from {self.input_path}",
            f"  {self.n_tracks} tracks -> {self.tracks_path}",
            f"  {self.n_events} events, {self.n_sessions} sessions, {self.n_users} users"
            f" -> {self.events_path}",
        ]
        if self.bad_rows:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.bad_reasons.items()))
            lines.append(f"  {self.bad_rows} bad rows skipped ({reasons})")
            lines.extend(f"    {example}" for example in self.bad_examples)
        lines.extend(f"  {note}" for note in self.notes)
        return "\n".join(lines)


class BadRows:
    """Counts rejected input rows by reason and keeps the first few as examples."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []

    def add(self, where: str, reason: str, detail: str = "") -> None:
        self.reasons[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            text = f"{where}: {reason}" + (f" ({detail})" if detail else "")
            self.examples.append(text)
            logger.warning("%s: skipping bad row %s", self.source, text)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def report(
        self,
        input_path: str,
        paths: tuple[Path, Path],
        *,
        n_tracks: int,
        n_events: int,
        n_sessions: int,
        n_users: int,
        rows_read: int,
        notes: tuple[str, ...] = (),
    ) -> ImportReport:
        """The :class:`ImportReport` of an import that wrote ``paths = (tracks, events)``,
        with this object's bad-row counts and examples."""
        return ImportReport(
            source=self.source,
            input_path=input_path,
            tracks_path=paths[0],
            events_path=paths[1],
            n_tracks=n_tracks,
            n_events=n_events,
            n_sessions=n_sessions,
            n_users=n_users,
            rows_read=rows_read,
            bad_rows=self.total,
            bad_reasons=dict(self.reasons),
            bad_examples=tuple(self.examples),
            notes=notes,
        )


def normalise_name(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: the key used to match names."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def stable_track_id(prefix: str, artist: str, title: str, length: int = 16) -> str:
    """A deterministic id for a track without one: ``prefix`` + hex sha1 of the normalised
    ``"artist\\ttitle"`` (same names, however spaced or cased, give the same id)."""
    key = f"{normalise_name(artist)}\t{normalise_name(title)}".encode()
    return prefix + hashlib.sha1(key).hexdigest()[:length]


def clean_text(text: str) -> str | None:
    """Strip and bound a free-text field; ``None`` when it is empty (not a valid name)."""
    text = text.strip()
    if not text:
        return None
    return text[:MAX_STRING_CHARS]


def output_paths(out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(tracks.jsonl, events.jsonl)`` inside ``out_dir`` (created)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out / "tracks.jsonl", out / "events.jsonl"


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a :class:`Path`, or :class:`DataError` if it is not a readable file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found: {p}")
    return p
