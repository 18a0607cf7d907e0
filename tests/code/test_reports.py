"""Reports say true things: plots declared once, resolved GX parameters, real data counts,
a CPU runtime for MLflow consumers, dirty commits flagged."""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tests.conftest import REPO_ROOT
from tests.tagging_support import example_summary

from genretag.core.config import Params
from genretag.training.card import _counts_line, split_counts
from genretag.training.provenance import DIRTY, git_commit
from genretag.registry.lineage import pip_requirements
from genretag.data.reports import resolve_parameters
from genretag.data.web_assets import external_resources
from genretag.tagging.run_report import run_report_markdown, write_run_report


def _declared_plots(dvc_yaml: dict) -> tuple[list[str], list[str]]:
    """(paths declared as stage plots, paths the top-level plots draw)."""
    stage = [next(iter(entry)) if isinstance(entry, dict) else entry
             for definition in dvc_yaml["stages"].values() for entry in definition.get("plots", [])]
    top = []
    for entry in dvc_yaml.get("plots", []):
        name, spec = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        y = (spec or {}).get("y")
        top += list(y) if isinstance(y, dict) else [name]
    return stage, top


def test_each_plot_is_declared_once_and_dvc_draws_no_stray_panel(tmp_path):
    stage, top = _declared_plots(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text()))
    assert not set(stage) & set(top), "declared both as a stage plot and in the top-level plots"
    assert len(stage) == len(set(stage))

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name in ("dvc.yaml", "params.yaml"):  # params: the candidate stages are a foreach over train.candidates
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    confusion = tmp_path / "plots" / "candidates" / "compact" / "confusion_matrix.csv"
    confusion.parent.mkdir(parents=True)
    confusion.write_text("actual,predicted\nblues,blues\njazz,blues\njazz,jazz\n")
    dvc = Path(shutil.which("dvc") or REPO_ROOT / ".venv/bin/dvc")
    subprocess.run([str(dvc), "init", "-q"], cwd=tmp_path, check=True)
    done = subprocess.run([str(dvc), "plots", "show", "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    panels = json.loads(done.stdout)["data"]
    assert [name for name in panels if name.endswith("compact/confusion_matrix.csv")]
    assert not [name for name in panels if name.startswith("dvc.yaml::")]  # no stray panel of a stage declaration


def test_gx_placeholders_are_replaced_by_the_run_parameters():
    kwargs = {"column": "duration_s", "min_value": {"$PARAMETER": "min_duration_s"},
              "value_set": [{"$PARAMETER": "genres"}], "max_value": {"$PARAMETER": "unknown"}}
    resolved = resolve_parameters(kwargs, {"min_duration_s": 3.0, "genres": ["jazz"]})
    assert resolved == {"column": "duration_s", "min_value": 3.0, "value_set": [["jazz"]], "max_value": "<unknown>"}


def test_the_model_card_counts_tracks_and_clips_of_each_split(tmp_path):
    rows = [("t1", "train")] * 10 + [("t2", "train")] * 7 + [("t3", "test")] * 4
    clips = tmp_path / "clips.csv"
    pd.DataFrame(rows, columns=["track_id", "split"]).to_csv(clips, index=False)
    counts = split_counts(clips)
    assert counts == {"train": (2, 17), "test": (1, 4)}
    line = _counts_line(Params(), counts)
    assert "3 tracks cut into 21 clips of 3 s" in line and "train 2 tracks / 17 clips; test 1 tracks / 4 clips" in line
    assert split_counts(tmp_path / "absent.csv") == {}


def test_mlflow_model_requirements_pin_the_cpu_runtime(tmp_path):
    (tmp_path / "requirements.lock").write_text("numpy==2.1.0\nonnx==1.19.0\nonnxruntime-gpu==1.31.1\n")
    assert pip_requirements(tmp_path) == ["onnxruntime==1.31.1", "onnx==1.19.0", "numpy==2.1.0"]


def test_git_commit_flags_a_dirty_work_tree(tmp_path):
    repo, plain = tmp_path / "repo", tmp_path / "plain"
    repo.mkdir(), plain.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    (repo / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("commit", "-qm", "one")
    clean = git_commit(repo)
    assert len(clean) == 40 and not clean.endswith(DIRTY)
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == clean + DIRTY
    assert git_commit(plain) == "unknown"


def test_psi_is_zero_for_the_same_genres_and_grows_with_the_shift():
    from genretag.evaluation.drift import genre_psi, psi

    training = {"blues": 100, "jazz": 100, "rock": 100}
    assert genre_psi(training, {"blues": 10, "jazz": 10, "rock": 10}) == 0.0
    mild = genre_psi(training, {"blues": 12, "jazz": 10, "rock": 8})
    only_jazz = genre_psi(training, {"jazz": 30})
    assert 0 < mild < 0.1 < 0.25 < only_jazz
    # by hand: proportions a = (0.4, 1/3, 0.2667) against e = 1/3 each
    a = (0.4, 1 / 3, 8 / 30)
    assert psi(training, {"blues": 12, "jazz": 10, "rock": 8}, labels=["blues", "jazz", "rock"]) == pytest.approx(
        sum((x - 1 / 3) * math.log(x / (1 / 3)) for x in a))
    assert genre_psi({}, {"jazz": 3}) is None and genre_psi(training, {}) is None


def test_a_tagging_run_report_is_one_self_contained_page(tmp_path):
    report = write_run_report(example_summary(), folder=tmp_path / "run1", run_id="run1", review_below=0.5)
    png = report.figure.read_bytes()
    assert png[:4] == b"\x89PNG" and sorted(p.name for p in report.folder.iterdir()) == ["index.html", "run.png"]
    page = report.page.read_text(encoding="utf-8")
    assert base64.b64encode(png).decode() in page and "<script" not in page
    assert external_resources(page) == [] and "http" not in page
    assert "/music/bad &lt;1&gt;.mp3" in page  # file names are escaped
    markdown = run_report_markdown(example_summary(), report)
    assert markdown.startswith("![tagging run](data:image/png;base64,") and "| jazz | 3 |" in markdown


def test_without_matplotlib_the_run_page_still_holds_its_tables(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` now raises ImportError, as in the tagger image
    report = write_run_report(example_summary(), folder=tmp_path / "run2", run_id="run2", review_below=0.5)
    page = report.page.read_text(encoding="utf-8")
    assert report.figure is None and not (tmp_path / "run2" / "run.png").exists()
    assert "No figure: matplotlib is not installed here" in page and "<th>jazz</th><td>3</td>" in page
    assert run_report_markdown(example_summary(), report).startswith("Report: ")
