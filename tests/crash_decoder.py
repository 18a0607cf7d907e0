"""A decoder that really dies (SIGKILL of its own worker process) on files named for it, for the pool tests:
``crash-always*`` kills every worker that reads it, ``crash-once*`` only the first (a marker file beside it
remembers). Anything else is decoded by genretag.tagging.windows.windows_or_reason."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from genretag.tagging.windows import TrackWindows, windows_or_reason


def decode_or_die(*, path: str, **options: object) -> tuple[TrackWindows | None, str]:
    name = Path(path).name
    marker = Path(path + ".crashed")
    if name.startswith("crash-always") or (name.startswith("crash-once") and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return windows_or_reason(path=path, **options)
