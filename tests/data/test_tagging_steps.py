"""One tagging step list: the tag-catalog flow runs genretag.tagging.run.TAGGING_STEPS as tasks, in order,
and writes the same catalog as the plain tag_catalog, which runs the same list without Prefect."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import flows.common
from flows.tag_catalog import tag_catalog_flow
from genretag.core.config import load_params
from genretag.onnx.session import open_model
from genretag.tagging.run import all_steps, tag_catalog
from genretag.tagging.store import Catalog
from tests.tagging_support import make_bad_files, make_good_files, make_onnx_model, make_root

# Columns that differ between any two runs (row ids, clocks, who ran it), not by what was tagged.
_RUN_ONLY = ["id", "scored_at", "failed_at", "finished_at", "seconds", "run", "run_id"]


def _task_run_steps(flow_run_id: str) -> list[str]:
    """The step names of a flow run's task runs, in the order they started (a run's name is '<task name>-<key>')."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                     sort=TaskRunSort.EXPECTED_START_TIME_ASC)
    return [run.name.rsplit("-", 1)[0] for run in runs]


def _table(url: str, table: str) -> pd.DataFrame:
    with Catalog(url) as catalog:
        frame = catalog.read(table)
    frame = frame.drop(columns=[c for c in _RUN_ONLY if c in frame.columns])
    return frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)


def test_the_flow_runs_the_one_step_list_and_writes_what_the_plain_run_writes(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_root(tmp_path / "root", workers=1, batch_size=8, commit_every=50, max_windows=4)
    monkeypatch.setenv("GENRETAG_ROOT", str(root))
    monkeypatch.delenv("GENRETAG_CATALOG_URL", raising=False)
    monkeypatch.delenv(flows.common.FAULTS_ENV, raising=False)
    params = load_params(root / "params.yaml")
    model_file = make_onnx_model(tmp_path / "v1.onnx", version="1", seed=1)
    folder = tmp_path / "catalog"
    make_good_files(folder)
    make_bad_files(folder / "bad")  # fail at decoding: error rows from write-tags
    (folder / "gone.wav").symlink_to(tmp_path / "nowhere.wav")  # fails at hashing: an error row from write-read-failures
    shutil.copy(folder / "a" / "sine220.wav", folder / "a" / "copy.wav")  # duplicate content: tagged once
    urls = {"flow": f"sqlite:///{tmp_path / 'flow.db'}", "plain": f"sqlite:///{tmp_path / 'plain.db'}"}

    def tag_both() -> tuple[dict, dict]:
        flow_summary = tag_catalog_flow(str(folder), model=str(model_file), database_url=urls["flow"])
        plain_summary = tag_catalog(
            folder, model=open_model(model_file, prefer_gpu=False), database_url=urls["plain"], max_windows=4,
            batch_size=8, commit_every=50, workers=1, silence_rms_dbfs=params.validation.silence_rms_dbfs,
            review_below=params.score.review_below, drift_limits=params.score,
        ).to_dict()
        return flow_summary, plain_summary

    flow_summary, plain_summary = tag_both()
    # every step of the one list ran as a task of its name, in the list's order (one hash chunk, one commit)
    assert _task_run_steps(flow_summary["flow_run_id"]) == ["check-catalog", "load-model", *(s.name for s in all_steps())]
    assert [s.name for s in all_steps()] == [
        "check-source", "open-catalog", "list-tracks", "hash-tracks", "resolve-aliases", "plan-tagging", "refresh-moved-paths",
        "write-read-failures", "write-skips", "score-tracks", "write-tags", "write-copy-failures", "measure-drift", "record-run",
        "update-similarity-index", "draw-run",
    ]
    assert (flow_summary["tagged"], flow_summary["duplicates"], flow_summary["failed"]) == (5, 1, 7)

    (folder / "a" / "sine880.wav").rename(folder / "moved880.wav")  # the rerun points its tag at the new path
    flow_again, plain_again = tag_both()
    # moved: sine880, and the duplicate content's tag, which refresh_paths points at the last of its copies listed
    assert (flow_again["moved"], flow_again["skipped"], flow_again["tagged"]) == (2, 6, 0)

    counts = ["files", "listed", "moved", "tagged", "skipped", "duplicates", "failed", "failures", "genre_counts",
              "windows_scored", "windows_silent", "drift", "drift_warnings"]
    for flow_run, plain_run in ((flow_summary, plain_summary), (flow_again, plain_again)):
        assert {k: flow_run[k] for k in counts} == {k: plain_run[k] for k in counts}
    for table in ("catalog_tags", "catalog_errors", "catalog_runs", "catalog_skips"):
        pd.testing.assert_frame_equal(_table(urls["flow"], table), _table(urls["plain"], table))
    assert _table(urls["flow"], "catalog_tags")["path"].str.endswith("moved880.wav").sum() == 1
    # each flow run drew its picture into reports/tagging/<run id>/; the plain run here was given no report_dir
    with Catalog(urls["flow"]) as catalog:
        run_ids = set(catalog.read("catalog_runs")["run_id"])
    assert {p.name for p in (root / "reports" / "tagging").iterdir()} == run_ids and len(run_ids) == 2
    assert all((root / "reports" / "tagging" / run_id / "run.png").read_bytes()[:4] == b"\x89PNG" for run_id in run_ids)
