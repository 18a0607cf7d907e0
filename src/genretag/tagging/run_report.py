"""A picture of one tagging run: ``reports/tagging/<run id>/`` with a PNG and a self-contained HTML page.

The figure (matplotlib, Agg: no display) has four panels: the genres tagged in this run (tracks per
genre), the confidence of those tags (top-1 probability, a histogram with the review threshold
marked), the 3-s windows scored and skipped as silent, and the run's drift measures against the
training data (genretag.evaluation.drift.run_drift). The page ``index.html`` carries the figure as a
``data:`` URI and the counts and drift as tables: no script, no external address, it opens offline
and can be mailed as one file. The flow also posts the page's Markdown (figure embedded) as a Prefect
artifact (:func:`run_report_markdown`).

The slim tagger image has no matplotlib (docker/tagger.in): there the page holds the tables and a line
saying why the figure is missing, and the run goes on.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genretag.core.atomic import save_figure, write_text
from genretag.tagging.summary import TaggingSummary

TAGGING_REPORTS = "tagging"  # under Layout.reports_dir: reports/tagging/<run id>/
FIGURE = "run.png"
PAGE = "index.html"
DRIFT_MEASURES: tuple[str, ...] = ("genre_psi", "embedding_shift", "loudness_shift_db")  # drawn as bars (unitless/dB)
CONFIDENCE_BINS = 20  # over [0, 1]: 0.05 wide


@dataclass(frozen=True)
class RunReport:
    """Where one run's report was written."""

    folder: Path
    figure: Path | None  # None: matplotlib is not installed here
    page: Path


def run_figure(summary: TaggingSummary, *, review_below: float):
    """The run's four panels as a matplotlib Figure (not pyplot: no global state, no display)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7.5), layout="constrained")
    genres, confidence, windows, drift = figure.subplots(2, 2).ravel()

    counted = summary.genre_counts.most_common()
    genres.barh([g for g, _ in counted][::-1], [c for _, c in counted][::-1], color="#4c72b0")
    genres.set_title(f"Genres tagged ({summary.tagged} tracks)")
    genres.set_xlabel("tracks")
    if not counted:
        genres.text(0.5, 0.5, "nothing tagged in this run", ha="center", va="center", transform=genres.transAxes)

    confidence.hist(summary.confidences, bins=CONFIDENCE_BINS, range=(0.0, 1.0), color="#55a868")
    confidence.axvline(review_below, color="#c44e52", linestyle="--", label=f"review below {review_below:g}")
    confidence.set_title("Confidence of the tags (top-1 probability)")
    confidence.set_xlabel("confidence")
    confidence.set_ylabel("tracks")
    confidence.legend(loc="upper left")

    windows.bar(["scored", "silent (skipped)"], [summary.windows_scored, summary.windows_silent], color=["#4c72b0", "#8c8c8c"])
    windows.set_title(f"3-s windows ({summary.windows_scored / summary.tagged:.1f} scored per track)" if summary.tagged
                      else "3-s windows")
    windows.set_ylabel("windows")

    measured = [(name, summary.drift.get(name)) for name in DRIFT_MEASURES]
    shown = [(name, float(value)) for name, value in measured if value is not None]
    drift.bar([n for n, _ in shown], [v for _, v in shown], color="#dd8452")
    drift.axhline(0.0, color="black", linewidth=0.8)
    drift.set_title(f"Drift against the training data ({summary.drift.get('reference', 'n/a')})"[:70])
    if not shown:
        drift.text(0.5, 0.5, "not measured", ha="center", va="center", transform=drift.transAxes)
    figure.suptitle(f"Tagging run: {summary.model_name} {summary.model_version} on {summary.provider}, "
                    f"{summary.tagged} tagged, {summary.failed} failed")
    return figure


def _rows(pairs: list[tuple[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(cell(v))}</td></tr>" for k, v in pairs)


def run_report_html(summary: TaggingSummary, *, run_id: str, png: bytes | None) -> str:
    """The self-contained page: the figure inline (``data:image/png;base64``; ``png`` None: a line saying
    matplotlib is missing), counts, genres, drift, failures."""
    counts = [("files", summary.files), ("tracks listed", summary.listed), ("tagged", summary.tagged),
              ("skipped (already tagged)", summary.skipped), ("duplicate content", summary.duplicates),
              ("failed", summary.failed), ("windows scored", summary.windows_scored),
              ("silent windows", summary.windows_silent), ("seconds", round(summary.seconds, 3))]
    drift = [(key, value) for key, value in summary.drift.items() if not isinstance(value, (dict, list))]
    failures = "".join(f"<tr><td>{html.escape(f['path'])}</td><td>{html.escape(f['reason'])}</td></tr>" for f in summary.failures)
    warnings = "".join(f"<li>{html.escape(line)}</li>" for line in summary.drift_warnings) or "<li>none</li>"
    title = f"Tagging run {run_id}"
    figure = (f'<img id="run-figure" alt="genres, confidence, windows and drift of this run" '
              f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png is not None
              else '<p id="run-figure">No figure: matplotlib is not installed here (the tagger image).</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 72rem; color: #222; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(summary.model_name)} {html.escape(summary.model_version)} on {html.escape(summary.provider)};
source <code>{html.escape(summary.source)}</code> &rarr; <code>{html.escape(summary.database)}</code></p>
{figure}
<h2>Counts</h2><table id="counts">{_rows(counts)}</table>
<h2>Genres tagged</h2><table id="genres"><tr><th>genre</th><th>tracks</th></tr>{_rows(summary.genre_counts.most_common())}</table>
<h2>Drift against the training data</h2><table id="drift">{_rows(drift)}</table>
<p>Warnings:</p><ul>{warnings}</ul>
<h2>Failed files ({summary.failed})</h2><table id="failures"><tr><th>file</th><th>reason</th></tr>{failures}</table>
</body></html>
"""


def write_run_report(summary: TaggingSummary, *, folder: Path, run_id: str, review_below: float) -> RunReport:
    """Write ``folder/run.png`` (where matplotlib can be imported) and ``folder/index.html``, atomically each;
    return their paths."""
    try:
        figure = run_figure(summary, review_below=review_below)
    except ImportError:  # the tagger image ships no matplotlib: the page keeps its tables and says why
        figure = None
    figure_path = None if figure is None else save_figure(figure, folder / FIGURE)
    page = folder / PAGE
    write_text(page, run_report_html(summary, run_id=run_id, png=None if figure_path is None else figure_path.read_bytes()))
    return RunReport(folder=folder, figure=figure_path, page=page)


def run_report_markdown(summary: TaggingSummary, report: RunReport) -> str:
    """The run's Markdown summary with its figure embedded as a data URI (a Prefect artifact shows it)."""
    if report.figure is None:
        return f"Report: `{report.page}` (no figure: matplotlib is not installed here)\n\n{summary.to_markdown()}"
    png = base64.b64encode(report.figure.read_bytes()).decode()
    return f"![tagging run](data:image/png;base64,{png})\n\nReport: `{report.page}`\n\n{summary.to_markdown()}"
