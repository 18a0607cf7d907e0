"""`genretag tag-catalog` without a Prefect API: the tagging steps run in the CLI process (no
Prefect imported), and every run appends its row to catalog_runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.cli import tiny_model
from tests.conftest import REPO_ROOT
from tests.tagging_support import make_good_files

from genretag.tagging.store import Catalog

PROBE = """
import json, sys
from genretag.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "prefect": "prefect" in sys.modules}), file=sys.stderr)
"""


def tag(folder: Path, model: Path, url: str, cwd: Path) -> tuple[dict, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "GENRETAG_ROOT", "GENRETAG_PARAMS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    done = subprocess.run([sys.executable, "-c", PROBE, "tag-catalog", str(folder), "--model", str(model), "--database", url],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


def test_tagging_without_an_api_runs_here_and_records_each_run(tmp_path):
    model = tiny_model(tmp_path / "model.onnx")  # a contract-v2 graph, version "bench-1"
    folder = tmp_path / "catalog"
    make_good_files(folder)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    for _ in range(2):
        probe, out = tag(folder, model, url, elsewhere)
        assert probe == {"code": 0, "prefect": False}, out
        assert out.startswith("genretag-cnn bench-1 on CPUExecutionProvider: ")

    with Catalog(url) as catalog:
        runs = catalog.read("catalog_runs")
        tags = catalog.read("catalog_tags")
        errors = catalog.read("catalog_errors")
    assert list(runs["listed"]) == [5, 5] and set(runs["run"]) == {"cli"} and (runs["seconds"] > 0).all()
    assert set(runs["model_version"]) == {"bench-1"} and set(runs["provider"]) == {"CPUExecutionProvider"}
    first, second = runs.iloc[0], runs.iloc[1]
    assert first["tagged"] == 5 == len(tags) and first["failed"] == 0
    assert runs["genre_psi"].isna().all()  # no training tracks where it ran: drift not measured
    assert sum(json.loads(first["genre_counts"]).values()) == first["tagged"]
    assert second["tagged"] == 0 and second["skipped"] == first["tagged"]  # what the first run tagged is skipped
    assert second["failed"] == len(errors)  # failures are tried again, and counted again
    assert runs["finished_at"].is_monotonic_increasing and str(runs["finished_at"][0].tz) == "UTC"
    assert list(elsewhere.iterdir()) == []  # nothing written where it ran


def test_a_run_inside_a_project_measures_genre_drift_against_the_training_tracks(tmp_path):
    model = tiny_model(tmp_path / "model.onnx")
    folder = tmp_path / "catalog"
    make_good_files(folder)
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "params.yaml").write_text("score:\n  drift_psi_warn: 0.0001\n  drift_min_tracks: 1\n")
    (project / "data" / "tracks.csv").write_text("track_id,genre\nb1,blues\nb2,blues\nj1,jazz\n")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"

    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "GENRETAG_ROOT", "GENRETAG_PARAMS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    done = subprocess.run([sys.executable, "-m", "genretag.cli", "tag-catalog", str(folder), "--model", str(model), "--database", url],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with Catalog(url) as catalog:
        run = catalog.read("catalog_runs").iloc[-1]
    assert run["tagged"] == 5 and run["genre_psi"] > 0.0001
    assert "warning: predicted genres drift from the training tracks' genres: PSI" in done.stderr
