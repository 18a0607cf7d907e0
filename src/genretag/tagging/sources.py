"""What a tagging run reads: the tracks of a source (folder, CSV, one file), their content hashes, and the
plan of what to score (skip what this model version tagged, tag repeated content once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from genretag.audio.decoding import file_sha256, is_apple_metadata, is_audio_name, scan_folder
from genretag.core.errors import GenretagError, ScoringError
from genretag.core.paths import absolute, display


@dataclass(frozen=True)
class TrackSource:
    track_id: str
    path: Path


@dataclass(frozen=True)
class HashedTrack:
    track_id: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class TrackFailure:
    track_id: str
    path: Path
    sha256: str
    reason: str


@dataclass(frozen=True)
class SourceScan:
    """What a source holds: the tracks to tag and the files skipped, by reason (absolute paths)."""

    tracks: list[TrackSource]
    not_audio: list[Path] = field(default_factory=list)
    apple_metadata: list[Path] = field(default_factory=list)  # AppleDouble ``._*`` and ``__MACOSX/``

    @property
    def files(self) -> int:
        return len(self.tracks) + len(self.not_audio) + len(self.apple_metadata)


def scan_source(source: str | Path) -> SourceScan:
    """A folder (every file under it, recursively), a CSV with track_id,path, or one file.

    In a folder, track_id is the file's path below it without its extension; relative
    paths in a CSV are relative to the CSV's folder. Every path is absolute and normalised
    (genretag.paths.absolute). Files whose suffix no decoder reads, and macOS metadata, are
    counted, never silently dropped; a CSV or a single file is taken as given (its rows fail
    with their reason if they are not audio).
    """
    source = absolute(source)
    if source.is_dir():
        found = scan_folder(source)
        tracks = [TrackSource(p.relative_to(source).with_suffix("").as_posix(), p) for p in found.audio]
        return SourceScan(tracks, found.not_audio, found.apple_metadata)
    if source.suffix.lower() == ".csv":
        try:
            frame = pd.read_csv(source, dtype=str, keep_default_na=False)
        except FileNotFoundError as exc:
            raise ScoringError(f"{source}: no such CSV file") from exc
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ScoringError(f"{source}: not a readable CSV ({exc})") from exc
        missing = {"track_id", "path"} - set(frame.columns)
        if missing:
            raise ScoringError(f"{source}: the CSV needs columns track_id,path; missing {sorted(missing)}")
        return SourceScan([
            TrackSource(row.track_id or Path(row.path).stem, absolute(source.parent / Path(row.path).expanduser()))
            for row in frame.itertuples(index=False)
        ])
    if source.is_file():
        if is_apple_metadata(source):
            return SourceScan([], apple_metadata=[source])
        return SourceScan([TrackSource(source.stem, source)]) if is_audio_name(source) else SourceScan([], not_audio=[source])
    raise ScoringError(f"{display(source)}: no such folder, CSV or audio file")


def list_tracks(source: str | Path) -> list[TrackSource]:
    """The tracks of :func:`scan_source` (the skipped files are in its other lists)."""
    return scan_source(source).tracks


def unreadable_key(path: Path) -> str:
    """Stands in for the content hash of a file that could not be read (stable across reruns)."""
    return "unreadable:" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:64]


_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def hash_tracks(
    tracks: Iterable[TrackSource],
    *,
    before_read: Callable[[Path], None] | None = None,
    strict: bool = True,
) -> tuple[list[HashedTrack], list[TrackFailure]]:
    """SHA-256 of each file's bytes. A missing or forbidden file is a per-file failure; any
    other OSError propagates when ``strict`` (so a caller can retry it) and is recorded
    as a failure otherwise."""
    hashed: list[HashedTrack] = []
    failed: list[TrackFailure] = []
    for track in tracks:
        try:
            if before_read:
                before_read(track.path)
            if track.path.exists() and not track.path.is_file():  # reading a pipe would block
                failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), "cannot read: not a regular file"))
                continue
            hashed.append(HashedTrack(track.track_id, track.path, file_sha256(track.path)))
        except GenretagError as exc:
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc}"))
        except _PERMANENT_OS_ERRORS as exc:
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc.strerror or exc}"))
        except OSError as exc:
            if strict:
                raise
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc}"))
    return hashed, failed


@dataclass(frozen=True)
class TaggingPlan:
    todo: list[HashedTrack]
    already_tagged: list[HashedTrack]
    duplicates: list[HashedTrack]  # same bytes as another file of this run: tagged once


def plan_tagging(hashed: Sequence[HashedTrack], tagged: set[str]) -> TaggingPlan:
    """Split files into those to score, those this model version already tagged, and repeats."""
    todo: list[HashedTrack] = []
    already: list[HashedTrack] = []
    duplicates: list[HashedTrack] = []
    seen: set[str] = set()
    for track in hashed:
        if track.sha256 in tagged:
            already.append(track)
        elif track.sha256 in seen:
            duplicates.append(track)
        else:
            seen.add(track.sha256)
            todo.append(track)
    return TaggingPlan(todo, already, duplicates)
