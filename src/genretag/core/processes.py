"""Process hygiene: worker processes and helper servers die with the process that started them.

A SIGKILLed parent runs no cleanup, so each child must notice by itself. On Linux a child asks
the kernel for a signal when its parent dies (prctl(2) PR_SET_PDEATHSIG); elsewhere a daemon
thread polls the parent's pid. A process we cannot change (a server started by a library) gets
a small watcher process that kills it when our process is gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5


def die_with_parent(parent: int | None = None) -> None:
    """Make this process receive SIGKILL when its parent dies (call first thing in a child).

    Pool initialiser for ProcessPoolExecutor workers: pass ``initargs=(os.getpid(),)`` so that a
    worker whose parent was killed while the worker was still starting (re-parented before this
    runs) exits at once instead of comparing against its new parent. Linux delivers the signal
    when the parent *thread* that forked this process exits, so use it only for children whose
    creator thread outlives them (pools used inside one ``with`` block, spawned workers).
    """
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:  # already orphaned
        os._exit(1)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)
        return
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="die-with-parent").start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)


def kill_with_this_process(pid: int) -> subprocess.Popen:
    """Start a watcher that sends ``pid`` (its process group when it leads one) SIGTERM, then
    SIGKILL after 5 s, once this process is gone.

    The watcher exits by itself when ``pid`` ends first. Returns the watcher's Popen.
    """
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(os.getpid()), str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
    )


# Runs in a bare interpreter (no genretag import: it must start in milliseconds).
_WATCHER = """
import os, signal, sys, time
parent, child = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
while os.getppid() == parent and alive(child):
    time.sleep(0.5)
def kill(sig):
    try:
        (os.killpg if os.getpgid(child) == child else os.kill)(child, sig)  # a session leader: its whole group
    except (ProcessLookupError, PermissionError):
        pass
if alive(child):
    kill(signal.SIGTERM)
    for _ in range(50):
        time.sleep(0.1)
        if not alive(child):
            break
    else:
        kill(signal.SIGKILL)
"""


def watch_prefect_ephemeral_server() -> None:
    """Tie the temporary Prefect server (started when PREFECT_API_URL is unset) to this process.

    Prefect stops it at a normal exit only; after a SIGKILL it would keep listening. Called by
    every flow at its start; each server gets one watcher.
    """
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(SubprocessASGIServer._instances.values()):
        process = server.server_process
        if process is not None and process.poll() is None and process.pid not in _watched:
            _watched[process.pid] = kill_with_this_process(process.pid)


_watched: dict[int, subprocess.Popen] = {}


STDERR_CAPTURE_BYTES = 4096  # what a captured fd 2 keeps: a decoder's few lines, never a flood


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (what C libraries such as libmpg123 and FFmpeg write to) into a scratch
    file for the block; the yielded list holds its distinct non-blank lines (the first
    :data:`STDERR_CAPTURE_BYTES` bytes, undecodable bytes as ``\\xNN``) once the block ends. Every thread's
    fd-2 writes go there meanwhile: use it in worker processes and around short calls."""
    sys.stderr.flush()
    saved = os.dup(2)
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(STDERR_CAPTURE_BYTES).decode("utf-8", "backslashreplace")
            lines += dict.fromkeys(line.strip() for line in text.splitlines() if line.strip())
