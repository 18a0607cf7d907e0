"""genretag's local Prefect server: started once, reused by later commands, kept while a command
is attached, stopped when idle (a real `prefect server start`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

FLOW = """
from prefect import flow, task

@task
def add(x):
    return x + 1

@flow(name="local-server-probe")
def probe():
    return add(1)

print(probe())
"""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def run(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.server", *command], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=400, check=True)


def test_one_local_server_serves_every_command_and_stops_when_idle(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "GENRETAG_SERVER_IDLE_S": "8",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}
    print_url = [sys.executable, "-c", "import os; print(os.environ['PREFECT_API_URL'])"]
    state = tmp_path / "prefect" / "genretag-server" / "server.json"

    first = run(*print_url, env=env)
    url = first.stdout.strip()
    assert "starting genretag's local Prefect server" in first.stderr and healthy(url)
    try:
        again = run(sys.executable, "-c", FLOW, env=env)  # a flow run, against the same server
        assert "starting" not in again.stderr and f"Prefect API for this run: {url}" in again.stderr
        assert again.stdout.strip().splitlines()[-1] == "2"
        with urllib.request.urlopen(urllib.request.Request(
                f"{url}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"})) as response:
            runs = json.load(response)
        assert [r["state_type"] for r in runs] == ["COMPLETED"]

        run("sleep", "14", env=env)  # attached for 14 s: more than the 8-s idle limit
        assert healthy(url) and json.loads(state.read_text())["url"] == url

        deadline = time.monotonic() + 90
        while healthy(url) and time.monotonic() < deadline:
            time.sleep(1)
        assert not healthy(url) and not state.exists()
    finally:
        subprocess.run([sys.executable, "-m", "genretag.cli", "server", "stop"], cwd=REPO_ROOT, env=env,
                       capture_output=True, timeout=120, check=False)
