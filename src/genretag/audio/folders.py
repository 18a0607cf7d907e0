"""Walking a folder for audio: every file under it sorted into audio, not audio (by its name's suffix,
:data:`genretag.audio.decoding.AUDIO_EXTENSIONS`) and macOS metadata, and every folder not walked named
with its reason. Lazily (:func:`walk_folder`, for the tagger's catalogs) or as sorted lists
(:func:`scan_folder`, for ingest). Reads names and folder listings only, never a file's content."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from genretag.audio.decoding import AUDIO_EXTENSIONS

# AppleDouble metadata files (``._name``) and macOS zip leftovers (``__MACOSX/``): never audio.
APPLE_METADATA_PREFIX = "._"
APPLE_METADATA_FOLDER = "__MACOSX"


@dataclass(frozen=True)
class Skip:
    """A path a walk did not take, and why (a folder it could not list or had already walked)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class FolderScan:
    """Every file under a folder, sorted into exactly one of three lists (absolute paths), and the
    folders that were not walked, each with its reason."""

    audio: list[Path]
    not_audio: list[Path]  # suffix outside AUDIO_EXTENSIONS
    apple_metadata: list[Path]  # ``._*`` files and anything under ``__MACOSX/``
    folders_skipped: list[Skip] = field(default_factory=list)

    @property
    def files(self) -> int:
        """How many files the three lists hold (folders not walked are not counted)."""
        return len(self.audio) + len(self.not_audio) + len(self.apple_metadata)


def is_apple_metadata(path: Path) -> bool:
    """Whether ``path`` is macOS metadata: its name starts with ``._`` or one of its parts is ``__MACOSX``."""
    return path.name.startswith(APPLE_METADATA_PREFIX) or APPLE_METADATA_FOLDER in path.parts


def is_audio_name(path: Path) -> bool:
    """Whether ``path``'s suffix (any case) is one the decoders read."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def not_audio_reason(path: Path) -> str:
    """Why a file is skipped as not audio: the name decides, the content is never read (a WAV
    without an extension is not audio until it is named ``.wav``)."""
    return f"not audio: no decoder reads suffix {path.suffix!r}" if path.suffix else "not audio: no file extension"


APPLE_METADATA_REASON = "macOS metadata (._* or __MACOSX/)"

FileKind = str
"""What :func:`walk_folder` says an entry is: ``"audio"`` (a Path), or a :class:`Skip` of kind ``"not_audio"``,
``"apple_metadata"`` or ``"folder"`` (a folder not walked)."""


def walk_folder(folder: str | Path) -> Iterator[tuple[FileKind, Path | Skip]]:
    """Every entry under ``folder`` that is not a walked folder, with its kind, lazily: ``("audio", path)``,
    or ``(kind, Skip(path, reason))`` for a file skipped as not audio or macOS metadata and for a folder
    not walked. Absolute paths, as named under ``folder`` (links are not resolved).

    Order: depth first; in each folder its files (names sorted), then its subfolders (names sorted),
    so that a folder's files come together (genretag.tagging.sources decides track ids per folder).
    Holds one folder's listing at a time, plus the (device, inode) of each folder walked, never the
    whole tree: a catalog of 10^6 files is walked in bounded memory.

    Links to folders are followed; a folder reached again (same device and inode: a link loop, or a
    second link to it) is skipped and named, as is a folder that cannot be listed (no permission).
    Entries that are not regular files (broken links, file-link loops, pipes) are listed by their
    name like any file, so the reader reports them instead of skipping them.
    """
    root = Path(os.path.abspath(Path(folder).expanduser()))
    walked: dict[tuple[int, int], Path] = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            status = directory.stat()
            key = (status.st_dev, status.st_ino)
            if key in walked:
                yield "folder", Skip(directory, f"folder already walked as {walked[key]} (a link loop or a second link to it)")
                continue
            walked[key] = directory
            with os.scandir(directory) as listing:
                entries = sorted((entry.name, _is_folder(entry)) for entry in listing)
        except OSError as exc:  # gone since its parent was listed, forbidden, ...
            yield "folder", Skip(directory, f"cannot list folder: {exc.strerror or exc}")
            continue
        for name, is_folder in entries:
            path = directory / name
            if is_folder:
                continue
            if is_apple_metadata(path.relative_to(root)):
                yield "apple_metadata", Skip(path, APPLE_METADATA_REASON)
            elif is_audio_name(path):
                yield "audio", path
            else:
                yield "not_audio", Skip(path, not_audio_reason(path))
        stack.extend(directory / name for name, is_folder in reversed(entries) if is_folder)


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether a listed entry is a folder, following a link; a link loop is not (listed as a file, the
    reader names why it fails)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def scan_folder(folder: str | Path) -> FolderScan:
    """Every entry under ``folder`` (:func:`walk_folder`), in lists sorted by path (small folders)."""
    found: dict[FileKind, list] = {"audio": [], "not_audio": [], "apple_metadata": [], "folder": []}
    for kind, entry in walk_folder(folder):
        found[kind].append(entry)
    return FolderScan(sorted(found["audio"]), sorted(s.path for s in found["not_audio"]),
                      sorted(s.path for s in found["apple_metadata"]), sorted(found["folder"], key=lambda s: s.path))
