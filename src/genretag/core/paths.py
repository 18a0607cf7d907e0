"""File paths as the catalog and manifests store them: absolute, normalised, and faithful.

POSIX file names are bytes; Python shows bytes that are not UTF-8 as lone surrogates
(PEP 383), which no UTF-8 database or CSV can hold. Such a name is stored twice: a display
form (each bad byte written as ``\\xNN``) and, beside it, the exact bytes.
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | os.PathLike[str]) -> Path:
    """``~`` expanded, made absolute against the working directory, ``..`` and ``.`` removed.

    Symbolic links are kept as named (the path the user sees), not resolved.
    """
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def display(name: str | os.PathLike[str]) -> str:
    """Valid UTF-8 text for a path or a name derived from one: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def stored(path: str, path_bytes: bytes | None) -> Path:
    """The file a stored row names: its exact bytes when the row kept them (a name that is not
    UTF-8), else its display text (:func:`display`)."""
    return Path(os.fsdecode(bytes(path_bytes))) if path_bytes else Path(path)


def exact_bytes(name: str | os.PathLike[str]) -> bytes | None:
    """The path's bytes when :func:`display` is not faithful to them (not UTF-8), else None."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return None


def quoted(name: str | os.PathLike[str]) -> str:
    """A path or name for one log line: its :func:`display` form, quoted with Python's repr escapes
    (``'a\\nb.wav'``) when it holds a control or other non-printable character, so a line never splits."""
    text = display(name)
    return text if text.isprintable() else repr(text)
