"""The HTML reports in a real headless chromium with the network off (marked browser): dvc plots through
the project's offline template, and a tagging run's page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from genretag.data.web_assets import dvc_plots_template
from genretag.tagging.run_report import write_run_report
from tests.conftest import REPO_ROOT
from tests.offline_browser import assert_loads_nothing_external, offline_dom, offline_screenshot
from tests.tagging_support import example_summary


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


@pytest.mark.browser
def test_a_tagging_run_report_renders_its_figure_and_tables_offline(tmp_path):
    report = write_run_report(example_summary(), folder=tmp_path / "run1", run_id="run1", review_below=0.5)
    dom = offline_dom(report.page)
    assert re.search(r'<table id="genres">.*<th>jazz</th><td>3</td>', dom)
    assert re.search(r'<table id="counts">.*<th>tagged</th><td>5</td>', dom)
    shot = offline_screenshot(report.page, tmp_path / "shot.png")
    from matplotlib.image import imread

    pixels = (imread(shot)[..., :3] * 255).round().astype(int)
    bar_blue = np.all(np.abs(pixels - [0x4C, 0x72, 0xB0]) <= 3, axis=-1).sum()  # the genre bars, drawn by the image
    assert bar_blue > 2000
