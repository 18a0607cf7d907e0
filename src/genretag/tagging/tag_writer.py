"""Write the catalog's genre tags into the audio files themselves, where players and library tools read them.

Formats (mutagen 1.48): ID3v2.4 ``TCON``, multi-valued (MP3, and the ID3 chunk of WAV and AIFF); Vorbis
comments ``GENRE`` (FLAC, Ogg Vorbis, Opus); MP4 ``©gen`` (M4A/MP4). With ``confidence_field`` a second
field holds the genres' probabilities and the model: ID3 ``TXXX:GENRETAG``, Vorbis ``GENRETAG``, MP4
``----:org.genretag:GENRETAG``, e.g. ``rock=0.812; jazz=0.101; model=genretag-cnn 3``.

A write is atomic and never touches the audio: the file is copied to a temporary file in its folder,
mutagen rewrites the copy's tag block, the copy is fsynced, given the original's mode and owner, and
renamed over the original. A failure at any point leaves the original as it was.

Content identity (why an alias, not a payload hash): the catalog knows a file by the SHA-256 of its
bytes, and writing tags changes those bytes. Hashing only the audio payload instead would mean
parsing every container format (ID3 at either end, RIFF/AIFF chunks, FLAC metadata blocks, Ogg
pages whose checksums cover the comment packet, MP4 atoms) and would change every hash already stored.
An alias is local and exact: write-tags hashes the new file and records ``new SHA-256 -> the content
hash the catalog rows carry`` in catalog_aliases *before* the rename (and removes it if the rename
fails), so there is no moment when the file on disk is unknown to the catalog; tagging runs, ``show``
and write-tags itself resolve aliases first (genretag.tagging.store.Catalog.canonical).

Each file gets one :class:`TagWriteResult`: written (or would be, under dry-run), unchanged, skipped
(policy, nothing to write, not in the catalog) or failed (read-only, changed since it was tagged, a
format mutagen cannot write, unreadable tags), with its reason; one file's failure never stops the others.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from genretag.audio.decoding import file_sha256
from genretag.core.errors import GenretagError
from genretag.core.paths import absolute, display, stored
from genretag.tagging.fingerprints import Fingerprint
from genretag.tagging.sources import HashedTrack, scan_source
from genretag.tagging.store import Catalog

Policy = Literal["only-if-empty", "replace", "add"]
POLICIES: tuple[str, ...] = ("only-if-empty", "replace", "add")
UNKNOWN_GENRE = "unknown"
CONFIDENCE_KEY = "GENRETAG"  # TXXX description / Vorbis key / MP4 freeform name of the confidence field
MP4_GENRE = "\xa9gen"
MP4_CONFIDENCE = f"----:org.genretag:{CONFIDENCE_KEY}"


class TagWriteError(GenretagError):
    """A file's tags cannot be written as asked (its one-line reason names the file)."""


