"""What a tagging run reads: the tracks of a source (folder, CSV, one file), streamed, each with a track
id of its own, and drawn a chunk at a time; and what a track becomes on the way (listed, hashed with its
content's SHA-256, or failed with its reason). Fingerprints and content hashes:
genretag.tagging.fingerprints; the plan of what to score: genretag.tagging.planning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from genretag.audio.folders import (
    APPLE_METADATA_REASON,
    FileKind,
    Skip,
    is_apple_metadata,
    is_audio_name,
    not_audio_reason,
    walk_folder,
)
from genretag.core.errors import ScoringError
from genretag.core.paths import absolute, quoted


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
    """What a source holds: the tracks to tag, and each file skipped and folder not walked, named with its
    reason (absolute paths), in the order of :func:`open_source`."""

    tracks: list[TrackSource]
    skipped: list[tuple[FileKind, Skip]] = field(default_factory=list)  # kind: "not_audio", "apple_metadata", "folder"

    def _paths(self, kind: FileKind) -> list[Path]:
        return [skip.path for k, skip in self.skipped if k == kind]

    @property
    def not_audio(self) -> list[Path]:
        return self._paths("not_audio")

    @property
    def apple_metadata(self) -> list[Path]:  # AppleDouble ``._*`` and ``__MACOSX/``
        return self._paths("apple_metadata")

    @property
    def folders_skipped(self) -> list[Path]:  # unreadable, or already walked (link loops)
        return self._paths("folder")

    @property
    def files(self) -> int:
        return len(self.tracks) + len(self.not_audio) + len(self.apple_metadata)

    def skips(self) -> list[Skip]:
        """Every file and folder skipped, each named with its reason."""
        return [skip for _, skip in self.skipped]


def folder_track_ids(folder: str, names: Sequence[str]) -> list[str]:
    """Track ids of the audio files ``names`` of one folder (``folder``: its path below the source, "" at
    the top): the path below the source without its extension, or with it where two files of the
    folder would otherwise share an id (``a.m4a`` and ``a.opus``), so that every id is unique."""
    ids = [Path(name).stem for name in names]
    while repeated := {i for i, n in Counter(ids).items() if n > 1}:  # ends: the names themselves are unique
        ids = [name if i in repeated else i for name, i in zip(names, ids, strict=True)]
    return [f"{folder}/{i}" if folder else i for i in ids]


CSV_ROWS_PER_READ = 10_000  # rows of a source CSV parsed at a time (pandas chunksize)


SourceEntry = tuple[FileKind, "TrackSource | Skip"]
"""One entry of a source: ``("audio", TrackSource)``, a track to tag, or ``(kind, Skip)``: a file skipped
as ``"not_audio"`` or ``"apple_metadata"``, or a ``"folder"`` not walked, named with its reason."""


def open_source(source: str | Path) -> Iterator[SourceEntry]:
    """The entries of a source, lazily: a folder (every file under it, recursively,
    genretag.audio.folders.walk_folder: folder links followed, the folders not walked named), a CSV
    with track_id,path (read CSV_ROWS_PER_READ rows at a time), or one file.

    In a folder, track_id is the file's path below it without its extension, or with it where two
    files of one folder would share an id (:func:`folder_track_ids`; a folder's files are held until
    its last, never the tree). In a CSV, track_id is the row's own or the path's stem, made unique
    with ``-2``, ``-3``, ... (:func:`unique_track_id`); relative paths in a CSV are relative to the
    CSV's folder. Every path is absolute and normalised (genretag.paths.absolute). Files whose
    suffix no decoder reads, and macOS metadata, are named skips, never silently dropped; a CSV's
    rows are taken as given (they fail with their reason if they are not audio). The source is
    checked now: raises ScoringError when it does not exist, or is a CSV that cannot be read or
    lacks the columns.
    """
    source = absolute(source)
    if source.is_dir():
        return _folder_entries(source)
    if source.suffix.lower() == ".csv":
        _csv_columns(source)
        return _csv_entries(source)
    if source.is_file():
        if is_apple_metadata(source):
            return iter([("apple_metadata", Skip(source, APPLE_METADATA_REASON))])
        if not is_audio_name(source):
            return iter([("not_audio", Skip(source, not_audio_reason(source)))])
        return iter([("audio", TrackSource(source.stem, source))])
    raise ScoringError(f"{quoted(source)}: no such folder, CSV or audio file")


def _folder_entries(source: Path) -> Iterator[SourceEntry]:
    held: list[Path] = []  # the audio files of the folder being walked (walk_folder yields them together)

    def named() -> Iterator[SourceEntry]:
        folder = "" if held[0].parent == source else held[0].parent.relative_to(source).as_posix()
        ids = folder_track_ids(folder, [path.name for path in held])
        yield from (("audio", TrackSource(i, path)) for i, path in zip(ids, held, strict=True))
        held.clear()

    for kind, entry in walk_folder(source):
        if kind != "audio":
            yield kind, entry
            continue
        if held and entry.parent != held[0].parent:
            yield from named()
        held.append(entry)
    if held:
        yield from named()


def unique_track_id(track_id: str, seen: set[int]) -> str:
    """``track_id``, or ``track_id-2``, ``-3``, ... when an earlier one of ``seen`` (updated in place) took it.
    ``seen`` holds the ids' 64-bit hashes (about 50 bytes per id: 50 MB for a CSV of 10^6 rows); a hash
    collision (odds about n^2 / 2^65) costs one id a needless suffix, never a repeat."""
    unique, n = track_id, 2
    while hash(unique) in seen:
        unique, n = f"{track_id}-{n}", n + 1
    seen.add(hash(unique))
    return unique


def _read_csv(source: Path, **options) -> pd.DataFrame | Iterator[pd.DataFrame]:
    try:
        return pd.read_csv(source, dtype=str, keep_default_na=False, **options)
    except FileNotFoundError as exc:
        raise ScoringError(f"{source}: no such CSV file") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScoringError(f"{source}: not a readable CSV ({exc})") from exc


def _csv_columns(source: Path) -> None:
    missing = {"track_id", "path"} - set(_read_csv(source, nrows=0).columns)
    if missing:
        raise ScoringError(f"{source}: the CSV needs columns track_id,path; missing {sorted(missing)}")


def _csv_entries(source: Path) -> Iterator[SourceEntry]:
    reader = _read_csv(source, chunksize=CSV_ROWS_PER_READ)
    seen: set[int] = set()
    while True:
        try:
            frame = next(reader)
        except StopIteration:
            return
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ScoringError(f"{source}: not a readable CSV ({exc})") from exc
        for row in frame.itertuples(index=False):
            track_id = unique_track_id(row.track_id or Path(row.path).stem, seen)
            yield "audio", TrackSource(track_id, absolute(source.parent / Path(row.path).expanduser()))


def scan_source(source: str | Path) -> SourceScan:
    """Every entry of :func:`open_source`, in lists (small sources; a tagging run streams them instead)."""
    scan = SourceScan([])
    for kind, entry in open_source(source):
        (scan.tracks.append(entry) if kind == "audio" else scan.skipped.append((kind, entry)))
    return scan


def list_tracks(source: str | Path) -> list[TrackSource]:
    """The tracks of :func:`scan_source` (the skipped files are in its other lists)."""
    return scan_source(source).tracks


SCAN_CHUNK = 1000  # tracks per scan step (stat, fingerprint lookup, hash, plan): the memory of a scan, and what a retry redoes


@dataclass(frozen=True)
class SourceChunk:
    """A part of the source: its tracks and the entries skipped among them (each at most SCAN_CHUNK)."""

    tracks: list[TrackSource]
    skips: list[tuple[FileKind, Skip]]  # kind: "not_audio", "apple_metadata" or "folder" (not walked)


def source_chunks(entries: Iterable[SourceEntry]) -> Iterator[SourceChunk]:
    """A source's ``entries``, SCAN_CHUNK tracks (or skips) at a time, drawn as the scan steps need them."""
    tracks: list[TrackSource] = []
    skips: list[tuple[FileKind, Skip]] = []
    for kind, entry in entries:
        (tracks.append(entry) if kind == "audio" else skips.append((kind, entry)))
        if len(tracks) == SCAN_CHUNK or len(skips) == SCAN_CHUNK:
            yield SourceChunk(tracks, skips)
            tracks, skips = [], []
    if tracks or skips:
        yield SourceChunk(tracks, skips)
