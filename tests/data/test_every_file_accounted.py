"""Every file under a source is tagged, an error row, or a counted skip; odd names are stored faithfully;
one refused row never costs the others; moved files are re-pointed.

Tagging end to end needs a contract-v2 model, which main is migrating to (issue 10): these tests drive the
tagger's own steps (scan_source, hash_tracks, plan_tagging, audio.decode, Catalog writes) with the real
decoders and a real SQLite catalog, and record each decoded track as a tag row."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genretag.audio import decoding as audio
from genretag.tagging.rows import error_row
from genretag.tagging.fingerprints import hash_tracks
from genretag.tagging.planning import plan_tagging
from genretag.tagging.sources import HashedTrack, scan_source
from genretag.tagging.store import Catalog
from genretag.data.ingest import discover, ingest
from genretag.core.config import layout
from genretag.core.errors import AudioError
from tests.audio_files import PYAV_FORMATS, encode_with_pyav, float_wav_with_short_peak_chunk, wav_with_zero_sizes
from tests.conftest import REPO_ROOT, tone, write_audio

VERSION = "1"


def _mixed_folder(folder: Path) -> dict[str, int]:
    """One file of every case of issue 12; returns the expected counts."""
    write_audio(folder / "plain.wav", tone(4))
    write_audio(folder / "UPPER.WAV", tone(4, seed=2))
    for suffix in PYAV_FORMATS:
        encode_with_pyav(folder / "formats" / f"track{suffix}")
    float_wav_with_short_peak_chunk(folder / "peak.wav")
    wav_with_zero_sizes(folder / "crashed.wav")
    name = write_audio(folder / "tmp.wav", tone(4, seed=3))
    os.rename(os.fsencode(name), os.fsencode(folder) + b"/x\xff.wav")  # not UTF-8
    (folder / "noise.mp3").write_bytes(np.random.default_rng(1).bytes(20_000))
    (folder / "empty.wav").write_bytes(b"")
    import soundfile as sf

    sf.write(folder / "onehz.wav", np.full(10_000, 0.1, dtype=np.float32), 1)
    (folder / "._plain.wav").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._UPPER.WAV").write_bytes(b"\x00\x05\x16\x07")
    (folder / "notes.txt").write_text("liner notes")
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    os.mkfifo(folder / "pipe.wav")
    return {"files": 18, "audio": 14, "not_audio": 2, "apple_metadata": 2, "tagged": 10, "errors": 4}


def _run(folder: Path, url: str) -> dict[str, int]:
    """The tagger's steps, with a decode in place of the model; returns the run's counts."""
    scan = scan_source(folder)
    outcome = hash_tracks(scan.tracks, strict=False)
    hashed, unreadable = [track for track, _ in outcome.hashed], outcome.failed
    with Catalog(url, check_writable=True) as catalog:
        plan = plan_tagging(hashed, catalog.tagged_shas((t.sha256 for t in hashed), model_version=VERSION))
        moved = catalog.refresh_paths(plan.already_tagged, model_version=VERSION)
        tags, errors = [], [error_row(f.track_id, f.path, f.sha256, f.reason, model_version=VERSION) for f in unreadable]
        for track in plan.todo:
            try:
                decoded = audio.decode(track.path, sample_rate=22050)
            except AudioError as exc:
                errors.append(error_row(track.track_id, track.path, track.sha256, exc.reason, model_version=VERSION))
                continue
            tags.append(_tag(track, decoded.duration_s))
        counts = catalog.write(tags, errors)
    return {"files": scan.files, "audio": len(scan.tracks), "not_audio": len(scan.not_audio),
            "apple_metadata": len(scan.apple_metadata), "tagged": counts.tagged, "errors": counts.errors,
            "already": len(plan.already_tagged), "duplicates": len(plan.duplicates), "moved": moved}


def _tag(track: HashedTrack, seconds: float) -> dict:
    from genretag.tagging.rows import tag_row
    from genretag.tagging.scoring import TrackScore

    score = TrackScore("blues", 1.0, (("blues", 1.0),), {"blues": 1.0}, max(1, int(seconds // 3)))
    return tag_row(track, score, model_name="decode-only", model_version=VERSION, provider="none", contract_version=2, review_below=0.5)


def test_every_file_is_accounted_for_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    expected = _mixed_folder(folder)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"

    first = _run(folder, url)
    assert {k: first[k] for k in expected} == expected
    assert first["tagged"] + first["errors"] + first["not_audio"] + first["apple_metadata"] == first["files"]

    with Catalog(url) as catalog:
        tags, errors = catalog.read("catalog_tags"), catalog.read("catalog_errors")
    reasons = dict(zip(errors["path"].map(lambda p: Path(p).name), errors["reason"], strict=True))
    assert reasons["noise.mp3"].startswith("not a decodable audio file (soundfile: ")
    assert "implausible sample rate 1 Hz" in reasons["onehz.wav"]
    assert reasons["empty.wav"] == "empty file (0 bytes)" and "not a regular file" in reasons["pipe.wav"]
    odd = tags[tags["path"].str.endswith("x\\xff.wav")]
    assert len(odd) == 1 and odd.iloc[0]["path_bytes"] == os.fsencode(folder) + b"/x\xff.wav"
    assert tags["path"].map(os.path.isabs).all() and tags["path_bytes"].isna().sum() == len(tags) - 1

    again = _run(folder, url)
    assert (again["tagged"], again["already"], again["moved"]) == (0, 10, 0)
    with Catalog(url) as catalog:
        assert len(catalog.read("catalog_tags")) == 10 and len(catalog.read("catalog_errors")) == 4


def test_relative_sources_are_stored_absolute_and_a_moved_file_is_repointed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "bad"
    write_audio(folder / "x.wav", tone(4))
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    monkeypatch.chdir(tmp_path / "bad")
    _run(Path("../bad"), url)  # typed as a relative path with ..
    with Catalog(url) as catalog:
        assert list(catalog.read("catalog_tags")["path"]) == [str(folder / "x.wav")]
    (tmp_path / "moved").mkdir()
    shutil.move(folder / "x.wav", tmp_path / "moved" / "y.wav")
    assert _run(tmp_path / "moved", url)["moved"] == 1
    with Catalog(url) as catalog:
        tags = catalog.read("catalog_tags")
    assert list(tags["path"]) == [str(tmp_path / "moved" / "y.wav")] and list(tags["track_id"]) == ["y"]


def test_a_row_the_database_refuses_costs_no_other_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    good = [error_row(f"t{i}", tmp_path / f"t{i}.wav", f"sha{i}", "silent", model_version=VERSION) for i in range(5)]
    bad = dict(good[0], sha256="sha-bad", track_id="x\udcff")  # a lone surrogate: no UTF-8 database takes it
    with Catalog(url) as catalog:
        counts = catalog.write([], [*good[:2], bad, *good[2:]])
        errors = catalog.read("catalog_errors")
    assert counts.errors == 6 and not counts.unstored
    assert set(errors["sha256"]) == {f"sha{i}" for i in range(5)} | {"sha-bad"}
    refused = errors.set_index("sha256").loc["sha-bad"]
    assert refused["reason"].startswith("cannot store this row: ") and refused["track_id"] == "x\\xff"


def test_ingest_skips_macos_metadata_and_reports_unknown_genre_folders(tmp_path: Path) -> None:
    source = tmp_path / "incoming"
    write_audio(source / "blues" / "blues.00000.wav", tone(5))
    write_audio(source / "blues" / "._blues.00000.wav", tone(1))
    write_audio(source / "__MACOSX" / "blues" / "blues.00001.wav", tone(5, seed=1))
    encode_with_pyav(source / "polka" / "polka.00000.opus").rename(source / "polka" / "polka.00000.OPUS")  # no such genre
    name = write_audio(source / "rock" / "tmp.wav", tone(5, seed=3))
    os.rename(os.fsencode(name), os.fsencode(source) + b"/rock/r\xe9ck.wav")  # Latin-1 name
    (source / "rock" / "readme.txt").write_text("hi")
    found = discover(source, genres=("blues", "rock"))
    assert [s.track_id for s in found.sources] == ["blues.00000", "rock.r_ck"]
    assert (len(found.apple_metadata), len(found.not_audio), found.unknown_folders()) == (2, 1, ["polka"])

    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    manifest = ingest(found.sources, layout=layout(root), sample_rate=22050, workers=1)
    row = manifest.set_index("track_id").loc["rock.r_ck"]
    assert row["error"] == "" and row["source_path"].endswith("r\\xe9ck.wav")
    assert bytes.fromhex(row["source_path_bytes"]).endswith(b"/r\xe9ck.wav")
    on_disk = pd.read_csv(layout(root).manifest, dtype=str, keep_default_na=False)  # valid UTF-8
    assert len(on_disk) == 2 and on_disk["source_path"].str.endswith("r\\xe9ck.wav").sum() == 1
