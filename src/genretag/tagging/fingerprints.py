"""Which files a tagging run reads, and what their bytes hash to: each listed track's fingerprint
(``stat``), matched against the catalog's, and the SHA-256 of the files it does not vouch for, read on
every core.

Fingerprints. A file's fingerprint is (device, inode, size, mtime_ns) from ``stat``: the catalog maps a
path's fingerprint to the SHA-256 of its bytes (genretag.tagging.schema.catalog_fingerprints), so a rescan
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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from genretag.core.config import worker_count
from genretag.core.errors import GenretagError
from genretag.core.paths import absolute, display
from genretag.tagging.sources import HashedTrack, TrackFailure, TrackSource


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
