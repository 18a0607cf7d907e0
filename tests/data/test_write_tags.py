"""`genretag write-tags`: the catalog's genres in the files' own tags, atomically, the audio untouched,
the track still known to the catalog afterwards."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import av
import mutagen
import mutagen.mp4
import numpy as np
import pytest
from typer.testing import CliRunner

from genretag.audio.decoding import file_sha256
from genretag.cli.app import app
from genretag.tagging import tag_writer
from genretag.tagging.store import Catalog
from genretag.tagging.tag_writer import TagWriteOptions, load_genre_map, write_tags
from tests.audio_files import encode_with_pyav, sine
from tests.conftest import tone, write_audio


def _mp3(path: Path) -> Path:
    samples = sine(3.0, 44100)
    with av.open(str(path), mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=44100, layout="stereo")
        for start in range(0, len(samples), 1152):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[start : start + 1152].T), format="fltp", layout="stereo")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


MAKERS = {
    "song.mp3": _mp3,
    "song.wav": lambda p: write_audio(p, tone(3.0, seed=1)),
    "song.aiff": lambda p: write_audio(p, tone(3.0, seed=2)),
    "song.flac": lambda p: write_audio(p, tone(3.0, seed=3)),
    "song.ogg": lambda p: write_audio(p, tone(3.0, seed=4)),
    "song.opus": lambda p: encode_with_pyav(p, seconds=3.0),
    "song.m4a": lambda p: encode_with_pyav(p, seconds=3.0),
}


def decoded(path: Path) -> np.ndarray:
    """Every decoded sample of the file's first audio stream (PyAV), frames concatenated."""
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


def file_genres(path: Path) -> list[str]:
    tags = mutagen.File(path).tags
    if tags is None:
        return []
    if hasattr(tags, "getall"):
        return [g for frame in tags.getall("TCON") for g in frame.genres]
    if isinstance(tags, mutagen.mp4.MP4Tags):
        return list(tags.get("\xa9gen", []))
    return list(tags.get("GENRE", []))


def tag_in_catalog(catalog: Catalog, path: Path, probabilities: dict[str, float], *, needs_review: bool = False,
                   version: str = "3") -> dict:
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    row = {"track_id": path.stem, "path": str(path), "sha256": file_sha256(path), "genre": ranked[0][0],
           "confidence": ranked[0][1], "top3": json.dumps([{"genre": g, "probability": p} for g, p in ranked[:3]]),
           "probabilities": json.dumps(probabilities), "windows_scored": 1, "model_name": "genretag-cnn",
           "model_version": version, "provider": "CPUExecutionProvider", "scored_at": datetime.now(UTC),
           "needs_review": needs_review}
    catalog.write([row], [])
    return row


PROBS = {"rock": 0.7, "jazz": 0.2, "blues": 0.1}


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "library"
    folder.mkdir()
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    files = {name: make(folder / name) for name, make in MAKERS.items()}
    with Catalog(url) as catalog:
        for path in files.values():
            tag_in_catalog(catalog, path, PROBS)
    return url, files


def test_every_format_gets_its_genres_and_keeps_its_audio_bit_exact(library):
    url, files = library
    original = {name: decoded(path) for name, path in files.items()}
    modes = {}
    for index, path in enumerate(files.values()):
        path.chmod(0o640 if index % 2 else 0o604)
        modes[path] = stat.S_IMODE(path.stat().st_mode)
    results = write_tags(url, every=True, options=TagWriteOptions(policy="replace", top_k=2, confidence_field=True))
    assert {r.status for r in results} == {"written"}, [r.line() for r in results]
    for name, path in files.items():
        assert file_genres(path) == ["rock", "jazz"], name
        assert np.array_equal(decoded(path), original[name]), f"{name}: audio changed"
        assert stat.S_IMODE(path.stat().st_mode) == modes[path], name
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "a temporary file was left"
    tags = mutagen.File(files["song.mp3"]).tags
    assert tags.version == (2, 4, 0)
    assert tags.getall("TXXX:GENRETAG")[0].text == ["rock=0.700; jazz=0.200; model=genretag-cnn 3"]
    assert mutagen.File(files["song.flac"])["GENRETAG"] == ["rock=0.700; jazz=0.200; model=genretag-cnn 3"]
    assert bytes(mutagen.File(files["song.m4a"]).tags["----:org.genretag:GENRETAG"][0]).startswith(b"rock=0.700")


def test_policies_confidence_top_k_map_and_review(tmp_path):
    folder = tmp_path / "lib"
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    paths = [write_audio(folder / f"{i}.flac", tone(2.0, seed=i)) for i in range(4)]
    existing = mutagen.File(paths[0])
    existing["GENRE"] = ["Shoegaze", "Dream Pop"]  # multi-valued genres already there
    existing.save()
    with Catalog(url) as catalog:
        for path in paths[:2]:
            tag_in_catalog(catalog, path, PROBS)
        tag_in_catalog(catalog, paths[2], {"unknown": 0.9, "rock": 0.1})
        tag_in_catalog(catalog, paths[3], {"jazz": 0.4, "rock": 0.35, "pop": 0.25}, needs_review=True)

    def run(**options):
        return {Path(r.path).name: r for r in write_tags(url, paths=[folder], options=TagWriteOptions(**options))}

    dry = run(policy="replace", dry_run=True)
    assert dry["0.flac"].line() == f"would-write: {paths[0]}: genre ['Shoegaze', 'Dream Pop'] -> ['rock']"
    assert file_genres(paths[0]) == ["Shoegaze", "Dream Pop"] and file_genres(paths[1]) == []  # dry run wrote nothing

    first = run()  # only-if-empty
    assert first["0.flac"].status == "skipped" and "has genres already (Shoegaze; Dream Pop)" in first["0.flac"].reason
    assert first["1.flac"].status == "written" and file_genres(paths[1]) == ["rock"]
    assert first["2.flac"].status == "skipped" and file_genres(paths[2]) == []  # unknown is never written unless asked
    assert first["3.flac"].status == "skipped" and "needs review" in first["3.flac"].reason

    added = run(policy="add", top_k=3, min_confidence=0.15)
    assert file_genres(paths[0]) == ["Shoegaze", "Dream Pop", "rock", "jazz"], added["0.flac"].line()
    assert run(policy="add", top_k=3, min_confidence=0.15)["0.flac"].status == "unchanged"

    genre_map = tmp_path / "map.yaml"
    genre_map.write_text("rock: [Rock, Alternative]\njazz: null\n", encoding="utf-8")
    run(policy="replace", top_k=2, genre_map=load_genre_map(genre_map))
    assert file_genres(paths[1]) == ["Rock", "Alternative"]
    csv_map = tmp_path / "map.csv"
    csv_map.write_text("genre,name\nrock,Rock & Roll\n", encoding="utf-8")
    assert load_genre_map(csv_map) == {"rock": ("Rock & Roll",)}

    review = run(policy="replace", include_review=True)
    assert file_genres(paths[2]) == ["unknown"] and file_genres(paths[3]) == ["jazz"], review


