"""Catalog tagging end to end: real onnxruntime, real SQLite, the real Prefect flow, a killed run resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import flows.common
from flows.tag_catalog import tag_catalog_flow
from genretag.audio.decoding import file_sha256
from genretag.tagging.export import export_tags
from genretag.tagging.run import tag_catalog
from genretag.tagging.sources import list_tracks
from genretag.tagging.store import Catalog
from genretag.core.errors import ScoringError
from genretag.onnx.session import CPU, CUDA, open_model
from tests.conftest import tone, write_audio
from tests.tagging_support import make_bad_files, make_good_files, make_onnx_model, make_root, sessions_here

GOOD = {"a/sine220", "a/sine880", "b/flac44k", "b/ogg44k", "long70"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {version: make_onnx_model(folder / f"v{version}.onnx", version=version, seed=int(version)) for version in ("1", "2")}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = make_root(tmp_path / "root", workers=2, batch_size=8, commit_every=2, max_windows=4)
    monkeypatch.setenv("GENRETAG_ROOT", str(project))
    monkeypatch.delenv("GENRETAG_CATALOG_URL", raising=False)
    monkeypatch.delenv(flows.common.FAULTS_ENV, raising=False)
    return project


def _count(url: str, table: str = "catalog_tags") -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    except sa.exc.OperationalError:  # not created yet
        return 0
    finally:
        engine.dispose()


def test_flow_tags_a_folder_once_and_records_every_failure(
    prefect_api: None, root: Path, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "catalog"
    make_good_files(folder)
    reasons = make_bad_files(folder / "bad")
    shutil.copy(folder / "a" / "sine220.wav", folder / "a" / "zz_copy.wav")  # same bytes: tagged once
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    flows.common._fault_counts.clear()
    monkeypatch.setenv(flows.common.FAULTS_ENV, "tag.read=2")  # two transient read failures: retried

    first = tag_catalog_flow(str(folder), model=str(models["1"]), database_url=url)

    assert flows.common._fault_counts["tag.read"] > 2  # the faults fired and the reads went on
    assert (first["listed"], first["tagged"], first["skipped"], first["duplicates"], first["failed"]) == (12, 5, 0, 1, 6)
    assert first["provider"] == CPU and first["model_version"] == "1"
    assert sum(first["genre_counts"].values()) == 5 and first["tracks_per_second"] > 0
    with Catalog(url) as catalog:
        tags = catalog.read("catalog_tags")
        errors = catalog.read("catalog_errors")
    assert set(tags["track_id"]) == GOOD  # the copy is not tagged again
    assert len(tags) == 5 and tags["sha256"].is_unique
    assert set(tags["provider"]) == {CPU} and set(tags["model_version"]) == {"1"} and set(tags["model_name"]) == {"genretag-cnn"}
    assert set(tags["contract_version"]) == {2} and set(tags["windows_silent"]) == {0}
    by_id = tags.set_index("track_id")
    assert by_id.loc["long70", "windows_scored"] == 4  # params score.max_windows
    assert by_id.loc["b/flac44k", "windows_scored"] == 2
    # input statistics per track, and the run's drift (this test model carries no training reference)
    assert by_id.loc["b/flac44k", "source_sample_rate"] == 44100 and by_id.loc["long70", "duration_s"] == 70.0
    assert by_id.loc["a/sine220", "source_sample_rate"] == 22050 and by_id["loudness_dbfs"].between(-40, 0).all()
    assert first["drift"]["reference"].startswith("n/a") and first["drift"]["embedding_shift"] is None
    assert first["drift"]["loudness_dbfs"] == pytest.approx(by_id["loudness_dbfs"].mean(), abs=1e-3)
    row = by_id.loc["a/sine880"]
    assert row["sha256"] == file_sha256(folder / "a" / "sine880.wav")
    top3 = json.loads(row["top3"])
    probabilities = json.loads(row["probabilities"])
    assert [t["genre"] for t in top3][0] == row["genre"] and len(top3) == 3
    assert row["confidence"] == pytest.approx(top3[0]["probability"]) == pytest.approx(max(probabilities.values()))
    assert list(probabilities) == list(open_model(models["1"], prefer_gpu=False).labels)
    assert str(row["scored_at"].tz) == "UTC"
    failed = {Path(p).name: r for p, r in zip(errors["path"], errors["reason"], strict=True)}
    assert set(failed) == set(reasons)
    for name, fragment in reasons.items():
        assert fragment in failed[name], (name, failed[name])

    second = tag_catalog_flow(str(folder), model=str(models["1"]), database_url=url)
    # the copy counts as skipped now: its content is tagged by this model version; the failures are known, not decoded again
    assert (second["tagged"], second["skipped"], second["windows_scored"], second["failed"], second["known_failures"]) == (0, 6, 0, 0, 6)
    assert _count(url, "catalog_tags") == 5 and _count(url, "catalog_errors") == 6


def test_a_new_model_version_tags_again_and_nothing_is_duplicated(
    root: Path, models: dict[str, Path], tmp_path: Path, catalog_url: str
) -> None:
    """On SQLite and on a real PostgreSQL server: each dialect's ON CONFLICT path."""
    folder = tmp_path / "catalog"
    make_good_files(folder)
    bad = make_bad_files(folder / "bad")
    runs = []
    for version in ("1", "2", "1", "2"):
        model = open_model(models[version], prefer_gpu=False)
        runs.append(tag_catalog(folder, model=model, database_url=catalog_url, max_windows=2, batch_size=4, commit_every=3, workers=1))
    assert [(r.model_version, r.tagged, r.skipped) for r in runs] == [("1", 5, 0), ("2", 5, 0), ("1", 0, 5), ("2", 0, 5)]
    assert [r.failed for r in runs] == [len(bad), len(bad), 0, 0]  # recorded once per model version
    assert [r.known_failures for r in runs] == [0, 0, len(bad), len(bad)]  # then not decoded again (issue 20)
    with Catalog(catalog_url) as catalog:
        tags = catalog.read()
        errors = catalog.read("catalog_errors")
    assert catalog.engine.dialect.name == catalog_url.split(":")[0].split("+")[0]
    assert tags.groupby("model_version").size().to_dict() == {"1": 5, "2": 5}
    assert not tags.duplicated(["sha256", "model_version"]).any()
    assert errors.groupby("model_version").size().to_dict() == {"1": len(bad), "2": len(bad)}
    assert str(tags["scored_at"].dt.tz) == "UTC"


