"""What a tagging run reads: the tracks of a source (folder, CSV, one file), their content hashes, and the
plan of what to score (skip what this model version tagged, tag repeated content once).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from genretag.audio.decoding import Skip, file_sha256, is_apple_metadata, is_audio_name, not_audio_reason, scan_folder
from genretag.core.errors import GenretagError, ScoringError
from genretag.core.paths import absolute, display, quoted


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


APPLE_METADATA_REASON = "macOS metadata (._* or __MACOSX/)"


@dataclass(frozen=True)
class SourceScan:
    """What a source holds: the tracks to tag, the files skipped, and the folders not walked, by
    reason (absolute paths)."""

    tracks: list[TrackSource]
    not_audio: list[Path] = field(default_factory=list)
    apple_metadata: list[Path] = field(default_factory=list)  # AppleDouble ``._*`` and ``__MACOSX/``
    folders_skipped: list[Skip] = field(default_factory=list)  # unreadable, or already walked (link loops)

    @property
    def files(self) -> int:
        return len(self.tracks) + len(self.not_audio) + len(self.apple_metadata)

    def skips(self) -> list[Skip]:
        """Every file and folder skipped, each named with its reason, in path order."""
        named = [Skip(p, not_audio_reason(p)) for p in self.not_audio]
        named += [Skip(p, APPLE_METADATA_REASON) for p in self.apple_metadata]
        return sorted(named + self.folders_skipped, key=lambda s: s.path)


def folder_track_ids(root: Path, files: Sequence[Path]) -> list[str]:
    """Track ids of ``files`` under ``root``: the path below it without its extension, or with it
    where two files would otherwise share an id (``a.m4a`` and ``a.opus``), so that every id is unique."""
    stems = [f.relative_to(root).with_suffix("").as_posix() for f in files]
    repeated = {stem for stem, n in Counter(stems).items() if n > 1}
    return [f.relative_to(root).as_posix() if stem in repeated else stem for f, stem in zip(files, stems, strict=True)]


def scan_source(source: str | Path) -> SourceScan:
    """A folder (every file under it, recursively), a CSV with track_id,path, or one file.

    In a folder, track_id is the file's path below it without its extension (with it where two
    files would share an id: :func:`folder_track_ids`); folder links are followed and the folders
    not walked are named (genretag.audio.decoding.scan_folder); relative
    paths in a CSV are relative to the CSV's folder. Every path is absolute and normalised
    (genretag.paths.absolute). Files whose suffix no decoder reads, and macOS metadata, are
    counted, never silently dropped; a CSV or a single file is taken as given (its rows fail
    with their reason if they are not audio).
    """
    source = absolute(source)
    if source.is_dir():
        found = scan_folder(source)
        tracks = [TrackSource(i, p) for i, p in zip(folder_track_ids(source, found.audio), found.audio, strict=True)]
        return SourceScan(tracks, found.not_audio, found.apple_metadata, found.folders_skipped)
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
    """Stands in for the content hash of a file that could not be read (stable across reruns): a hash
    of its absolute path as named (links are not resolved: a link loop has no target)."""
    return "unreadable:" + hashlib.sha256(os.fsencode(absolute(path))).hexdigest()[:64]


# errno of an OSError no retry clears: missing, forbidden, a folder, a link loop, a name too long.
_PERMANENT_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP,
                               errno.ENAMETOOLONG})


def hash_tracks(
    tracks: Iterable[TrackSource],
    *,
    before_read: Callable[[Path], None] | None = None,
    strict: bool = True,
) -> tuple[list[HashedTrack], list[TrackFailure]]:
    """SHA-256 of each file's bytes. A missing or forbidden file, a folder or a link loop is a per-file
    failure; any other OSError propagates when ``strict`` (so a caller can retry it) and is recorded
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
        except OSError as exc:
            if strict and exc.errno not in _PERMANENT_ERRNOS:
                raise
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc.strerror or exc}"))
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


def copy_key(sha256: str, path: Path) -> str:
    """The catalog_errors key of a copy of failed content: its SHA-256, ``:`` and 15 hex digits of a
    hash of its path (80 characters; a lookup by SHA-256 prefix still finds it)."""
    return f"{sha256}:{hashlib.sha256(os.fsencode(absolute(path))).hexdigest()[:15]}"


def copies_of_failures(duplicates: Iterable[HashedTrack], failures: Iterable[TrackFailure]) -> list[TrackFailure]:
    """A failure of its own for each of ``duplicates`` (same bytes as a file tagged once in this run)
    whose content failed: the first copy's reason, naming that copy (key: :func:`copy_key`)."""
    failed = {f.sha256: f for f in failures}
    return [
        TrackFailure(d.track_id, d.path, copy_key(d.sha256, d.path),
                     f"same content as {quoted(failed[d.sha256].path)}, which failed: {failed[d.sha256].reason}")
        for d in duplicates if d.sha256 in failed
    ]
