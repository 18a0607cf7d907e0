"""genretag's local Prefect server: started once per project, reused by later commands of that project,
kept while a command is attached, stopped when idle (a real `prefect server start`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from pathlib import Path

import pytest
from tests.conftest import REPO_ROOT

from flows.server import state_dir

pytestmark = [pytest.mark.slow, pytest.mark.server]

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


def run(*command: str, env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.server", *command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400, check=True)


def server_env(prefect_home: Path, *, idle_s: int) -> dict[str, str]:
    """No PREFECT_API_URL nor GENRETAG_ROOT: the project is the folder above cwd that holds params.yaml."""
    env = {key: value for key, value in os.environ.items() if key not in {"PREFECT_API_URL", "GENRETAG_ROOT", "GENRETAG_PARAMS"}}
    return env | {"PREFECT_HOME": str(prefect_home), "GENRETAG_SERVER_IDLE_S": str(idle_s),
                  "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}


def flow_run_states(url: str) -> list[str]:
    with urllib.request.urlopen(urllib.request.Request(
            f"{url}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"})) as response:
        return [r["state_type"] for r in json.load(response)]


PRINT_URL = (sys.executable, "-c", "import os; print(os.environ['PREFECT_API_URL'])")


def test_one_local_server_serves_every_command_and_stops_when_idle(tmp_path, monkeypatch):
    env = server_env(tmp_path / "prefect", idle_s=8)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    state = state_dir(root=REPO_ROOT) / "server.json"

    first = run(*PRINT_URL, env=env)
    url = first.stdout.strip()
    assert "starting genretag's local Prefect server" in first.stderr and healthy(url)
    try:
        again = run(sys.executable, "-c", FLOW, env=env)  # a flow run, against the same server
        assert "starting" not in again.stderr and f"Prefect API for this run: {url}" in again.stderr
        assert again.stdout.strip().splitlines()[-1] == "2"
        assert flow_run_states(url) == ["COMPLETED"]

        run("sleep", "14", env=env)  # attached for 14 s: more than the 8-s idle limit
        assert healthy(url) and json.loads(state.read_text())["url"] == url

        deadline = time.monotonic() + 90
        while healthy(url) and time.monotonic() < deadline:
            time.sleep(1)
        assert not healthy(url) and not state.exists()
    finally:
        subprocess.run([sys.executable, "-m", "genretag.cli", "server", "stop"], cwd=REPO_ROOT, env=env,
                       capture_output=True, timeout=120, check=False)


def test_each_project_gets_its_own_server(tmp_path, monkeypatch):
    """Two clones (folders holding params.yaml), one PREFECT_HOME: two servers, two databases, and a
    command in a subfolder of a project uses that project's server."""
    env = server_env(tmp_path / "prefect", idle_s=60)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    projects = [tmp_path / "clone-a", tmp_path / "b" / "clone-a"]  # the same folder name, two places
    for project in projects:
        (project / "sub").mkdir(parents=True)
        (project / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    try:
        first, second = (run(*PRINT_URL, env=env, cwd=project).stdout.strip() for project in projects)
        assert first != second and healthy(first) and healthy(second)
        folders = [state_dir(root=project) for project in projects]
        assert folders[0] != folders[1] and folders[0].parent == folders[1].parent == tmp_path / "prefect" / "genretag-server"
        assert [json.loads((folder / "server.json").read_text())["url"] for folder in folders] == [first, second]
        assert all((folder / "prefect.db").is_file() for folder in folders)  # each server its own SQLite database

        again = run(sys.executable, "-c", FLOW, env=env, cwd=projects[0] / "sub")  # project A, from a subfolder
        assert "starting" not in again.stderr and f"Prefect API for this run: {first}" in again.stderr
        assert flow_run_states(first) == ["COMPLETED"] and flow_run_states(second) == []
    finally:
        for project in projects:
            subprocess.run([sys.executable, "-m", "genretag.cli", "server", "stop"], cwd=project, env=env,
                           capture_output=True, timeout=120, check=False)
    assert not healthy(first) and not healthy(second)
