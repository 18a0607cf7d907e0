"""Any failure of a command as one line for its user: what failed, on which resource, and why.

The CLI prints ``error: <line>`` and exits non-zero; the traceback is for ``--debug`` only.
Passwords in URLs are never printed.
"""

from __future__ import annotations

import re

from genretag.core.errors import GenretagError

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+):[^@\s]+@", re.IGNORECASE)


def redact_passwords(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` anywhere in ``text``."""
    return _URL_PASSWORD.sub(r"\g<scheme>:***@", text)


def describe_fault(exc: BaseException) -> str:
    """One line for ``exc``: our own errors as written; an OSError with the file it names;
    anything else with its type and the first line of its message (a database error's
    driver message rather than SQLAlchemy's SQL dump)."""
    if isinstance(exc, GenretagError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
        text = f"{target}: {exc.strerror or exc}"
    else:
        reason = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
        text = f"{type(reason).__name__}: {reason}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return redact_passwords(first)
