"""Validation: GX suites over the manifest and the WAVs on disk, quarantine, reports, the Prefect flow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from genretag.audio import decoding as audio
from genretag.core.config import layout, load_params
from genretag.core.errors import ValidationFailed
from genretag.data.web_assets import external_resources
from genretag.data.validation import (
    AUDIO_SUITE,
    MANIFEST_COLUMNS,
    QUARANTINE_COLUMNS,
    check_bad_fraction,
    read_manifest,
    run_validation,
    validate_manifest,
    write_validation_outputs,
)
from tests.offline_browser import assert_loads_nothing_external, offline_dom
from tests.conftest import SAMPLE_RATE, tone, write_audio

GENRES = ["blues", "jazz", "rock"]
CLEAN = ["blues.00000", "blues.00001", "jazz.00000", "jazz.00001", "rock.00000", "rock.00001"]


def make_project(root: Path, **validate: float) -> Path:
    settings = {"min_duration_s": 3.0, "max_duration_s": 35.0, "silence_rms_dbfs": -60.0,
                "max_bad_fraction": 0.9, "max_class_imbalance": 3.0} | validate
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump({"genres": GENRES, "validate": settings}))
    return root


class Manifest:
    """Writes normalised WAVs under data/raw and the manifest rows ingest would have written."""

    def __init__(self, root: Path):
        self.root, self.rows, self._seed = root, [], 0

    def add(self, track_id: str, samples: np.ndarray | None = None, *, on_disk: np.ndarray | None = None,
            disk_rate: int = SAMPLE_RATE, **overrides: object) -> np.ndarray:
        genre = track_id.split(".")[0]
        if samples is None:
            self._seed += 1
            samples = tone(4.0, frequency=200.0 + 40 * self._seed, seed=self._seed)
        pcm = audio.to_pcm16(samples)
        wav = self.root / "data" / "raw" / genre / f"{track_id}.wav"
        write_audio(wav, audio.to_pcm16(on_disk) if on_disk is not None else pcm, sample_rate=disk_rate)
        measured = audio.stats(samples, sample_rate=SAMPLE_RATE)
        row = {
            "track_id": track_id, "genre": genre, "path": str(wav.relative_to(self.root)),
            "source_path": f"sources/{genre}/{track_id}.au", "sha256": f"sha-{track_id}",
            "content_sha256": audio.pcm_sha256(pcm), "original_sample_rate": SAMPLE_RATE, "channels": 1,
            "duration_s": round(measured.duration_s, 4), "rms_dbfs": round(measured.rms_dbfs, 3),
            "peak": round(measured.peak, 5), "nonfinite_samples": measured.nonfinite_samples, "error": "",
        }
        self.rows.append(row | overrides)
        return samples

    def add_undecodable(self, track_id: str, error: str) -> None:
        genre = track_id.split(".")[0]
        self.rows.append(dict.fromkeys(MANIFEST_COLUMNS, "") | {
            "track_id": track_id, "genre": genre, "source_path": f"sources/{genre}/{track_id}.au", "error": error})

    def write(self) -> pd.DataFrame:
        path = self.root / "data" / "raw" / "manifest.csv"
        # shuffled rows: validation must order by track_id itself
        pd.DataFrame(self.rows, columns=list(MANIFEST_COLUMNS)).iloc[::-1].to_csv(path, index=False)
        return read_manifest(path)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Six clean tracks and one of every kind of bad file, validated once for the module."""
    root = make_project(tmp_path_factory.mktemp("mixed"))
    m = Manifest(root)
    samples = {track_id: m.add(track_id) for track_id in CLEAN}
    m.add("polka.00000")                                             # label not in params.genres
    m.add("blues.00002", tone(1.0, seed=50))                         # too short
    m.add("blues.00003", np.zeros(4 * SAMPLE_RATE, np.float32))      # silent
    m.add("blues.00004", nonfinite_samples=4410)                     # NaNs in the source file
    m.add_undecodable("blues.00005", "empty file (0 bytes)")          # ingest could not decode it
    m.add("jazz.00002", samples["jazz.00000"])                       # same audio as jazz.00000
    m.add("rock.00002", on_disk=tone(4.0, sample_rate=44100, seed=60), disk_rate=44100)   # 44.1 kHz on disk
    stereo = tone(4.0, seed=61)
    m.add("rock.00003", stereo, on_disk=np.stack([stereo, stereo], axis=1))              # stereo on disk
    m.add("rock.00004", np.zeros(SAMPLE_RATE, np.float32))           # too short and silent
    m.add("rock.00005")
    (root / "data" / "raw" / "rock" / "rock.00005.wav").unlink()    # WAV gone from data/raw
    manifest = m.write()
    params = load_params(root / "params.yaml")
    outcome = validate_manifest(manifest, root=root, params=params)
    return root, params, manifest, outcome