def test_csv_source_and_export(root: Path, models: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "music"
    write_audio(folder / "x.wav", tone(4.0, frequency=300.0, seed=11))
    write_audio(folder / "y.wav", tone(4.0, frequency=600.0, seed=12))
    listing = tmp_path / "tracks.csv"
    pd.DataFrame({"track_id": ["T1", "T2", "T3"], "path": ["music/x.wav", str(folder / "y.wav"), "music/gone.wav"]}).to_csv(listing, index=False)
    assert [t.track_id for t in list_tracks(listing)] == ["T1", "T2", "T3"]
    url = f"sqlite:///{tmp_path / 'catalog.db'}"

    summary = tag_catalog(listing, model=open_model(models["1"], prefer_gpu=False), database_url=url, max_windows=1, workers=1)
    assert (summary.tagged, summary.failed) == (2, 1)
    assert "No such file" in summary.failures[0]["reason"]

    (tmp_path / "out").mkdir()  # an export makes no folder (tests/data/test_exports.py: a missing one is refused)
    assert export_tags(url, out=tmp_path / "out" / "tags.csv", fmt="csv") == 2
    exported = pd.read_csv(tmp_path / "out" / "tags.csv")
    assert list(exported["track_id"]) == ["T1", "T2"]
    assert {"sha256", "genre", "confidence", "top3", "probabilities", "windows_scored", "model_version", "provider", "scored_at"} <= set(exported.columns)

    from genretag.cli.app import app

    result = CliRunner().invoke(app, ["export-tags", "--format", "parquet", "--out", str(tmp_path / "tags.parquet"), "--database", url])
    assert result.exit_code == 0, result.output
    parquet = pd.read_parquet(tmp_path / "tags.parquet")
    assert list(parquet["track_id"]) == ["T1", "T2"] and str(parquet["scored_at"].dt.tz) == "UTC"
    assert list(tmp_path.glob("*.tmp")) == [] and list((tmp_path / "out").glob(".*")) == []


def test_tagging_on_a_contract_v2_model_records_the_contract_and_silent_windows(models: dict[str, Path], tmp_path: Path) -> None:
    """A track with a silent 3-s intro scores its music windows only; a silent track is an error; a rerun adds none."""
    folder = tmp_path / "music"
    write_audio(folder / "intro.wav", np.concatenate([np.zeros(66150, dtype=np.float32), tone(9.0, frequency=300.0, seed=21)]))
    write_audio(folder / "plain.wav", tone(6.0, frequency=600.0, seed=22))
    write_audio(folder / "silent.wav", np.zeros(4 * 22050, dtype=np.float32))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    model = open_model(models["2"], prefer_gpu=False)

    first = tag_catalog(folder, model=model, database_url=url, max_windows=10, workers=1)
    assert (first.tagged, first.failed, first.windows_scored, first.windows_silent) == (2, 1, 5, 1)
    assert first.failures[0]["reason"].startswith("silent: all 1 windows")
    assert "| 5 | 1 |" in first.to_markdown()
    with Catalog(url) as catalog:
        tags = catalog.read().set_index("track_id")
    assert set(tags["contract_version"]) == {2}
    assert (tags.loc["intro", "windows_scored"], tags.loc["intro", "windows_silent"]) == (3, 1)
    assert (tags.loc["plain", "windows_scored"], tags.loc["plain", "windows_silent"]) == (2, 0)

    again = tag_catalog(folder, model=model, database_url=url, max_windows=10, workers=1)
    assert (again.tagged, again.skipped, again.failed, again.known_failures) == (0, 2, 0, 1)  # the silent track is not decoded again
    assert _count(url) == 2 and _count(url, "catalog_errors") == 1


def test_a_catalog_from_before_contract_v2_gets_the_new_columns(models: dict[str, Path], tmp_path: Path) -> None:
    """Old rows (written by v1 models) read contract_version 1 and no silent windows; new rows go in beside them."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "CREATE TABLE catalog_tags (id INTEGER PRIMARY KEY AUTOINCREMENT, track_id VARCHAR(512) NOT NULL, path TEXT NOT NULL, "
            "sha256 VARCHAR(80) NOT NULL, genre VARCHAR(128) NOT NULL, confidence FLOAT NOT NULL, top3 TEXT NOT NULL, "
            "probabilities TEXT NOT NULL, windows_scored INTEGER NOT NULL, model_name VARCHAR(256) NOT NULL, "
            "model_version VARCHAR(64) NOT NULL, provider VARCHAR(64) NOT NULL, scored_at DATETIME NOT NULL, "
            "CONSTRAINT uq_catalog_tags_sha256_model_version UNIQUE (sha256, model_version))"
        ))
        connection.execute(sa.text(
            "INSERT INTO catalog_tags (track_id, path, sha256, genre, confidence, top3, probabilities, windows_scored, "
            "model_name, model_version, provider, scored_at) VALUES ('old', '/x/old.wav', 'abc', 'rock', 0.5, '[]', '{}', 10, "
            "'genretag-cnn', '0', 'CPUExecutionProvider', '2026-01-01 00:00:00.000000')"
        ))
    engine.dispose()
    write_audio(tmp_path / "music" / "new.wav", tone(4.0, seed=23))

    summary = tag_catalog(tmp_path / "music", model=open_model(models["2"], prefer_gpu=False), database_url=url, workers=1)
    assert summary.tagged == 1
    with Catalog(url) as catalog:
        tags = catalog.read().set_index("track_id")
    assert tags.loc["old", "contract_version"] == 1 and tags.loc["old", "windows_silent"] == 0
    assert tags.loc["new", "contract_version"] == 2
    assert pd.isna(tags.loc["old", "loudness_dbfs"]) and tags.loc["new", "source_sample_rate"] == 22050


def test_a_v1_model_is_refused_with_one_line(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`genretag predict` and `tag-catalog` with an image-contract model: one error line, nothing scored or written."""
    from genretag.cli.app import app

    monkeypatch.setenv("GENRETAG_ROOT", str(make_root(tmp_path / "root", workers=1)))
    old = make_onnx_model(tmp_path / "v1.onnx", version="0", contract_version=1)
    song = write_audio(tmp_path / "music" / "song.wav", tone(4.0))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    for args, code in ((["predict", str(song)], 2), (["tag-catalog", str(song.parent), "--database", url], 1)):
        result = CliRunner().invoke(app, [*args, "--model", str(old)])
        assert result.exit_code == code, result.output
        [line] = result.stderr.strip().splitlines()[-1:]
        assert line.startswith(f"error: {old}: model genretag-cnn 0 uses the v1 image contract")
        assert "re-export it with contract v2" in line and result.stdout == ""
    assert _count(url) == 0


def test_require_gpu_fails_cleanly_without_a_gpu(prefect_api: None, root: Path, models: dict[str, Path], tmp_path: Path) -> None:
    if open_model(models["1"]).provider == CUDA:
        pytest.skip("CUDA is active on this machine")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    folder = tmp_path / "music"
    write_audio(folder / "x.wav", tone(4.0))
    with pytest.raises(ScoringError, match="GPU required but CUDA is not active"):
        tag_catalog_flow(str(folder), model=str(models["1"]), database_url=url, require_gpu=True)
    assert not (tmp_path / "catalog.db").exists()  # failed before touching anything

    from genretag.cli.app import app

    result = CliRunner().invoke(app, ["tag-catalog", str(folder), "--model", str(models["1"]), "--database", url, "--require-gpu"])
    assert result.exit_code == 1
    assert "error: " in result.stderr and "GPU required but CUDA is not active" in result.stderr


def test_a_killed_run_resumes_and_tags_every_track_exactly_once(
    prefect_api: None, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    n_tracks = 120
    project = make_root(tmp_path / "root", workers=1, batch_size=2, commit_every=1, max_windows=1)
    folder = tmp_path / "many"
    for index in range(n_tracks):
        write_audio(folder / f"t{index:03d}.wav", tone(3.5, frequency=200.0 + 7 * index, seed=index))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    env = {**os.environ, "GENRETAG_ROOT": str(project), "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    env.pop(flows.common.FAULTS_ENV, None)
    command = [sys.executable, "-m", "genretag.cli", "tag-catalog", str(folder), "--model", str(models["1"]), "--database", url]
    with open(tmp_path / "killed.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while _count(url) < 3:
                assert process.poll() is None, (tmp_path / "killed.log").read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "no rows appeared"
                time.sleep(0.02)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the CLI, its decoding workers and their forkserver
            process.wait()
    after_kill = _count(url)
    assert 3 <= after_kill < n_tracks, "the run was not stopped midway"

    monkeypatch.setenv("GENRETAG_ROOT", str(project))
    summary = tag_catalog_flow(str(folder), model=str(models["1"]), database_url=url)
    assert (summary["tagged"], summary["skipped"], summary["failed"]) == (n_tracks - after_kill, after_kill, 0)
    with Catalog(url) as catalog:
        tags = catalog.read()
    assert len(tags) == n_tracks and tags["track_id"].is_unique and tags["sha256"].is_unique


def test_a_file_that_stays_unreadable_after_the_retries_is_recorded_and_the_rest_tagged(
    prefect_api: None, root: Path, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "music"
    write_audio(folder / "a.wav", tone(4.0, frequency=300.0, seed=21))
    write_audio(folder / "b.wav", tone(4.0, frequency=900.0, seed=22))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    flows.common._fault_counts.clear()
    monkeypatch.setenv(flows.common.FAULTS_ENV, "tag.read=5")  # the first try and 3 retries fail on a.wav, then once more

    summary = tag_catalog_flow(str(folder), model=str(models["1"]), database_url=url)

    assert (summary["tagged"], summary["failed"]) == (1, 1)
    assert summary["failures"][0]["path"].endswith("a.wav")
    assert "injected transient fault 5 of 5" in summary["failures"][0]["reason"]
    with Catalog(url) as catalog:
        errors = catalog.read("catalog_errors")
        assert list(catalog.read()["track_id"]) == ["b"]
    assert errors["sha256"].str.startswith("unreadable:").all()


def test_scoring_on_a_dask_cluster_through_the_flow_gives_the_same_tags(
    prefect_api: None, root: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    from distributed import LocalCluster

    folder = tmp_path / "catalog"
    make_good_files(folder)
    make_bad_files(folder)
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    dask_url = f"sqlite:///{tmp_path / 'dask.db'}"
    local = tag_catalog_flow(str(folder), model=str(models["1"]), database_url=local_url)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        make_root(root, workers=2, batch_size=8, commit_every=2, max_windows=4, dask_address=cluster.scheduler_address, dask_chunk=3)
        distributed = tag_catalog_flow(str(folder), model=str(models["1"]), database_url=dask_url)
        sessions = cluster.get_client().run(sessions_here)

    assert local["tagged"] == len(GOOD) and local["failed"] > 0
    assert (distributed["tagged"], distributed["failed"]) == (local["tagged"], local["failed"])
    assert len(sessions) == 2 and all(len(keys) == 1 for keys in sessions.values())  # one session per worker, opened there
    columns = ["track_id", "genre", "confidence", "windows_scored", "probabilities"]
    with Catalog(local_url) as one, Catalog(dask_url) as other:
        expected = one.read().sort_values("track_id")[columns].reset_index(drop=True)
        got = other.read().sort_values("track_id")[columns].reset_index(drop=True)
        assert sorted(one.read("catalog_errors")["reason"]) == sorted(other.read("catalog_errors")["reason"])
    pd.testing.assert_frame_equal(got, expected)