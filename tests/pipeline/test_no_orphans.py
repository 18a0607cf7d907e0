"""A SIGKILLed stage leaves no process behind: its decode workers and its temporary Prefect server die too.
Real processes are started, killed with SIGKILL by PID, and their descendants looked up afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from tests.conftest import REPO_ROOT, write_audio

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]), **extra)
    env.pop("PREFECT_API_URL", None)  # the stage starts its own temporary server
    return env


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone or a zombie
        return ""


def _alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.add(pid)
        except psutil.NoSuchProcess:
            pass
    return living


def _kill_and_check(process: subprocess.Popen, ready, *, timeout_s: float = 600) -> set[int]:
    """Wait until ``ready(descendants)``, SIGKILL the process, return the descendants still alive after 20 s."""
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, "the stage ended before it could be killed"
        children = parent.children(recursive=True)
        if ready(children):
            break
        assert time.monotonic() < deadline, "the stage never started its workers"
        time.sleep(0.2)
    pids = {child.pid for child in children}
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    end = time.monotonic() + 20
    while _alive(pids) and time.monotonic() < end:
        time.sleep(0.25)
    return _alive(pids)


@pytest.mark.server
def test_sigkill_of_ingest_kills_its_workers_and_its_prefect_server(tmp_path: Path) -> None:
    source = tmp_path / "incoming"
    rng = np.random.default_rng(0)
    for genre in ("blues", "rock"):
        for n in range(30):  # enough decoding (44.1 kHz stereo -> 22.05 kHz) to be killed mid-way
            write_audio(source / genre / f"{genre}.{n:05d}.flac", (rng.standard_normal((44100 * 20, 2)) * 0.1).astype(np.float32),
                        sample_rate=44100)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["genres"], params["ingest"]["source"] = ["blues", "rock"], str(source)
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    process = subprocess.Popen([sys.executable, "-m", "flows.ingest"], cwd=root, env=_env(GENRETAG_ROOT=str(root)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(children: list[psutil.Process]) -> bool:
        commands = [_command(c) for c in children]
        server = any("uvicorn" in c for c in commands)
        workers = sum("flows.ingest" in c for c in commands)  # forked workers share the stage's command line
        return server and workers >= 2

    survivors = _kill_and_check(process, ready)
    assert not survivors, [_command(psutil.Process(p)) for p in survivors]
    written = len(list((root / "data" / "raw").rglob("*.wav")))
    time.sleep(2)
    assert len(list((root / "data" / "raw").rglob("*.wav"))) == written  # nothing keeps writing after the kill


def test_sigkill_of_a_process_with_decode_workers_kills_them(tmp_path: Path) -> None:
    script = tmp_path / "decoder.py"
    script.write_text(textwrap.dedent("""
        import time
        from genretag.tagging.decode_pool import _process_pool
        if __name__ == "__main__":  # the forkserver preloads __main__: only the parent starts the pool
            pool = _process_pool(2)
            jobs = [pool.submit(time.sleep, 60) for _ in range(4)]
            time.sleep(600)
    """))
    process = subprocess.Popen([sys.executable, str(script)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    survivors = _kill_and_check(process, lambda children: len(children) >= 2)  # 2 spawned workers (killed while still starting, too)
    assert not survivors
