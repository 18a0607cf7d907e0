"""The review loop's pieces: the needs_review flag, the window timeline, `show`'s strip, review export and import."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from genretag.audio.decoding import file_sha256
from genretag.tagging.rows import tag_row, timeline_lines
from genretag.tagging.sources import HashedTrack
from genretag.tagging.store import Catalog
from genretag.cli.app import app
from genretag.data.ingest import FEEDBACK_COLUMNS, feedback_sources, ingest, read_table
from genretag.core.config import layout
from genretag.tagging.review import export_review, import_review, review_rows
from genretag.tagging.scoring import summarize
from genretag.tagging.windows import cut_windows
from tests.conftest import tone, write_audio

LABELS = ("blues", "jazz", "rock")


def _score(windows: list[list[float]], starts: tuple[float, ...]):
    return summarize(np.asarray(windows, dtype=np.float32), LABELS, windows_silent=1, window_starts_s=starts)


def _row(path: Path, windows: list[list[float]], starts: tuple[float, ...], *, review_below: float = 0.5, version: str = "3") -> dict:
    track = HashedTrack(path.stem, path, file_sha256(path))
    return tag_row(track, _score(windows, starts), model_name="genretag-cnn", model_version=version, provider="CPUExecutionProvider",
                   contract_version=2, review_below=review_below)


def test_a_tag_below_review_below_is_flagged_and_keeps_its_windows(tmp_path: Path) -> None:
    song = tmp_path / "medley.wav"
    song.write_bytes(b"bytes with a hash")
    windows = [[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.2, 0.3, 0.5]]
    row = _row(song, windows, (0.0, 3.0, 60.0))
    assert row["genre"] == "rock" and row["confidence"] == pytest.approx(0.45)
    assert row["needs_review"] is True  # 0.45 < 0.5
    assert _row(song, windows, (0.0, 3.0, 60.0), review_below=0.45)["needs_review"] is False  # not below: not flagged
    timeline = json.loads(row["window_probabilities"])
    assert timeline["labels"] == list(LABELS) and timeline["start_s"] == [0.0, 3.0, 60.0]
    assert timeline["probabilities"] == [[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.2, 0.3, 0.5]]  # 4 decimals of float32
    with pytest.raises(ValueError, match="2 window starts for 3 windows"):
        _score(windows, (0.0, 3.0))


def test_cut_windows_keeps_the_starts_of_the_windows_it_scores() -> None:
    rate, clip = 1000, 3000
    waveform = tone(12.0, sample_rate=rate)
    waveform[3000:6000] = 0.0  # the second window is silent: not scored, its start not recorded
    windows = cut_windows(waveform, clip_samples=clip)
    assert windows.silent == 1 and list(windows.starts) == [0, 6000, 9000]


def test_an_old_catalog_gains_the_review_columns(catalog_url: str, tmp_path: Path) -> None:
    """SQLite and PostgreSQL: a catalog_tags without the columns gets them; old rows are unflagged, without timeline."""
    song = tmp_path / "old.wav"
    song.write_bytes(b"an old row")
    row = _row(song, [[0.1, 0.1, 0.8]], (0.0,))
    with Catalog(catalog_url) as catalog:
        catalog.write([row], [])
        with catalog.engine.begin() as connection:
            for column in ("needs_review", "window_probabilities"):
                connection.execute(sa.text(f'ALTER TABLE catalog_tags DROP COLUMN "{column}"'))
    with Catalog(catalog_url) as catalog:
        flagged = _row(tmp_path / "old.wav", [[0.4, 0.3, 0.3]], (0.0,), version="4")
        assert catalog.write([flagged], []).tagged == 1
        tags = catalog.read("catalog_tags")
    assert [bool(v) for v in tags["needs_review"]] == [False, True]
    assert pd.isna(tags["window_probabilities"].iloc[0]) and json.loads(tags["window_probabilities"].iloc[1])["start_s"] == [0.0]


def test_show_prints_the_genre_timeline_one_line_per_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    song = tmp_path / "mix.wav"
    song.write_bytes(b"a dj mix")
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    with Catalog(url) as catalog:
        catalog.write([_row(song, [[0.8, 0.15, 0.05], [0.05, 0.15, 0.8]], (0.0, 63.0))], [])
    monkeypatch.delenv("GENRETAG_CATALOG_URL", raising=False)
    result = CliRunner().invoke(app, ["show", str(song), "--database", url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("blues 0.425  rock 0.425  jazz 0.150  (2 windows, needs review)")
    assert lines[1:] == ["  0:00  blues  0.80   (jazz 0.15)", "  1:03  rock   0.80   (jazz 0.15)"]
    assert timeline_lines(None) == []


@pytest.fixture
def tagged(tmp_path: Path) -> tuple[str, dict[str, Path]]:
    """A catalog of four real files: two flagged (confidence < 0.5), two not."""
    files = {name: write_audio(tmp_path / "music" / f"{name}.wav", tone(4.0, frequency=f, seed=i))
             for i, (name, f) in enumerate((("low1", 220.0), ("low2", 330.0), ("high1", 440.0), ("high2", 550.0)))}
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    scores = {"low1": [0.3, 0.3, 0.4], "low2": [0.45, 0.35, 0.2], "high1": [0.9, 0.05, 0.05], "high2": [0.1, 0.8, 0.1]}
    with Catalog(url) as catalog:
        catalog.write([_row(files[name], [p], (0.0,)) for name, p in scores.items()], [])
    return url, files


def test_review_export_writes_flagged_rows_and_a_seeded_qc_sample(tagged, tmp_path: Path) -> None:
    url, files = tagged
    sheet = export_review(url, out=tmp_path / "review.csv", sample=1, seed=7)
    written = read_table(tmp_path / "review.csv")
    assert list(written["reason"]) == ["needs_review", "needs_review", "qc_sample"]
    assert list(written["sha256"][:2]) == [file_sha256(files["low1"]), file_sha256(files["low2"])]  # least confident first
    assert set(written["corrected_genre"]) == {""} and len(sheet) == 3
    assert written["sha256"].iloc[2] in {file_sha256(files["high1"]), file_sha256(files["high2"])}
    again = export_review(url, out=tmp_path / "again.csv", sample=1, seed=7)
    assert list(again["sha256"]) == list(sheet["sha256"])  # the seed fixes the sample
    with Catalog(url) as catalog:
        assert len(review_rows(catalog.read("catalog_tags"), sample=10, seed=0)) == 4  # the sample is capped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.csv", "catalog.db", "music", "review.csv"]  # no temp left


def test_review_import_rejects_bad_rows_one_line_each_and_is_idempotent(
    tagged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, files = tagged
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("genres: [blues, jazz, rock]\n")
    monkeypatch.setenv("GENRETAG_ROOT", str(root))
    monkeypatch.delenv("GENRETAG_PARAMS", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["review", "export", "--out", str(tmp_path / "review.csv"), "--sample", "2", "--database", url]).exit_code == 0
    sheet = read_table(tmp_path / "review.csv").set_index("path")
    sheet.loc[str(files["low1"]), "corrected_genre"] = "jazz"  # good
    sheet.loc[str(files["low2"]), "corrected_genre"] = "polka"  # unknown genre
    sheet.loc[str(files["high1"]), "corrected_genre"] = "rock"  # the file changed since it was tagged
    files["high1"].write_bytes(files["high1"].read_bytes() + b"\0\0")
    extra = sheet.iloc[[0]].assign(sha256="f" * 64, corrected_genre="blues")  # not in the catalog
    sheet = pd.concat([sheet.reset_index(), extra.reset_index()], ignore_index=True)  # high2: blank, no label
    sheet.to_csv(tmp_path / "review.csv", index=False)

    first = runner.invoke(app, ["review", "import", str(tmp_path / "review.csv"), "--reviewer", "ann", "--database", url])
    assert first.exit_code == 1, (first.output, first.exception)
    errors = [line for line in first.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, (first.output, repr(first.exception))
    assert "line 3: corrected_genre 'polka' is not one of params.genres" in errors[0]
    assert "line 4:" in errors[1] and "the file changed since it was tagged" in errors[1]
    assert "line 6: sha256 ffffffffffff is not in the catalog" in errors[2]
    assert "1 labels added, 0 relabelled, 0 already there; 1 rows without corrected_genre" in first.output
    feedback = root / "data" / "feedback" / "labels.csv"
    labels = read_table(feedback)
    assert list(labels.columns) == list(FEEDBACK_COLUMNS) and len(labels) == 1
    label = labels.iloc[0]
    assert (label["sha256"], label["genre"], label["reviewer"], label["model_version"]) == (file_sha256(files["low1"]), "jazz", "ann", "3")
    assert label["review_file"] == "review.csv" and label["review_sha256"] == file_sha256(tmp_path / "review.csv")

    before = feedback.read_bytes()
    second = import_review(tmp_path / "review.csv", database_url=url, genres=["blues", "jazz", "rock"], feedback=feedback)
    assert (second.added, second.unchanged, len(second.problems)) == (0, 1, 3)
    assert feedback.read_bytes() == before  # nothing duplicated, nothing rewritten

    (source,) = feedback_sources(feedback, genres=["blues", "jazz", "rock"])
    assert source.track_id == f"jazz.review-{label['sha256'][:12]}" and source.path == files["low1"]
    assert source.provenance.startswith(f"review:review.csv@{label['review_sha256'][:12]};reviewer=ann;model_version=3;")
    assert feedback_sources(feedback, genres=["blues", "rock"]) == []  # a genre no longer in params.genres


def test_ingest_refuses_a_reviewed_file_whose_bytes_changed(tagged, tmp_path: Path) -> None:
    url, files = tagged
    feedback = tmp_path / "labels.csv"
    pd.DataFrame([{"sha256": file_sha256(files["low1"]), "path": str(files["low1"]), "genre": "jazz", "review_file": "r.csv",
                   "review_sha256": "0" * 64, "reviewer": "", "model_version": "3", "imported_at": "2026-01-01T00:00:00+00:00"},
                  {"sha256": "e" * 64, "path": str(files["low2"]), "genre": "rock", "review_file": "r.csv",
                   "review_sha256": "0" * 64, "reviewer": "", "model_version": "3", "imported_at": "2026-01-01T00:00:00+00:00"}],
                 columns=list(FEEDBACK_COLUMNS)).to_csv(feedback, index=False)
    project = layout(tmp_path / "project")
    manifest = ingest(feedback_sources(feedback, genres=LABELS), layout=project, sample_rate=22050, workers=1).set_index("genre")
    assert manifest.at["jazz", "error"] == "" and manifest.at["jazz", "provenance"].startswith("review:r.csv@")
    assert manifest.at["rock", "error"].startswith("changed since it was reviewed") and manifest.at["rock", "path"] == ""


def test_a_file_whose_name_is_not_utf8_goes_through_review_export_and_import(tmp_path: Path) -> None:
    """The sheet holds the display name (\\xNN); import opens the catalog's exact bytes (genretag.paths.stored)."""
    folder = tmp_path / "music"
    odd = Path(os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9 song.wav"))  # Latin-1 bytes: not UTF-8
    os.rename(write_audio(folder / "plain.wav", tone(4.0, frequency=220.0, seed=9)), odd)  # libsndfile cannot open the odd name
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with Catalog(url) as catalog:
        catalog.write([_row(odd, [[0.3, 0.3, 0.4]], (0.0,))], [])
    export_review(url, out=tmp_path / "review.csv", sample=0, seed=0)
    sheet = read_table(tmp_path / "review.csv")
    assert sheet["path"].iloc[0].endswith("caf\\xe9 song.wav")  # valid UTF-8 text in the CSV
    sheet.loc[0, "corrected_genre"] = "blues"
    sheet.to_csv(tmp_path / "review.csv", index=False)
    outcome = import_review(tmp_path / "review.csv", database_url=url, genres=list(LABELS), feedback=tmp_path / "labels.csv")
    assert (outcome.added, outcome.problems) == (1, [])


def test_genres_match_without_case_and_a_sheet_that_labels_a_file_two_ways_imports_neither(tagged, tmp_path: Path) -> None:
    url, files = tagged
    low1, low2 = file_sha256(files["low1"]), file_sha256(files["low2"])
    pd.DataFrame([
        {"sha256": low1, "path": "", "corrected_genre": " Jazz "},   # case and spaces: jazz
        {"sha256": low2, "path": "", "corrected_genre": "Rock "},    # two ways for low2: neither row goes in,
        {"sha256": low2, "path": "", "corrected_genre": "blues"},    # valid or not
    ]).to_csv(tmp_path / "review.csv", index=False)
    outcome = import_review(tmp_path / "review.csv", database_url=url, genres=list(LABELS), feedback=tmp_path / "labels.csv")
    assert outcome.added == 1 and len(outcome.problems) == 2
    assert all(f"sha256 {low2[:12]} has conflicting labels in this sheet (blues, rock)" in line for line in outcome.problems)
    labels = read_table(tmp_path / "labels.csv")
    assert list(zip(labels["sha256"], labels["genre"])) == [(low1, "jazz")]
