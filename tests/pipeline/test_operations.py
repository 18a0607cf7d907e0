"""Operations end to end: a real Prefect server, both deployments served and run, the retrain lock,
retries under injected faults and the DVC remote round trip.

One module-scoped Prefect server and one tiny workspace serve every test here; the workspace is
retrained exactly once (by the `retrain` deployment), and the later tests use its outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa

from flows.server import prefect_server as prefect_server_process
from flows.server import stop
from tests.conftest import tone, write_audio
from tests.pipeline.conftest import STAGES, TINY_CANDIDATES, project_env, run, set_params

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.dvc, pytest.mark.keras]

RETRAIN_TIMEOUT_S = 1500
CATALOG_TRACKS = 3


# ------------------------------------------------------------------------------------- helpers


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


@contextlib.contextmanager
def api(url: str) -> Iterator[None]:
    """Point this process's Prefect client at ``url`` (the module's server) for a block."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        yield


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def sha256s(root: Path, *folders: str, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``folders``."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders for path in sorted((root / folder).rglob("*"))
        if path.is_file() and path.name not in exclude
    }


def flow_run_id(output: str) -> UUID:
    """The flow run a `python -m flows.<stage>` process reported ("View at .../flow-run/<id>")."""
    found = re.findall(r"/runs/flow-run/([0-9a-f-]{36})", output)
    assert found, f"no flow run id in the output:\n{output[-3000:]}"
    return UUID(found[0])


def task_runs(flow_run: UUID, url: str) -> dict[str, int]:
    """task run name -> run_count of a flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with api(url), client() as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run])))
    return {run.name: run.run_count for run in runs}


def flow_logs(flow_run: UUID, url: str, *, expect: tuple[str, ...] = (), timeout: float = 60.0) -> str:
    """Every log line of ``flow_run`` in time order (all pages of the API's 200-row limit). Runs ship their
    logs in the background, after the run's state may already read final: wait up to ``timeout`` s for
    every ``expect`` line to arrive (then return what there is, for the caller's assertions)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    deadline = time.monotonic() + timeout
    while True:
        messages: list[str] = []
        with api(url), client() as c:
            while page := c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run])),
                                      limit=200, offset=len(messages), sort=LogSort.TIMESTAMP_ASC):
                messages += [log.message for log in page]
        text = "\n".join(messages)
        if all(line in text for line in expect) or time.monotonic() > deadline:
            return text
        time.sleep(2)


def wait_for(flow_run: UUID, *, timeout: float):
    """The flow run once it reached a final state (call inside ``api(url)``)."""
    deadline = time.monotonic() + timeout
    with client() as c:
        while not (run := c.read_flow_run(flow_run)).state.is_final():
            assert time.monotonic() < deadline, f"flow run {flow_run} still {run.state.name} after {timeout} s"
            time.sleep(5)
    return run


def stage_env(root: Path, url: str, **extra: str) -> dict[str, str]:
    env = project_env(root)
    env["PREFECT_API_URL"] = url
    env.update(extra)
    return env


