"""What a tagging run reads: the tracks of a source (folder, CSV, one file), streamed; their fingerprints
and content hashes; and the plan of what to score (skip what this model version tagged or already failed
on, tag repeated content once).

Fingerprints. A file's fingerprint is (device, inode, size, mtime_ns) from ``stat``: the catalog maps a
path's fingerprint to the SHA-256 of its bytes (genretag.tagging.store.catalog_fingerprints), so a rescan
reads only files that are new or whose fingerprint changed, and finds a moved or renamed file by its
(device, inode) without reading it. A fingerprint is trusted only when all four values match: a new size,
mtime or inode (a replaced file) means the file is hashed again. The blind spot, shared by every such
scheme (rsync's quick check, beets, git's index): content changed in place with the same size and the
same mtime (a tool that restores the mtime after writing, ``touch -r``, or an edit within the
filesystem's timestamp granularity) is taken as unchanged. ``--rehash`` reads every file and finds it.
Device numbers may change when a filesystem is remounted (NFS, USB disks, btrfs subvolumes): the files
are then hashed again once, never trusted wrongly.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_kinds
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from genretag.core.config import worker_count
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


def unreadable_key(path: Path) -> str:
    """Stands in for the content hash of a file that could not be read (stable across reruns): a hash
    of its absolute path as named (links are not resolved: a link loop has no target)."""
    return "unreadable:" + hashlib.sha256(os.fsencode(absolute(path))).hexdigest()[:64]


# errno of an OSError no retry clears: missing, forbidden, a folder, a link loop, a name too long.
_PERMANENT_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP,
                               errno.ENAMETOOLONG})


@dataclass(frozen=True)
class Fingerprint:
    """What ``stat`` says of a file: (device, inode, size in bytes, mtime in ns since the epoch)."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> Fingerprint:
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class StatedTrack:
    """A listed track and its fingerprint now."""

    track: TrackSource
    fingerprint: Fingerprint


def stat_tracks(tracks: Iterable[TrackSource]) -> tuple[list[StatedTrack], list[TrackFailure]]:
    """Each track's fingerprint (following links); a missing, forbidden or non-regular file (a pipe,
    a folder, a broken link, a link loop) is a failure with its reason, and is never opened."""
    stated: list[StatedTrack] = []
    failed: list[TrackFailure] = []
    for track in tracks:
        try:
            status = os.stat(track.path)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in a CSV's path
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path),
                                       f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
            continue
        if not stat_kinds.S_ISREG(status.st_mode):  # reading a pipe would block
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), "cannot read: not a regular file"))
            continue
        stated.append(StatedTrack(track, Fingerprint.of(status)))
    return stated, failed


@dataclass(frozen=True)
class KnownFile:
    """A fingerprint the catalog holds: the file at ``path`` had ``fingerprint`` when its bytes hashed to ``sha256``."""

    path: str  # display form (genretag.core.paths.display)
    fingerprint: Fingerprint
    sha256: str


@dataclass(frozen=True)
class FingerprintMatch:
    """A chunk of stated tracks sorted by what the catalog's fingerprints say of them."""

    unchanged: list[HashedTrack]  # same path, same fingerprint: not read
    renamed: list[tuple[HashedTrack, Fingerprint]]  # same fingerprint at another path (moved, renamed, hard link): not read
    to_hash: list[StatedTrack]  # new, or changed (size, mtime or inode differ): read


def match_fingerprints(stated: Iterable[StatedTrack], *, by_path: dict[str, KnownFile],
                       by_inode: Callable[[list[tuple[int, int]]], dict[tuple[int, int], list[KnownFile]]]) -> FingerprintMatch:
    """Which files need reading. ``by_path``: the catalog's fingerprints of these paths;
    ``by_inode``: looks up the fingerprints of (device, inode) pairs not found by path (one batched
    query). A fingerprint is trusted only when device, inode, size and mtime_ns all match."""
    unchanged: list[HashedTrack] = []
    unknown: list[StatedTrack] = []
    for item in stated:
        known = by_path.get(display(item.track.path))
        if known is not None and known.fingerprint == item.fingerprint:
            unchanged.append(HashedTrack(item.track.track_id, item.track.path, known.sha256))
        else:
            unknown.append(item)
    elsewhere = by_inode([(i.fingerprint.device, i.fingerprint.inode) for i in unknown]) if unknown else {}
    renamed: list[tuple[HashedTrack, Fingerprint]] = []
    to_hash: list[StatedTrack] = []
    for item in unknown:
        same = [k for k in elsewhere.get((item.fingerprint.device, item.fingerprint.inode), []) if k.fingerprint == item.fingerprint]
        if same:
            renamed.append((HashedTrack(item.track.track_id, item.track.path, same[0].sha256), item.fingerprint))
        else:
            to_hash.append(item)
    return FingerprintMatch(unchanged, renamed, to_hash)


