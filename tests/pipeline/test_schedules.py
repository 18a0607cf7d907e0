"""Fast checks of the operations code: schedules and parameters, the retrain lock, the DVC remote
configuration. The end-to-end runs against a real Prefect server are in test_operations.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.deploy import Schedules, deployments
from flows.retrain import RetrainBusy, child_env, remote_problem, retrain_lock, stages_run
from tests.conftest import REPO_ROOT

OVERRIDES = ("GENRETAG_RETRAIN_CRON", "GENRETAG_TAG_CATALOG_CRON", "GENRETAG_SCHEDULE_TIMEZONE", "GENRETAG_CATALOG_SOURCE")


@pytest.fixture
def no_overrides(monkeypatch):
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)


def test_default_schedules_and_parameters(no_overrides, tmp_path):
    retrain, tagging = deployments(Schedules.from_env(workspace=tmp_path))
    assert (retrain.name, tagging.name) == ("retrain", "tag-catalog")
    assert [(s.schedule.cron, s.schedule.timezone) for s in retrain.schedules] == [("0 3 * * 1", "UTC")]
    assert [(s.schedule.cron, s.schedule.timezone) for s in tagging.schedules] == [("0 * * * *", "UTC")]
    assert retrain.parameters == {"workspace": str(tmp_path.resolve())}
    assert tagging.parameters == {"source": str(tmp_path.resolve() / "catalog" / "incoming")}


def test_schedules_follow_the_environment_and_explicit_options(no_overrides, monkeypatch, tmp_path):
    monkeypatch.setenv("GENRETAG_RETRAIN_CRON", "30 1 * * 6")
    monkeypatch.setenv("GENRETAG_SCHEDULE_TIMEZONE", "Europe/Madrid")
    monkeypatch.setenv("GENRETAG_CATALOG_SOURCE", "/srv/catalog/new")
    schedules = Schedules.from_env(workspace=tmp_path, tag_catalog_cron="*/15 * * * *")
    retrain, tagging = deployments(schedules)
    assert retrain.schedules[0].schedule.cron == "30 1 * * 6"
    assert tagging.schedules[0].schedule.cron == "*/15 * * * *"
    assert tagging.schedules[0].schedule.timezone == "Europe/Madrid"
    assert tagging.parameters == {"source": "/srv/catalog/new"}


def test_the_retrain_lock_admits_one_holder_and_survives_errors(tmp_path):
    with retrain_lock(tmp_path) as path:
        assert path == tmp_path / ".dvc" / "tmp" / "genretag-retrain.lock"
        with pytest.raises(RetrainBusy, match=r"another retrain is running in .* \(pid \d+ since .*skipping this run"):
            with retrain_lock(tmp_path):
                pass
    with pytest.raises(ZeroDivisionError), retrain_lock(tmp_path):
        1 / 0  # noqa: B018
    with retrain_lock(tmp_path):  # released after the error
        pass


def test_the_default_remote_is_a_folder_beside_the_repository():
    from dvc.config import Config

    repo_level = Config(dvc_dir=str(REPO_ROOT / ".dvc")).load_one("repo")  # ignores a developer's config.local
    assert repo_level["core"]["remote"] == "storage"
    url = Path(repo_level["remote"]["storage"]["url"])
    assert url == REPO_ROOT.parent / "genretag-dvc-remote"


def test_remote_reachability(tmp_path):
    assert "does not exist" in remote_problem(str(tmp_path / "missing"))
    assert remote_problem(str(tmp_path)) == ""
    assert remote_problem(f"file://{tmp_path}") == ""
    assert remote_problem("s3://bucket/genretag") == ""  # cloud remotes are tried, not guessed


def test_stage_processes_get_the_venv_the_workspace_and_no_runner_state(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    env = child_env(tmp_path)
    assert "PREFECT__FLOW_RUN_ID" not in env and env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["GENRETAG_ROOT"] == str(tmp_path)
    assert stages_run("Running stage 'ingest':\n> python -m flows.ingest\nRunning stage 'split':\n") == ["ingest", "split"]
