"""The Prefect API that commands which orchestrate (`tag-catalog`, the stages, `dvc repro`) run against.

Without ``PREFECT_API_URL`` Prefect starts a temporary server in every process (tens of seconds
on 2 cores, for each command and each DVC stage). Instead:

- ``PREFECT_API_URL`` set: that server, always.
- otherwise: the project's **local server** (loopback port, no UI, no scheduler, telemetry off). Each
  project (the root :func:`genretag.core.config.project_root` finds: $GENRETAG_ROOT, else the folder
  holding params.yaml) has its own, with its own SQLite database, state and log under
  ``$PREFECT_HOME/genretag-server/<folder name>-<sha256 of the root's path, 12 hex>/``: two clones
  never share runs. The first command that needs it starts it in the background; later commands of
  the same project reuse it at once. It stops itself after ``GENRETAG_SERVER_IDLE_S`` seconds
  (default 1800) with no genretag command attached, or on ``genretag server stop``.

A command attaches by holding a shared ``flock`` on ``<state dir>/users`` for its lifetime (the
kernel drops it when the process ends, however it ends); the server's supervisor counts idle time
only while it can take that lock exclusively.

``python -m flows.server COMMAND...`` runs COMMAND (e.g. ``dvc repro``) with ``PREFECT_API_URL``
pointing at that server, so every stage of the pipeline shares it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import genretag  # noqa: F401  - offline environment for the server too
from genretag.core.config import project_root

STARTUP_TIMEOUT_S = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
IDLE_ENV = "GENRETAG_SERVER_IDLE_S"
DEFAULT_IDLE_S = 1800.0
POLL_S = 2.0

_attached: list[IO] = []  # the shared lock of this process on <state dir>/users, held until exit


class ServerError(RuntimeError):
    """The Prefect server did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, children included."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@contextlib.contextmanager
def prefect_server(*, home: Path | None = None, scheduler: bool = True, log_path: Path | None = None) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1:<free port> (SQLite under ``home``); yields the API URL."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    port = free_port()
    command = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
               "--port", str(port), "--no-ui", "--analytics-off", *([] if scheduler else ["--no-scheduler"])]
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None:
                raise ServerError(f"prefect server exited with status {process.returncode} (log: {log_path or 'not kept'})")
            if time.monotonic() > deadline:
                raise ServerError(f"prefect server not healthy after {STARTUP_TIMEOUT_S:.0f} s (log: {log_path or 'not kept'})")
            time.sleep(0.5)
        yield url
    finally:
        stop(process)
        if log_path:
            log.close()


def _healthy(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    return False


# --- the persistent local server ---


def state_dir(*, root: Path | None = None) -> Path:
    """The local server's folder for project ``root`` (default: :func:`project_root`):
    ``$PREFECT_HOME/genretag-server/<root's name>-<first 12 hex of sha256(root's resolved path)>``
    (Prefect's home defaults to ~/.prefect). It holds the state file, locks, logs and the server's
    SQLite database, so each project has its own server."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    project = (root or project_root()).resolve()
    key = hashlib.sha256(os.fsencode(project)).hexdigest()[:12]
    return home / "genretag-server" / f"{project.name or 'root'}-{key}"


def _read_state(folder: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((folder / "server.json").read_text(encoding="utf-8"))
    return None


def local_server_url() -> str | None:
    """The URL of the running local server, or None when none answers."""
    state = _read_state(state_dir())
    return state["url"] if state and _healthy(state["url"]) else None


def _attach(folder: Path) -> None:
    """Hold a shared lock on ``users`` until this process exits: the server is in use."""
    if not _attached:
        handle = open(folder / "users", "a")  # noqa: SIM115 - held open on purpose until exit
        fcntl.flock(handle, fcntl.LOCK_SH)
        _attached.append(handle)


def ensure_local_server(*, log=None) -> str:
    """The local server's API URL, after starting it in the background when none runs."""
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    _attach(folder)
    if url := local_server_url():
        return url
    with open(folder / "start.lock", "w") as lock:  # one starter at a time; the others wait, then reuse it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if url := local_server_url():
            return url
        if log:
            log(f"starting genretag's local Prefect server for this project (once; it stops after {idle_seconds():.0f} s "
                f"unused; `genretag server stop` stops it now; state: {folder})")
        with open(folder / "supervisor.log", "w") as out:
            subprocess.Popen([sys.executable, "-m", "flows.server", "--serve", str(folder)], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True, cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (url := local_server_url()):
            if time.monotonic() > deadline:
                raise ServerError(f"genretag's local Prefect server did not come up in {STARTUP_TIMEOUT_S:.0f} s "
                                  f"(log: {folder / 'server.log'})")
            time.sleep(0.5)
        return url


def use_api(*, log=None) -> str:
    """Point this process (and its children) at $PREFECT_API_URL, else at the local server; return the URL."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    url = ensure_local_server(log=log)
    os.environ["PREFECT_API_URL"] = url
    return url


def stop_local_server() -> bool:
    """Stop the local server when one runs; True when one was stopped."""
    state = _read_state(state_dir())
    if not state:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _healthy(state["url"]):
            time.sleep(0.2)
        return True
    return False


def idle_seconds() -> float:
    return float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_S)


def _serve(folder: Path) -> None:
    """Supervisor: run the server, publish its URL, stop after idle_seconds() without users."""
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    idle_limit = idle_seconds()
    with prefect_server(home=folder, scheduler=False, log_path=folder / "server.log") as url:
        state = folder / "server.json"
        state.write_text(json.dumps({"url": url, "pid": os.getpid(), "started": time.time()}), encoding="utf-8")
        idle_since: float | None = None
        try:
            with open(folder / "users", "a") as users:
                while not stopping:
                    try:
                        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        idle_since = None  # a genretag command is attached
                    else:
                        fcntl.flock(users, fcntl.LOCK_UN)
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since > idle_limit:
                            break
                    time.sleep(POLL_S)
        finally:
            state.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--serve":
        _serve(Path(argv[1]))
        return 0
    if not argv:
        print("usage: python -m flows.server COMMAND [ARGS...]", file=sys.stderr)
        return 2
    url = use_api(log=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"Prefect API for this run: {url}", file=sys.stderr, flush=True)
    return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
