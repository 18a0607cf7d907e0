"""A Prefect server on a free loopback port for the length of a command (or a `with` block).

Every DVC stage is a Prefect flow; without PREFECT_API_URL each one starts and stops its own
temporary server (about 10 s apiece on 2 cores). `python -m flows.server dvc repro` runs the
whole pipeline against one server instead, and leaves PREFECT_API_URL alone when it is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import genretag  # noqa: F401  - offline environment for the server too

STARTUP_TIMEOUT_S = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))


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


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m flows.server COMMAND [ARGS...]", file=sys.stderr)
        return 2
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(argv)
    with prefect_server() as url:
        print(f"Prefect server for this run: {url}", file=sys.stderr, flush=True)
        return subprocess.call(argv, env=dict(os.environ, PREFECT_API_URL=url))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