def reasons_of(outcome) -> dict[str, str]:
    return dict(zip(outcome.quarantine["track_id"], outcome.quarantine["reason"]))


def test_clean_rows_pass_unchanged(mixed):
    _, _, manifest, outcome = mixed
    assert list(outcome.passed["track_id"]) == CLEAN
    assert list(outcome.passed.columns) == list(MANIFEST_COLUMNS)
    expected = manifest.set_index("track_id").loc[CLEAN].reset_index()[list(MANIFEST_COLUMNS)]
    pd.testing.assert_frame_equal(outcome.passed, expected)  # the very text of the manifest rows


def test_each_bad_file_is_quarantined_with_a_readable_reason(mixed):
    _, _, _, outcome = mixed
    reasons = reasons_of(outcome)
    assert set(reasons) == {"polka.00000", "blues.00002", "blues.00003", "blues.00004", "blues.00005",
                            "jazz.00002", "rock.00002", "rock.00003", "rock.00004", "rock.00005"}
    assert reasons["polka.00000"] == "genre label 'polka' is not one of params.genres"
    assert reasons["blues.00002"] == "duration 1.0 s below 3.0 s"
    assert reasons["blues.00003"] == "silent: RMS -200.0 dBFS below -60.0"
    assert reasons["blues.00004"] == "4410 non-finite samples"
    assert reasons["blues.00005"] == "cannot decode: empty file (0 bytes)"
    assert list(outcome.quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert outcome.quarantine.set_index("track_id").at["blues.00005", "source_path"] == "sources/blues/blues.00005.au"


def test_a_row_failing_several_expectations_gets_every_reason(mixed):
    _, _, _, outcome = mixed
    assert reasons_of(outcome)["rock.00004"] == "duration 1.0 s below 3.0 s; silent: RMS -200.0 dBFS below -60.0"


def test_duplicate_content_keeps_the_first_track(mixed):
    _, _, _, outcome = mixed
    assert reasons_of(outcome)["jazz.00002"] == "duplicate of jazz.00000 (same audio content)"
    assert "jazz.00000" in set(outcome.passed["track_id"])


def test_a_reviewed_label_wins_over_the_corpus_copy_of_the_same_audio(tmp_path):
    """A reviewer's correction of a corpus track's audio is kept even when its track_id sorts after the corpus one."""
    root = make_project(tmp_path)
    m = Manifest(root)
    review = "review:review.csv@0123456789ab;reviewer=ann;model_version=7;imported_at=2024-05-01T10:00:00+00:00"
    corpus = {track_id: m.add(track_id, provenance="corpus") for track_id in ["blues.00000", "jazz.00000", "rock.00000"]}
    m.add("rock.review-0123456789ab", corpus["blues.00000"], provenance=review)   # blues corrected to rock: sorts after
    m.add("blues.review-abcdef012345", corpus["rock.00000"], provenance=review)   # rock corrected to blues: sorts before
    m.add("jazz.00001", corpus["jazz.00000"], provenance="corpus")                # corpus against corpus: the first stays
    outcome = validate_manifest(m.write(), root=root, params=load_params(root / "params.yaml"))
    assert reasons_of(outcome) == {
        "blues.00000": "duplicate of rock.review-0123456789ab (same audio content)",
        "rock.00000": "duplicate of blues.review-abcdef012345 (same audio content)",
        "jazz.00001": "duplicate of jazz.00000 (same audio content)",
    }
    passed = outcome.passed.set_index("track_id")
    assert sorted(passed.index) == ["blues.review-abcdef012345", "jazz.00000", "rock.review-0123456789ab"]
    assert passed.at["rock.review-0123456789ab", "genre"] == "rock" and passed.at["rock.review-0123456789ab", "provenance"] == review


def test_audio_suite_catches_wavs_that_contradict_the_manifest(mixed):
    _, _, _, outcome = mixed
    reasons = reasons_of(outcome)
    assert reasons["rock.00002"] == ("WAV on disk is 44100 Hz, expected 22050 Hz; "
                                     "WAV on disk does not match the manifest's content_sha256")
    assert reasons["rock.00003"] == ("WAV on disk has 2 channels, expected mono; "
                                     "WAV on disk does not match the manifest's content_sha256")
    assert reasons["rock.00005"] == "cannot read data/raw/rock/rock.00005.wav: no such file"
    audio_result = outcome.results[AUDIO_SUITE]
    failed = {r.expectation_config.meta["check"]: r.result["unexpected_count"] for r in audio_result.results}
    assert failed["sample_rate"] == 1 and failed["mono"] == 1 and failed["readable"] == 1
    assert audio_result.results[0].result["element_count"] == 9  # the rows the manifest suite let through


def test_summary_is_flat_numbers(mixed):
    _, _, _, outcome = mixed
    s = outcome.summary
    assert (s["tracks_in"], s["tracks_passed"], s["tracks_quarantined"]) == (16, 6, 10)
    assert s["bad_fraction"] == pytest.approx(10 / 16)
    assert s["quarantined_duration"] == 2 and s["quarantined_not_silent"] == 2
    assert s["quarantined_unique_content"] == 1 and s["quarantined_sample_rate"] == 1
    assert s["class_balance_ok"] == 1 and s["class_imbalance"] == 1.0
    assert all(isinstance(v, (int, float)) for v in s.values())
    assert outcome.warnings == []


def test_outputs_are_written(mixed):
    root, _, _, outcome = mixed
    paths = layout(root)
    write_validation_outputs(outcome, layout=paths)
    tracks = pd.read_csv(paths.tracks, dtype=str, keep_default_na=False)
    assert list(tracks["track_id"]) == CLEAN and list(tracks.columns) == list(MANIFEST_COLUMNS)
    quarantine = pd.read_csv(paths.quarantine, dtype=str, keep_default_na=False)
    assert list(quarantine.columns) == list(QUARANTINE_COLUMNS) and len(quarantine) == 10
    metrics = json.loads((paths.metrics_dir / "validation.json").read_text())
    assert metrics["tracks_passed"] == 6 and metrics["bad_fraction"] == pytest.approx(0.625)
    report = paths.reports_dir / "validation"
    assert (report / "index.html").is_file()
    assert len(list((report / "validations").rglob("*.html"))) == 3  # one page per suite run
    result = json.loads((report / "validation_result.json").read_text())
    assert result["success"] is True and set(result["suites"]) == {"genretag.manifest", "genretag.audio", "genretag.balance"}
    write_validation_outputs(outcome, layout=paths)  # a rerun replaces the report folder whole
    assert len(list((report / "validations").rglob("*.html"))) == 3
    assert not [p for p in paths.reports_dir.iterdir() if p.name.startswith(".")]


def rendered_text(page: Path) -> str:
    """The text a headless Chromium shows for ``page`` with the network off."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", offline_dom(page)))


@pytest.mark.browser
def test_the_data_docs_list_every_validation_and_load_nothing_from_the_internet(mixed):
    root, _, _, outcome = mixed
    paths = layout(root)
    write_validation_outputs(outcome, layout=paths)
    report = paths.reports_dir / "validation"
    assert_loads_nothing_external(report)  # Bootstrap, jQuery, bootstrap-table, font-awesome: copied into static/vendor
    dom = offline_dom(report / "index.html")
    # bootstrap-table (a script) built the index table: one clickable row per suite run and per suite
    rows = re.findall(r'<tr class="clickable-row" data-href="([^"]+)"', dom)
    assert sorted(r for r in rows if r.startswith("validations/")) == sorted(
        p.relative_to(report).as_posix() for p in (report / "validations").rglob("*.html"))
    assert len([r for r in rows if r.startswith("expectations/")]) == 3
    assert 'class="bootstrap-table bootstrap4"' in dom
    assert '<a href="summary.html">' in dom  # the offline summary, linked at the top of the index
    suite_page = next((report / "validations").rglob("*manifest.html"))
    text = rendered_text(suite_page)
    assert "genretag.manifest" in text and "values must belong to this set" in text
    vendored = re.findall(r'(?:src|href)="((?:\.\./)*static/vendor/[^"]+)"', suite_page.read_text(encoding="utf-8"))
    assert len(vendored) >= 10 and all((suite_page.parent / v).is_file() for v in vendored)  # styled: the styles are there


@pytest.mark.browser
def test_the_summary_page_reads_offline_in_a_real_browser(mixed):
    root, _, _, outcome = mixed
    paths = layout(root)
    write_validation_outputs(outcome, layout=paths)
    page = paths.reports_dir / "validation" / "summary.html"
    assert "<script" not in page.read_text(encoding="utf-8")
    assert external_resources(page.read_text(encoding="utf-8")) == []
    text = rendered_text(page)
    assert "Quarantined files (10)" in text
    assert "blues.00002" in text and "duration 1.0 s below 3.0 s" in text
    assert "Suite genretag.audio: " in text and "tracks_quarantined 10" in text
    assert "min_value=3.0, max_value=35.0" in text  # the run's parameters, not placeholders
    assert "$PARAMETER" not in text


def test_class_imbalance_is_a_warning_not_a_quarantine(tmp_path):
    root = make_project(tmp_path)
    m = Manifest(root)
    for track_id in ["blues.00000", "blues.00001", "blues.00002", "blues.00003", "jazz.00000", "rock.00000", "rock.00001"]:
        m.add(track_id)
    outcome = validate_manifest(m.write(), root=root, params=load_params(root / "params.yaml"))
    assert outcome.quarantine.empty and len(outcome.passed) == 7
    assert outcome.summary["class_balance_ok"] == 0 and outcome.summary["class_imbalance"] == 4.0
    assert outcome.warnings == ["class imbalance: genre jazz has 1 passing tracks, the largest genre 4 (ratio 4.0 > 3.0)"]
    check_bad_fraction(outcome, max_bad_fraction=0.2)  # a warning does not stop the pipeline


def test_too_many_bad_files_raise_after_writing_quarantine_and_report(tmp_path):
    root = make_project(tmp_path, max_bad_fraction=0.2)
    m = Manifest(root)
    for track_id in ["blues.00000", "jazz.00000", "rock.00000"]:
        m.add(track_id)
    m.add("jazz.00001", np.zeros(4 * SAMPLE_RATE, np.float32))
    m.add_undecodable("rock.00001", "cannot decode audio (Format not recognised)")
    m.write()
    paths = layout(root)
    with pytest.raises(ValidationFailed) as failure:
        run_validation(params=load_params(root / "params.yaml"), layout=paths)
    message = str(failure.value)
    assert "2 of 5 tracks quarantined" in message and "0.400 > validate.max_bad_fraction 0.2" in message
    assert "not_silent x1" in message and "decoded x1" in message
    quarantine = pd.read_csv(paths.quarantine, dtype=str, keep_default_na=False)
    assert dict(zip(quarantine["track_id"], quarantine["reason"])) == {
        "jazz.00001": "silent: RMS -200.0 dBFS below -60.0",
        "rock.00001": "cannot decode audio (Format not recognised)",
    }
    assert (paths.reports_dir / "validation" / "index.html").is_file()
    assert json.loads((paths.reports_dir / "validation" / "validation_result.json").read_text())["success"] is False


def test_an_empty_manifest_fails(tmp_path):
    root = make_project(tmp_path)
    (root / "data" / "raw").mkdir(parents=True)
    outcome = validate_manifest(Manifest(root).write(), root=root, params=load_params(root / "params.yaml"))
    assert outcome.summary["tracks_in"] == 0
    with pytest.raises(ValidationFailed, match="lists no tracks"):
        check_bad_fraction(outcome, max_bad_fraction=1.0)


def test_the_prefect_flow_validates_a_project(tmp_path, monkeypatch, prefect_api):
    root = make_project(tmp_path, max_bad_fraction=0.5)
    m = Manifest(root)
    for track_id in CLEAN:
        m.add(track_id)
    m.add("blues.00002", tone(1.0, seed=70))
    m.write()
    monkeypatch.setenv("GENRETAG_ROOT", str(root))
    monkeypatch.setenv("GENRETAG_FAULTS", "validate.read=1")  # the read task's retry clears it
    from flows.validate import validate_flow

    summary = validate_flow()
    assert (summary["tracks_passed"], summary["tracks_quarantined"]) == (6, 1)
    paths = layout(root)
    quarantine = pd.read_csv(paths.quarantine, dtype=str, keep_default_na=False)
    assert quarantine.to_dict("records") == [{"source_path": "sources/blues/blues.00002.au", "track_id": "blues.00002",
                                              "genre": "blues", "reason": "duration 1.0 s below 3.0 s"}]
    assert len(pd.read_csv(paths.tracks)) == 6
    assert json.loads((paths.metrics_dir / "validation.json").read_text())["tracks_quarantined"] == 1
    assert (paths.reports_dir / "validation" / "index.html").is_file()


def test_the_cli_stops_with_the_reason_when_too_much_is_bad(tmp_path, monkeypatch, prefect_api):
    from typer.testing import CliRunner

    from genretag.cli.app import app

    root = make_project(tmp_path, max_bad_fraction=0.2)
    m = Manifest(root)
    m.add("blues.00000")
    m.add("jazz.00000", tone(1.0, seed=80))
    m.write()
    monkeypatch.setenv("GENRETAG_ROOT", str(root))
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1
    assert "1 of 2 tracks quarantined, bad fraction 0.500 > validate.max_bad_fraction 0.2" in result.output
    assert (root / "data" / "quarantine.csv").is_file() and (root / "reports" / "validation" / "index.html").is_file()