def test_bad_input_gets_one_line_each_and_the_others_are_written(tmp_path, monkeypatch):
    folder = tmp_path / "lib"
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    good = write_audio(folder / "good.flac", tone(2.0, seed=1))
    read_only = write_audio(folder / "read_only.flac", tone(2.0, seed=2))
    changed = write_audio(folder / "changed.flac", tone(2.0, seed=3))
    unwritable = write_audio(folder / "raw.w64", tone(2.0, seed=4), subtype="PCM_16")  # Sony Wave64: mutagen writes no tags there
    with Catalog(url) as catalog:
        for path in (good, read_only, changed, unwritable):
            tag_in_catalog(catalog, path, PROBS)
    read_only.chmod(0o444)
    write_audio(changed, tone(2.0, seed=30))  # re-encoded since it was tagged
    before = {p: p.read_bytes() for p in (read_only, changed, unwritable)}
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["write-tags", "--all", "--database", url])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    failed = sorted(line for line in lines if line.startswith("failed: "))
    assert f"failed: {read_only}: the file is read-only" in failed  # root too: no write bit means leave it alone
    assert any(line.startswith(f"failed: {changed}: changed since it was tagged") for line in failed), lines
    assert any(line.startswith(f"failed: {unwritable}: cannot write genre tags to") for line in failed), lines
    assert f"written: {good}: genre [] -> ['rock']" in lines
    assert file_genres(good) == ["rock"]
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was touched"


def test_a_failure_mid_write_leaves_the_original_and_no_alias(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    song = write_audio(tmp_path / "lib" / "song.flac", tone(2.0, seed=1))
    with Catalog(url) as catalog:
        tag_in_catalog(catalog, song, PROBS)
    content = song.read_bytes()

    def rename_fails(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tag_writer.os, "replace", rename_fails)  # the disk fills at the last step
    (result,) = write_tags(url, paths=[song], options=TagWriteOptions())
    assert result.status == "failed" and result.reason == "No space left on device"
    assert song.read_bytes() == content
    assert sorted(p.name for p in song.parent.iterdir()) == ["song.flac"]
    with Catalog(url) as catalog:
        assert catalog.read("catalog_aliases").empty


def test_identity_survives_tag_writing(tmp_path, monkeypatch):
    """After write-tags, tag-catalog tags nothing new, keeps the rows, and show finds the track by its file."""
    from genretag.onnx.session import open_model
    from genretag.tagging.run import tag_catalog
    from tests.tagging_support import make_onnx_model

    folder = tmp_path / "lib"
    write_audio(folder / "a.flac", tone(4.0, frequency=220.0, seed=1))
    write_audio(folder / "b.wav", tone(4.0, frequency=880.0, seed=2))
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    model = open_model(make_onnx_model(tmp_path / "m.onnx", version="7"), prefer_gpu=False)
    first = tag_catalog(folder, model=model, database_url=url, max_windows=2, workers=1, review_below=0.0)
    assert first.tagged == 2
    results = write_tags(url, paths=[folder], options=TagWriteOptions(policy="replace", include_review=True))
    assert [r.status for r in results] == ["written", "written"], [r.line() for r in results]
    again = tag_catalog(folder, model=model, database_url=url, max_windows=2, workers=1, review_below=0.0)
    assert (again.tagged, again.skipped, again.failed) == (0, 2, 0)
    assert (again.hashed, again.bytes_hashed, again.unchanged) == (0, 0, 2)  # write-tags recorded each file's new fingerprint
    with Catalog(url) as catalog:
        tags = catalog.read("catalog_tags")
        assert len(tags) == 2 and tags["run_id"].notna().all()
        assert set(tags["run_id"]) == set(catalog.read("catalog_runs")["run_id"].iloc[:1])
        assert len(catalog.read("catalog_aliases")) == 2
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["show", str(folder / "a.flac"), "--database", url])
    assert shown.exit_code == 0 and "genretag-cnn 7" in shown.output, shown.output
    from genretag.tagging.review import import_review

    sheet = tmp_path / "review.csv"  # a reviewer's label for a file whose tags were written: still the same track
    sheet.write_text(f"sha256,path,corrected_genre\n{tags['sha256'].iloc[0]},,jazz\n", encoding="utf-8")
    outcome = import_review(sheet, database_url=url, genres=list(model.contract.labels), feedback=tmp_path / "feedback.csv")
    assert (outcome.added, outcome.problems) == (1, []), outcome.problems
