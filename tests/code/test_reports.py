"""Reports say true things: plots declared once, resolved GX parameters, real data counts,
a CPU runtime for MLflow consumers, dirty commits flagged."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tests.conftest import REPO_ROOT
from tests.offline_browser import assert_loads_nothing_external, offline_dom, offline_screenshot

from genretag.core.config import Params
from genretag.training.card import _counts_line, split_counts
from genretag.training.provenance import DIRTY, git_commit
from genretag.registry.lineage import pip_requirements
from genretag.data.reports import resolve_parameters
from genretag.data.web_assets import dvc_plots_template, external_resources
from genretag.tagging.run_report import run_report_markdown, write_run_report
from genretag.tagging.summary import TaggingSummary


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


@pytest.mark.browser
def test_dvc_plots_show_draws_vega_offline_each_plot_once(tmp_path):
    """`dvc plots show` with the project's template (.dvc/config plots.html_template, written by `make`):
    the confusion matrices render as vega canvases with the network off, the t-SNE PNGs once each."""
    template = dvc_plots_template(tmp_path / "plots.html")  # what `make` writes to .dvc/plots.html
    out = tmp_path / "dvc_plots"
    dvc = Path(shutil.which("dvc") or REPO_ROOT / ".venv/bin/dvc")
    subprocess.run([str(dvc), "plots", "show", "--html-template", str(template), "-o", str(out)],
                   cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    page = out / "index.html"
    assert_loads_nothing_external(out)
    candidates = sorted(p.name for p in (REPO_ROOT / "plots" / "candidates").iterdir())
    dom = offline_dom(page)
    assert dom.count('class="vega-embed') == len(candidates)  # one confusion panel per candidate, drawn by vega
    assert len(re.findall(r"<canvas|<svg class=\"marks\"", dom)) >= len(candidates)
    images = sorted(p.name for p in (out / "static").iterdir())
    assert images == sorted(f"workspace_plots_candidates_{c}_tsne.png" for c in candidates)  # no PNG twin of a vega panel
    config = (REPO_ROOT / ".dvc" / "config").read_text()
    assert "html_template = plots.html" in config


def _summary() -> TaggingSummary:
    summary = TaggingSummary("/music", "sqlite:///catalog.db", "genretag-cnn", "3", "CPUExecutionProvider")
    summary.listed, summary.tagged, summary.failed, summary.windows_scored, summary.windows_silent = 6, 5, 1, 40, 3
    summary.genre_counts = Counter({"jazz": 3, "rock": 2})
    summary.confidences = [0.9, 0.8, 0.42, 0.7, 0.99]
    summary.drift = {"reference": "model", "tracks": 5, "genre_psi": 0.31, "embedding_shift": 0.12, "loudness_shift_db": -2.5}
    summary.failures = [{"path": "/music/bad <1>.mp3", "reason": "cannot decode"}]
    return summary


def test_a_tagging_run_report_is_one_self_contained_page(tmp_path):
    report = write_run_report(_summary(), folder=tmp_path / "run1", run_id="run1", review_below=0.5)
    png = report.figure.read_bytes()
    assert png[:4] == b"\x89PNG" and sorted(p.name for p in report.folder.iterdir()) == ["index.html", "run.png"]
    page = report.page.read_text(encoding="utf-8")
    assert base64.b64encode(png).decode() in page and "<script" not in page
    assert external_resources(page) == [] and "http" not in page
    assert "/music/bad &lt;1&gt;.mp3" in page  # file names are escaped
    markdown = run_report_markdown(_summary(), report)
    assert markdown.startswith("![tagging run](data:image/png;base64,") and "| jazz | 3 |" in markdown


@pytest.mark.browser
def test_a_tagging_run_report_renders_its_figure_and_tables_offline(tmp_path):
    report = write_run_report(_summary(), folder=tmp_path / "run1", run_id="run1", review_below=0.5)
    dom = offline_dom(report.page)
    assert re.search(r'<table id="genres">.*<th>jazz</th><td>3</td>', dom)
    assert re.search(r'<table id="counts">.*<th>tagged</th><td>5</td>', dom)
    shot = offline_screenshot(report.page, tmp_path / "shot.png")
    from matplotlib.image import imread

    pixels = (imread(shot)[..., :3] * 255).round().astype(int)
    bar_blue = np.all(np.abs(pixels - [0x4C, 0x72, 0xB0]) <= 3, axis=-1).sum()  # the genre bars, drawn by the image
    assert bar_blue > 2000


def test_without_matplotlib_the_run_page_still_holds_its_tables(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    report = write_run_report(_summary(), folder=tmp_path / "run2", run_id="run2", review_below=0.5)
    page = report.page.read_text(encoding="utf-8")
    assert report.figure is None and not (tmp_path / "run2" / "run.png").exists()
    assert "No figure: matplotlib is not installed here" in page and "<th>jazz</th><td>3</td>" in page
    assert run_report_markdown(_summary(), report).startswith("Report: ")