HASH_TRIES = 3  # reads of a file that keeps changing while it is hashed before it is recorded as unstable
HASH_BLOCK_BYTES = 1 << 20


def hash_file(path: Path, *, tries: int = HASH_TRIES, while_reading: Callable[[Path], None] | None = None) -> tuple[str, Fingerprint] | None:
    """SHA-256 (hex) of the file's bytes and its fingerprint while they were read, or None when it changed
    during each of ``tries`` reads (unstable: being written or replaced).

    A read counts when the open file's fingerprint (fstat) is the same before and after it, and the path
    still names that file afterwards (not replaced by a rename). ``while_reading`` is called after the
    first block of each read (fault injection and tests: a writer racing the reader). Raises OSError.
    hashlib releases the GIL on large updates, so threads hash on every core.
    """
    for _ in range(tries):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            before = Fingerprint.of(os.fstat(handle.fileno()))
            first = True
            while block := handle.read(HASH_BLOCK_BYTES):
                digest.update(block)
                if first and while_reading:
                    while_reading(path)
                first = False
            after = Fingerprint.of(os.fstat(handle.fileno()))
        if before == after == Fingerprint.of(os.stat(path)):
            return digest.hexdigest(), after
    return None


@dataclass
class HashOutcome:
    """What hashing a chunk gave: hashed tracks with their fingerprints, failures, and unstable files."""

    hashed: list[tuple[HashedTrack, Fingerprint]] = field(default_factory=list)
    failed: list[TrackFailure] = field(default_factory=list)
    unstable: list[TrackSource] = field(default_factory=list)  # changed during every read: a named skip, tried again next run
    bytes_read: int = 0


def hash_tracks(
    tracks: Iterable[TrackSource | StatedTrack],
    *,
    workers: int = 1,
    before_read: Callable[[Path], None] | None = None,
    while_reading: Callable[[Path], None] | None = None,
    strict: bool = True,
    on_done: Callable[[int], None] | None = None,
) -> HashOutcome:
    """SHA-256 of each file's bytes (:func:`hash_file`), in ``workers`` threads (0: every core).

    Tracks not yet stated are stated first (:func:`stat_tracks`). A missing, forbidden or non-regular
    file, a folder or a link loop is a per-file failure; any other OSError propagates when ``strict`` (so a caller can retry
    it) and is recorded as a failure otherwise. ``on_done(bytes)`` is called once per file hashed
    (progress). Results keep the input order, stated tracks first.
    """
    items = list(tracks)
    outcome = HashOutcome()
    stated_now, outcome.failed = stat_tracks(t for t in items if isinstance(t, TrackSource))
    todo = [t for t in items if isinstance(t, StatedTrack)] + stated_now

    def one(item: StatedTrack) -> tuple[StatedTrack, tuple[str, Fingerprint] | None | TrackFailure]:
        track = item.track
        try:
            if before_read:
                before_read(track.path)
            found = hash_file(track.path, while_reading=while_reading)
        except GenretagError as exc:
            return item, TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc}")
        except OSError as exc:
            if strict and exc.errno not in _PERMANENT_ERRNOS:
                raise
            return item, TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc.strerror or exc}")
        if on_done:
            on_done(found[1].size if found else 0)
        return item, found

    with ThreadPoolExecutor(max_workers=min(worker_count(workers), max(len(todo), 1))) as pool:
        for item, found in pool.map(one, todo):
            if isinstance(found, TrackFailure):
                outcome.failed.append(found)
            elif found is None:
                outcome.unstable.append(item.track)
            else:
                outcome.hashed.append((HashedTrack(item.track.track_id, item.track.path, found[0]), found[1]))
                outcome.bytes_read += found[1].size
    return outcome


@dataclass(frozen=True)
class TaggingPlan:
    todo: list[HashedTrack]
    already_tagged: list[HashedTrack]
    duplicates: list[HashedTrack]  # same bytes as another file of this run: tagged once
    known_failures: list[HashedTrack] = field(default_factory=list)  # this content failed with this model version: not decoded again


def plan_tagging(hashed: Sequence[HashedTrack], tagged: Container[str], *, failed: set[str] = frozenset(),
                 seen: set[str] | None = None) -> TaggingPlan:
    """Split files into those to score, those this model version already tagged, those whose content
    already failed with it (``failed``: pass none to retry them), and repeats. ``seen``: the hashes
    the same run planned for scoring already, by earlier chunks (or rounds) of it (updated in place)."""
    todo: list[HashedTrack] = []
    already: list[HashedTrack] = []
    duplicates: list[HashedTrack] = []
    known: list[HashedTrack] = []
    seen = set() if seen is None else seen
    for track in hashed:
        if track.sha256 in tagged:
            already.append(track)
        elif track.sha256 in failed:
            known.append(track)
        elif track.sha256 in seen:
            duplicates.append(track)
        else:
            seen.add(track.sha256)
            todo.append(track)
    return TaggingPlan(todo, already, duplicates, known)


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