@dataclass(frozen=True)
class TagWriteOptions:
    """What write-tags writes.

    ``policy``: only-if-empty (leave a file that has any genre), replace (the catalog's genres only),
    add (the file's genres, then the catalog's new ones). ``min_confidence``: genres below this
    probability are not written (0..1). ``top_k``: at most this many genres per file, most probable
    first. ``genre_map``: the catalog's genre -> the user's names (empty list: never write that genre;
    unmapped genres keep their name). ``confidence_field``: also write the second field.
    ``include_review``: also write tags flagged needs_review and the genre ``unknown``.
    ``dry_run``: change nothing, report what would change.
    """

    policy: Policy = "only-if-empty"
    min_confidence: float = 0.0
    top_k: int = 1
    genre_map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    confidence_field: bool = False
    include_review: bool = False
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise TagWriteError(f"tag policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise TagWriteError(f"minimum confidence must be within 0..1, not {self.min_confidence}")
        if self.top_k < 1:
            raise TagWriteError(f"top-k must be at least 1, not {self.top_k}")


def load_genre_map(path: str | Path) -> dict[str, tuple[str, ...]]:
    """A genre map from YAML (``genre: name``, ``genre: [name, ...]`` or ``genre: null`` / ``[]`` to drop it)
    or CSV (columns ``genre,name``; several rows per genre give several names; an empty name drops it).

    Raises TagWriteError naming the file when it is missing, unreadable or shaped otherwise.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TagWriteError(f"genre map {display(source)}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from exc
    mapping: dict[str, list[str]] = {}
    if source.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not {"genre", "name"} <= set(reader.fieldnames):
            raise TagWriteError(f"genre map {display(source)}: a CSV genre map needs the columns genre,name")
        for row in reader:
            names = mapping.setdefault(row["genre"].strip(), [])
            if (row["name"] or "").strip():
                names.append(row["name"].strip())
    else:
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise TagWriteError(f"genre map {display(source)}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(raw, dict):
            raise TagWriteError(f"genre map {display(source)}: expected a mapping genre -> name(s)")
        for genre, names in raw.items():
            values = [] if names is None else [names] if isinstance(names, str) else names
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise TagWriteError(f"genre map {display(source)}: {genre!r} must map to a name, a list of names or null")
            mapping[str(genre)] = [v.strip() for v in values if v.strip()]
    return {genre: tuple(dict.fromkeys(names)) for genre, names in mapping.items()}


def chosen_genres(row: Mapping[str, Any], options: TagWriteOptions) -> list[tuple[str, float]]:
    """(name to write, probability) of a catalog_tags row under ``options``, most probable first:
    the row's probabilities (JSON {genre: p}) at or above min_confidence, at most top_k, mapped,
    without ``unknown`` and without a needs_review row's genres unless include_review."""
    if row.get("needs_review") and not options.include_review:
        return []
    probabilities = json.loads(row["probabilities"]) if row.get("probabilities") else {row["genre"]: row["confidence"]}
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    chosen: dict[str, float] = {}
    for genre, probability in ranked[: options.top_k]:
        if probability < options.min_confidence or (genre == UNKNOWN_GENRE and not options.include_review):
            continue
        for name in options.genre_map.get(genre, (genre,)):
            chosen.setdefault(name, probability)
    return list(chosen.items())


# --- the formats ---------------------------------------------------------------------------------------


@dataclass
class _Tags:
    """One file's tag block through mutagen: read its genres, set genres and the confidence field, save."""

    audio: Any  # a mutagen FileType
    kind: Literal["id3", "vorbis", "mp4"]

    def genres(self) -> list[str]:
        tags = self.audio.tags
        if tags is None:
            return []
        if self.kind == "id3":
            return [genre for frame in tags.getall("TCON") for genre in frame.genres]
        if self.kind == "vorbis":
            return list(tags.get("GENRE", []))
        return [str(value) for value in tags.get(MP4_GENRE, [])]

    def set(self, genres: Sequence[str], confidence: str | None) -> None:
        from mutagen.id3 import TCON, TXXX
        from mutagen.mp4 import MP4FreeForm

        if self.audio.tags is None:
            self.audio.add_tags()
        tags = self.audio.tags
        if self.kind == "id3":
            tags.delall("TCON")
            tags.add(TCON(encoding=3, text=list(genres)))
            if confidence is not None:
                tags.delall(f"TXXX:{CONFIDENCE_KEY}")
                tags.add(TXXX(encoding=3, desc=CONFIDENCE_KEY, text=[confidence]))
        elif self.kind == "vorbis":
            tags["GENRE"] = list(genres)
            if confidence is not None:
                tags[CONFIDENCE_KEY] = [confidence]
        else:
            tags[MP4_GENRE] = list(genres)
            if confidence is not None:
                tags[MP4_CONFIDENCE] = [MP4FreeForm(confidence.encode("utf-8"))]

    def save(self) -> None:
        if self.kind == "id3":
            self.audio.save(v2_version=4)
        else:
            self.audio.save()


def _open_tags(path: Path) -> _Tags:
    """mutagen's view of ``path``'s tags. Raises TagWriteError for a format mutagen cannot write genres to,
    or a file mutagen cannot parse."""
    import mutagen
    from mutagen.aiff import AIFF
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    try:
        audio = mutagen.File(path)
    except mutagen.MutagenError as exc:
        raise TagWriteError(f"{display(path)}: cannot read its tags ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if isinstance(audio, (MP3, WAVE, AIFF)):
        return _Tags(audio, "id3")
    if isinstance(audio, (FLAC, OggVorbis, OggOpus)):
        return _Tags(audio, "vorbis")
    if isinstance(audio, MP4):
        return _Tags(audio, "mp4")
    kind = type(audio).__name__ if audio is not None else "an unknown format"
    raise TagWriteError(f"{display(path)}: cannot write genre tags to {kind} (written: MP3, WAV, AIFF, FLAC, Ogg Vorbis, Opus, MP4/M4A)")


# --- one file --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagWriteResult:
    """What write-tags did to one file: status written | would-write | unchanged | skipped | failed."""

    path: str  # display form
    status: Literal["written", "would-write", "unchanged", "skipped", "failed"]
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    reason: str = ""

    def line(self) -> str:
        """One line for the user: the diff of the genre field, or the reason."""
        diff = f"genre {list(self.before)} -> {list(self.after)}"
        if self.status in ("written", "would-write"):
            return f"{self.status}: {self.path}: {diff}"
        return f"{self.status}: {self.path}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "before": list(self.before), "after": list(self.after), "reason": self.reason}


def _merged(existing: list[str], chosen: list[str], policy: Policy) -> list[str] | None:
    """The genres the file gets under ``policy``; None when the policy leaves it alone."""
    if policy == "only-if-empty":
        return None if existing else chosen
    if policy == "replace":
        return chosen
    return list(dict.fromkeys([*existing, *chosen]))


def _replace_atomically(path: Path, edit: Callable[[Path], None], *, before_rename: Callable[[Path], None]) -> None:
    """Copy ``path`` to a temporary file beside it, ``edit`` the copy, fsync it, give it the original's mode
    and owner, call ``before_rename(copy)``, then rename it over ``path``; the copy is removed on any failure."""
    info = path.stat()
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tagging", dir=path.parent)
    tmp = Path(name)
    try:
        with open(path, "rb") as source, os.fdopen(fd, "wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
        edit(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, info.st_mode & 0o7777)
        if hasattr(os, "chown") and (os.geteuid() == 0 or info.st_uid == os.geteuid()):
            try:
                os.chown(tmp, info.st_uid, info.st_gid)
            except PermissionError:  # a group the user is not in: the owner is kept, the group is the user's
                pass
        before_rename(tmp)
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        tmp.unlink(missing_ok=True)


def write_file_tags(path: Path, row: Mapping[str, Any], *, catalog: Catalog, options: TagWriteOptions) -> TagWriteResult:
    """Write one catalog_tags ``row``'s genres into ``path`` (see the module docstring); never raises for the file's
    own problems: they come back as a failed or skipped result with the reason."""
    name = display(path)
    try:
        if not path.is_file():
            return TagWriteResult(name, "failed", reason="no such file")
        current = file_sha256(path)
        if catalog.canonical([current])[current] != row["sha256"]:
            return TagWriteResult(name, "failed", reason=f"changed since it was tagged (sha256 {current[:12]}, "
                                                         f"the catalog's {row['sha256'][:12]}): tag it again first")
        chosen = chosen_genres(row, options)
        if not chosen:
            why = ("needs review (pass --include-review to write it)" if row.get("needs_review") and not options.include_review
                   else f"no genre to write (genre {row['genre']} {row['confidence']:.3f}, minimum {options.min_confidence})")
            return TagWriteResult(name, "skipped", reason=why)
        tags = _open_tags(path)
        existing = tags.genres()
        after = _merged(existing, [genre for genre, _ in chosen], options.policy)
        if after is None:
            return TagWriteResult(name, "skipped", before=tuple(existing),
                                  reason=f"has genres already ({'; '.join(existing)}); policy only-if-empty")
        confidence = None
        if options.confidence_field:
            confidence = "; ".join([f"{genre}={p:.3f}" for genre, p in chosen] + [f"model={row['model_name']} {row['model_version']}"])
        if after == existing and not options.confidence_field:
            return TagWriteResult(name, "unchanged", before=tuple(existing), after=tuple(after), reason="genres already as asked")
        if options.dry_run:
            return TagWriteResult(name, "would-write", before=tuple(existing), after=tuple(after))
        # No write bit is the user's "leave it alone", even for root (whom os.access always lets write).
        if not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222:
            return TagWriteResult(name, "failed", before=tuple(existing), reason="the file is read-only")
        if not os.access(path.parent, os.W_OK):
            return TagWriteResult(name, "failed", before=tuple(existing), reason=f"its folder {display(path.parent)} is read-only")

        def edit(copy: Path) -> None:
            copied = _open_tags(copy)
            copied.set(after, confidence)
            copied.save()

        new_sha: list[str] = []

        def record_alias(copy: Path) -> None:
            new_sha.append(file_sha256(copy))
            catalog.add_alias(new_sha[0], sha256=row["sha256"], path=path)

        try:
            _replace_atomically(path, edit, before_rename=record_alias)
        except BaseException:
            if new_sha:
                catalog.remove_alias(new_sha[0])
            raise
        # the file's new fingerprint and hash: the next rescan reads nothing to know it (the alias maps the hash)
        catalog.record_fingerprints([(HashedTrack(row["track_id"], path, new_sha[0]), Fingerprint.of(path.stat()))])
        return TagWriteResult(name, "written", before=tuple(existing), after=tuple(after))
    except GenretagError as exc:
        return TagWriteResult(name, "failed", reason=str(exc).removeprefix(f"{name}: "))
    except OSError as exc:
        return TagWriteResult(name, "failed", reason=f"{exc.strerror or exc}")
    except Exception as exc:  # mutagen's own errors (a damaged tag block) name no file: this file fails, the others go on
        return TagWriteResult(name, "failed", reason=f"cannot write its tags ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


# --- many files ------------------------------------------------------------------------------------------


def _newest(rows: Iterable[Mapping[str, Any]], key: str) -> dict[Any, Mapping[str, Any]]:
    """The newest row (scored_at) per value of ``key``."""
    newest: dict[Any, Mapping[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["scored_at"]):
        newest[row[key]] = row
    return newest


def write_tags(
    database_url: str,
    *,
    paths: Sequence[str | Path] = (),
    every: bool = False,
    options: TagWriteOptions,
    model_version: str | None = None,
) -> list[TagWriteResult]:
    """Write the catalog's current tags (per file, the newest row; or ``model_version``'s) into the files.

    ``every``: every file the catalog has tagged, at its stored path. Else ``paths``: files, or folders
    scanned recursively (as tag-catalog scans them); a file is found by its content hash (aliases
    resolved), else by its path (then it changed since it was tagged). One result per file, in order.
    Raises TagWriteError when neither paths nor ``every`` is given, CatalogError when the catalog cannot be opened.
    """
    if not paths and not every:
        raise TagWriteError("write-tags needs files or folders, or --all")
    results: list[TagWriteResult] = []
    with Catalog(database_url) as catalog:
        frame = catalog.read("catalog_tags", model_version=model_version)
        rows = frame.to_dict("records")
        by_path = _newest(rows, "path")
        if every:
            for row in by_path.values():
                results.append(write_file_tags(stored(row["path"], row["path_bytes"]), row, catalog=catalog, options=options))
            return results
        by_sha = _newest(rows, "sha256")
        for given in paths:
            try:
                files = [t.path for t in scan_source(given).tracks] if Path(given).is_dir() else [absolute(given)]
            except GenretagError as exc:
                results.append(TagWriteResult(display(given), "failed", reason=str(exc)))
                continue
            for file in files:
                results.append(_write_found(file, by_sha, by_path, catalog=catalog, options=options))
    return results


def _write_found(file: Path, by_sha: Mapping[str, Mapping[str, Any]], by_path: Mapping[str, Mapping[str, Any]], *,
                 catalog: Catalog, options: TagWriteOptions) -> TagWriteResult:
    """Find ``file``'s catalog row by content (aliases resolved), else by path, and write it."""
    name = display(file)
    try:
        sha = file_sha256(file) if file.is_file() else None
    except OSError as exc:
        return TagWriteResult(name, "failed", reason=f"cannot read: {exc.strerror or exc}")
    row = by_sha.get(catalog.canonical([sha])[sha]) if sha else None
    row = row or by_path.get(name)
    if row is None:
        return TagWriteResult(name, "failed" if sha is None else "skipped",
                              reason="no such file" if sha is None else f"not in the catalog (sha256 {sha[:12]}): tag it first")
    return write_file_tags(file, row, catalog=catalog, options=options)
