"""The plan of what a tagging run scores: skip what this model version tagged or already failed on, tag
repeated content once; and, once it is scored, a failure of its own for each copy of content that failed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from genretag.core.paths import absolute, quoted
from genretag.tagging.sources import HashedTrack, TrackFailure


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
