"""`genretag registry history`: who made which version champion, when and why, rollbacks included."""

from __future__ import annotations

import getpass

from mlflow import MlflowClient
from typer.testing import CliRunner

from genretag.registry.champion import promote, rollback
from genretag.cli.app import app
from genretag.core.config import Params


def test_history_lists_every_champion_change_with_who_when_and_why(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    params = Params()
    name = params.registry.model_name
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source=str(tmp_path))

    promote(params, root=tmp_path, version="1", reason="first champion")
    promote(params, root=tmp_path, version="2", reason="better on the review set")
    rollback(params, root=tmp_path, reason="complaints about jazz")

    result = CliRunner().invoke(app, ["registry", "history"])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.strip().splitlines()
    assert header.split() == ["when", "(UTC)", "action", "champion", "by", "why"]
    assert len(rows) == 3
    assert rows[0].split()[2:5] == ["promote", "v1", getpass.getuser()] and rows[0].endswith("first champion")
    assert rows[1].split()[2:6] == ["promote", "v1", "->", "v2"] and rows[1].endswith("better on the review set")
    assert rows[2].split()[2:6] == ["rollback", "v2", "->", "v1"] and rows[2].endswith("complaints about jazz")
    assert all(row[:4].isdigit() and row[10] == " " for row in rows)  # "YYYY-MM-DD HH:MM:SS"
