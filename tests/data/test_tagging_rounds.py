"""Tagging in rounds (score.max_pending): a run over more files than the cap scans, scores and writes a
round at a time, never hands the scorer more than the cap, and writes the catalog a one-round run writes,
copies of content tagged or failed in an earlier round included."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest

import genretag.tagging.sources as tagging_sources
from genretag.onnx.session import open_model
from genretag.tagging.run import local_scorer, run_steps
from genretag.tagging.run_state import TaggingRun
from genretag.tagging.scoring import ScoredTrack
from genretag.tagging.sources import HashedTrack
from genretag.tagging.store import Catalog
from tests.conftest import tone, write_audio
from tests.tagging_support import make_onnx_model

# Columns that differ between any two runs (row ids, clocks, who ran it), not by what was tagged.
_RUN_ONLY = ["id", "scored_at", "failed_at", "finished_at", "seconds", "run", "run_id"]
_COUNTS = ["files", "listed", "moved", "skipped", "tagged", "duplicates", "failed", "failures", "known_failures",
           "not_audio", "genre_counts", "windows_scored", "drift"]


def _table(url: str, table: str) -> pd.DataFrame:
    with Catalog(url) as catalog:
        frame = catalog.read(table)
    frame = frame.drop(columns=[c for c in _RUN_ONLY if c in frame.columns])
    return frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)


def _catalog(folder: Path) -> None:
    """Walked in this order (each folder's files, then its subfolders): bad, g1, notes.txt (skipped), a/g2,
    a/g3, b/g4, b/g5, then z/: a copy of bad (failed content) and a copy of g1 (tagged content)."""
    for i, name in enumerate(("g1.wav", "a/g2.wav", "a/g3.wav", "b/g4.wav", "b/g5.wav")):
        write_audio(folder / name, tone(3.5, frequency=180.0 + 110 * i, seed=i))
    (folder / "bad.wav").write_text("this is not audio\n", encoding="utf-8")
    (folder / "notes.txt").write_text("liner notes\n", encoding="utf-8")
    (folder / "z").mkdir()
    shutil.copy(folder / "bad.wav", folder / "z" / "copy_bad.wav")
    shutil.copy(folder / "g1.wav", folder / "z" / "copy_g1.wav")


def test_a_run_in_rounds_holds_at_most_max_pending_and_writes_what_one_round_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tagging_sources, "SCAN_CHUNK", 1)  # a round ends at a chunk's end: one track per chunk
    folder = tmp_path / "music"
    _catalog(folder)
    model = open_model(make_onnx_model(tmp_path / "m.onnx", version="1", seed=1), prefer_gpu=False)
    scorer = local_scorer(model, max_windows=1, batch_size=8, workers=1, silence_rms_dbfs=-60.0)
    given: dict[int, list[int]] = {}  # max_pending -> the tracks handed to each scorer call
    open_streams: list[int] = []

    def counting(cap: int):
        def score(todo: Sequence[HashedTrack]) -> Iterator[ScoredTrack]:
            assert not open_streams, "a round's scorer started before the last round's stream was closed"
            given.setdefault(cap, []).append(len(todo))

            def stream() -> Iterator[ScoredTrack]:
                open_streams.append(cap)
                try:
                    yield from scorer(todo)
                finally:
                    open_streams.pop()

            return stream()

        return score

    def tag(url: str, cap: int) -> dict:
        run = TaggingRun(folder, model=model, database_url=url, scorer=counting(cap), commit_every=1, max_pending=cap,
                         progress_bars=False, progress_every_s=3600, log=logging.getLogger("test-rounds"))
        return run_steps(run).to_dict()

    urls = {cap: f"sqlite:///{tmp_path / f'cap{cap}.db'}" for cap in (2, 1000)}
    with caplog.at_level(logging.INFO, logger="test-rounds"):
        rounds = tag(urls[2], 2)
    lines = [r.getMessage() for r in caplog.records]
    one_round = tag(urls[1000], 1000)

    # rounds 1-3 score 2 new tracks each (bad and g1, g2 and g3, g4 and g5); round 4 holds the two copies,
    # repeats of content scored in rounds 1 (both), and scores nothing
    assert given == {2: [2, 2, 2], 1000: [6]} and not open_streams
    assert [line.split(":")[0] for line in lines if line.startswith("round ")] == ["round 1", "round 2", "round 3"]
    summary_lines = [line for line in lines if " tracks listed: " in line]
    assert len(summary_lines) == 1 and summary_lines[0].startswith("8 tracks listed: 6 to score (in 4 rounds),")
    assert "scored 6/6 tracks: 5 tagged, 1 failed" in [line for line in lines if line.startswith("progress after")][-1]

    # the copy of g1 is duplicate content (not "already tagged", not "moved"); the copy of bad gets its own error row
    assert (rounds["tagged"], rounds["duplicates"], rounds["failed"], rounds["skipped"], rounds["moved"]) == (5, 1, 2, 0, 0)
    assert {k: rounds[k] for k in _COUNTS} == {k: one_round[k] for k in _COUNTS}
    for table in ("catalog_tags", "catalog_errors", "catalog_runs", "catalog_skips"):
        pd.testing.assert_frame_equal(_table(urls[2], table), _table(urls[1000], table))
    errors = _table(urls[2], "catalog_errors")
    assert sorted(Path(p).name for p in errors["path"]) == ["bad.wav", "copy_bad.wav"]

    # a rescan in rounds reads and scores nothing, and leaves the same catalog as a one-round rescan
    again = {cap: tag(urls[cap], cap) for cap in (2, 1000)}
    assert given == {2: [2, 2, 2], 1000: [6]}
    assert {k: again[2][k] for k in _COUNTS} == {k: again[1000][k] for k in _COUNTS}
    assert (again[2]["skipped"], again[2]["known_failures"], again[2]["tagged"], again[2]["failed"]) == (6, 2, 0, 0)
    for table in ("catalog_tags", "catalog_errors", "catalog_runs", "catalog_skips"):
        pd.testing.assert_frame_equal(_table(urls[2], table), _table(urls[1000], table))