def run_stage(root: Path, url: str, stage: str, **extra: str) -> tuple[int, str]:
    """``python -m flows.<stage>`` in ``root`` against the module's Prefect server: (exit status, output)."""
    result = subprocess.run([sys.executable, "-m", f"flows.{stage}"], cwd=root, env=stage_env(root, url, **extra),
                            text=True, capture_output=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """`prefect server start` on a free port with its own PREFECT_HOME (SQLite); yields the API URL."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    # no scheduler: no cron run fires mid-test
    with prefect_server_process(home=home, scheduler=False, log_path=home / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def workspace(make_project, tmp_path_factory) -> dict[str, Path]:
    """The tiny project, a DVC remote of its own (`dvc remote modify --local`), a catalog inbox."""
    root = make_project("ops")
    remote = tmp_path_factory.mktemp("ops-remote") / "dvc-remote"
    run(root, "dvc", "remote", "modify", "--local", "storage", "url", str(remote))
    inbox = tmp_path_factory.mktemp("ops-inbox")
    for number in range(CATALOG_TRACKS):
        write_audio(inbox / f"track-{number}.wav", tone(6.0, frequency=220.0 * (number + 1), seed=number))
    return {"root": root, "remote": remote, "inbox": inbox}


@pytest.fixture(scope="module")
def served(prefect_server, workspace) -> Iterator[str]:
    """`python -m flows.deploy` serving both deployments from the workspace; yields the API URL."""
    root = workspace["root"]
    log_path = root.parent / "serve.log"
    env = stage_env(root, prefect_server, GENRETAG_CATALOG_SOURCE=str(workspace["inbox"]))
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "flows.deploy"], cwd=root, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        with api(prefect_server), client() as c:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"flows.deploy exited ({process.returncode}):\n{_tail(log_path)}")
                try:
                    c.read_deployment_by_name("retrain/retrain")
                    c.read_deployment_by_name("tag-catalog/tag-catalog")
                    break
                except Exception:  # noqa: BLE001 - ObjectNotFound until the serve process registers them
                    if time.monotonic() > deadline:
                        pytest.fail(f"deployments not registered after 240 s:\n{_tail(log_path)}")
                    time.sleep(2)
        time.sleep(3)  # the runner polls for runs right after registering
        yield prefect_server
    finally:
        stop(process)
        print(f"--- serve log ---\n{_tail(log_path, 3000)}")


@pytest.fixture(scope="module")
def retrained(served, workspace) -> dict:
    """Run the `retrain` deployment once; while it holds the workspace, start a second one."""
    from prefect.deployments import run_deployment

    root = workspace["root"]
    lock_file = root / ".dvc" / "tmp" / "genretag-retrain.lock"
    started = time.perf_counter()
    with api(served):
        first = run_deployment("retrain/retrain", timeout=0)
        deadline = time.monotonic() + 300
        while not (lock_file.is_file() and lock_file.read_text().startswith("pid ")):
            assert time.monotonic() < deadline, "the first retrain never took the workspace lock"
            time.sleep(1)
        second = run_deployment("retrain/retrain", timeout=300, poll_interval=2)
        with client() as c:
            first_during_second = c.read_flow_run(first.id).state
        first = wait_for(first.id, timeout=RETRAIN_TIMEOUT_S)
    return {"url": served, "first": first, "second": second, "first_during_second": first_during_second,
            "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------------------------------- tests


def test_both_deployments_are_registered_with_their_schedules(served, workspace):
    with api(served), client() as c:
        retrain = c.read_deployment_by_name("retrain/retrain")
        tagging = c.read_deployment_by_name("tag-catalog/tag-catalog")
    assert [s.schedule.cron for s in retrain.schedules] == ["0 3 * * 1"]
    assert [s.schedule.cron for s in tagging.schedules] == ["0 * * * *"]
    assert all(s.active for s in retrain.schedules + tagging.schedules)
    assert retrain.parameters == {"workspace": str(workspace["root"])}
    assert tagging.parameters == {"source": str(workspace["inbox"])}


def test_retrain_deployment_runs_the_pipeline_and_registers_a_model(retrained, workspace, monkeypatch):
    first = retrained["first"]
    assert first.state.is_completed() and first.state.name == "Completed", first.state
    logs = flow_logs(first.id, retrained["url"], expect=("pushed to DVC remote 'storage'",))
    for stage in STAGES:
        assert f"dvc: Running stage '{stage}'" in logs, stage
    assert "is not reachable" in logs and "skipping dvc pull" in logs  # the new remote was still empty
    assert "pushed to DVC remote 'storage'" in logs

    root = workspace["root"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from genretag.core.config import load_params
    from genretag.registry.listing import list_versions

    versions = list_versions(load_params(root / "params.yaml"), root=root)
    record = json.loads((root / "models/registry.json").read_text(encoding="utf-8"))
    # every candidate is registered, and the gate decides which one serves: on this small corpus the cross-validated
    # protocol registers the winner refitted on all labelled tracks as one more version
    refits = [row for row in record["candidates"] if row["model"].endswith("(all tracks)")]
    assert record["protocol"] == "cross-validated" and len(refits) <= 1
    assert len(versions) == len(TINY_CANDIDATES) + len(refits)
    assert (root / "models/registry.json").is_file() and (root / "dvc.lock").is_file()
    assert any((workspace["remote"] / "files" / "md5").rglob("*")), "dvc push left the remote empty"
    print(f"retrain deployment (with the concurrent second run): {retrained['seconds']:.0f} s")


def test_a_second_retrain_is_skipped_while_the_first_holds_the_workspace(retrained):
    second = retrained["second"]
    assert retrained["first_during_second"].is_running()
    assert second.state.is_completed() and second.state.name == "Skipped", second.state
    assert "another retrain is running" in second.state.message
    assert "skipping this run" in second.state.message


def test_tag_catalog_deployment_tags_new_tracks_with_the_champion(retrained, workspace):
    from prefect.deployments import run_deployment

    with api(retrained["url"]):
        flow_run = run_deployment("tag-catalog/tag-catalog", timeout=600, poll_interval=2)
    assert flow_run.state.is_completed(), flow_run.state
    engine = sa.create_engine(f"sqlite:///{workspace['root'] / 'catalog.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT path, genre, model_version FROM catalog_tags")).all()
    finally:
        engine.dispose()
    assert sorted(Path(row.path).name for row in rows) == [f"track-{n}.wav" for n in range(CATALOG_TRACKS)]
    # pure tones are none of the tiny project's genres: the served refit (its unknown threshold fitted leave-one-out)
    # may call them unknown; every other answer is one of its genres
    assert {row.genre for row in rows} <= {"blues", "classical", "metal", "reggae", "unknown"}
    assert len({row.model_version for row in rows}) == 1


TAGGER_IMAGE = '''
"""Run the genretag CLI as in the tagger image: distributions outside its requirements cannot be imported."""
import importlib.abc, importlib.metadata, os, re, runpy, sys
from pathlib import Path


def _canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()


ALLOWED = {_canon(line.split("==")[0]) for line in Path(os.environ["TAGGER_REQUIREMENTS"]).read_text().splitlines()
           if "==" in line} | {"genretag"}
OWNERS = importlib.metadata.packages_distributions()


class TaggerImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        dists = OWNERS.get(name.partition(".")[0])
        if dists and not {_canon(d) for d in dists} & ALLOWED:
            raise ModuleNotFoundError(f"No module named {name!r} ({dists} is not in the tagger image)", name=name)
        return None


sys.meta_path.insert(0, TaggerImage())  # also in the forkserver, which imports this file as __mp_main__

if __name__ == "__main__":
    sys.argv = ["genretag", *sys.argv[1:]]
    runpy.run_module("genretag.cli", run_name="__main__", alter_sys=True)
'''


def test_tagging_runs_with_only_the_tagger_images_packages(retrained, workspace, tmp_path):
    """The champion from the registry tags the inbox while every package outside
    docker/requirements-tagger.lock (TensorFlow, DVC, GX, Dask, full MLflow ...) is unimportable."""
    root = workspace["root"]
    script = tmp_path / "tagger_image.py"
    script.write_text(TAGGER_IMAGE)
    database = tmp_path / "tagger.db"
    env = stage_env(root, retrained["url"], TAGGER_REQUIREMENTS=str(root / "docker" / "requirements-tagger.lock"))
    result = subprocess.run(
        [sys.executable, str(script), "tag-catalog", str(workspace["inbox"]), "--database", f"sqlite:///{database}"],
        cwd=root, env=env, text=True, capture_output=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM catalog_tags")).scalar() == CATALOG_TRACKS
    finally:
        engine.dispose()


def test_retrain_waits_for_dvcs_own_lock_then_skips(retrained, workspace):
    from dvc.lock import Lock
    from prefect.deployments import run_deployment

    root = workspace["root"]
    lock_before = (root / "dvc.lock").read_bytes()
    dvc_lock = Lock(str(root / ".dvc" / "tmp" / "lock"))  # what a person's `dvc repro` would hold
    dvc_lock.lock()
    try:
        with api(retrained["url"]):
            flow_run = run_deployment(
                "retrain/retrain", timeout=300, poll_interval=2,
                parameters={"pull_first": False, "ingest": False, "push_after": False, "lock_wait_s": 3},
            )
    finally:
        dvc_lock.unlock()
    assert flow_run.state.is_completed() and flow_run.state.name == "Skipped", flow_run.state
    assert "DVC's lock" in flow_run.state.message and "skipping this run" in flow_run.state.message
    assert (root / "dvc.lock").read_bytes() == lock_before


def test_dvc_pull_in_a_fresh_clone_restores_the_data_bit_for_bit(retrained, workspace, tmp_path):
    root, remote = workspace["root"], workspace["remote"]
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "retrained")
    clone = tmp_path / "clone"
    run(root, "git", "clone", "-q", str(root), str(clone))
    assert not (clone / "data" / "raw").exists()
    run(clone, "dvc", "remote", "modify", "--local", "storage", "url", str(remote))
    run(clone, "dvc", "pull")
    tracked = ("data/raw", "models")
    restored, original = sha256s(clone, *tracked), sha256s(root, *tracked)  # (models/registry.json comes from git)
    assert restored == original
    assert sum(path.startswith("data/raw/") and path.endswith(".wav") for path in original) >= 10  # the corpus, not just a manifest
    assert {f"models/candidates/{c}/model.onnx" for c in TINY_CANDIDATES} | {"data/raw/manifest.csv"} <= set(restored)


def test_transient_faults_are_retried_and_a_permanent_one_fails_cleanly(prefect_server, make_project):
    root = make_project("faults")
    status, output = run_stage(root, prefect_server, "ingest", GENRETAG_FAULTS="ingest.decode=2")
    assert status == 0, output[-4000:]
    assert "injected transient fault 2 of 2" in output
    attempts = {n: c for n, c in task_runs(flow_run_id(output), prefect_server).items() if n.startswith("normalise_audio")}
    assert list(attempts.values()) == [3], attempts  # two failures, then success
    raw = sha256s(root, "data/raw")
    assert sum(name.endswith(".wav") for name in raw) == 12 and "data/raw/manifest.csv" in raw

    set_params(root, {"ingest": {"demo_tracks_per_genre": 4}})  # an ingest now would add four tracks
    status, output = run_stage(root, prefect_server, "ingest", GENRETAG_FAULTS="ingest.decode=permanent")
    assert status != 0
    assert "ingest.decode: injected permanent fault" in output
    attempts = {n: c for n, c in task_runs(flow_run_id(output), prefect_server).items() if n.startswith("normalise_audio")}
    assert list(attempts.values()) == [1], attempts  # no retry of a permanent fault
    assert sha256s(root, "data/raw") == raw
    assert not [p for p in (root / "data").rglob("*") if p.name.endswith(".tmp")]
