"""Rescans that read no audio: the fingerprint rules (moved, renamed, touched, truncated, replaced with the
same size, changing while hashed), the blind spot and --rehash, known failures, and progress lines."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from bench.cli import tiny_model
from tests.conftest import tone, write_audio

from genretag.onnx.session import open_model
from genretag.tagging.run import tag_catalog
from genretag.tagging.fingerprints import Fingerprint, hash_tracks
from genretag.tagging.sources import HashedTrack, TrackSource
from genretag.tagging.store import Catalog


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return open_model(tiny_model(tmp_path_factory.mktemp("model") / "model.onnx"), prefer_gpu=False)


def _tag(folder: Path, model, url: str, **options):
    return tag_catalog(folder, model=model, database_url=url, max_windows=1, workers=1, progress_bars=False, **options)


def _music(folder: Path) -> None:
    for i, name in enumerate(("a.wav", "b.wav", "sub/c.wav")):
        write_audio(folder / name, tone(3.5, frequency=200.0 + 100 * i, seed=i))


def test_a_rescan_reads_only_what_is_new_or_changed(model, tmp_path: Path) -> None:
    folder, url = tmp_path / "music", f"sqlite:///{tmp_path / 'catalog.db'}"
    _music(folder)
    first = _tag(folder, model, url)
    assert (first.tagged, first.hashed, first.unchanged) == (3, 3, 0)

    again = _tag(folder, model, url)  # nothing changed: nothing read
    assert (again.hashed, again.bytes_hashed, again.unchanged, again.skipped, again.tagged) == (0, 0, 3, 3, 0)

    os.rename(folder / "a.wav", folder / "renamed.wav")  # same inode, size, mtime: found without reading
    os.rename(folder / "sub" / "c.wav", folder / "moved.wav")
    moved = _tag(folder, model, url)
    assert (moved.hashed, moved.renamed, moved.unchanged, moved.moved, moved.tagged) == (0, 2, 1, 2, 0)
    with Catalog(url) as catalog:
        paths = set(catalog.read("catalog_tags")["path"])
    assert paths == {str(folder / "renamed.wav"), str(folder / "b.wav"), str(folder / "moved.wav")}

    status = os.stat(folder / "b.wav")
    os.utime(folder / "b.wav", ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))  # touched: mtime only
    touched = _tag(folder, model, url)
    assert (touched.hashed, touched.skipped, touched.tagged) == (1, 3, 0)  # read again, same content: still tagged

    data = (folder / "renamed.wav").read_bytes()
    (folder / "renamed.wav").write_bytes(data[: len(data) // 2])  # truncated: new size
    truncated = _tag(folder, model, url)
    assert (truncated.hashed, truncated.skipped, truncated.tagged + truncated.failed) == (1, 2, 1)  # new content: scored (too short now)

    replacement = tmp_path / "replacement.wav"  # same size, new content, new mtime (and inode): a replace by rename
    write_audio(replacement, tone(3.5, frequency=900.0, seed=7))
    assert replacement.stat().st_size == (folder / "b.wav").stat().st_size
    os.replace(replacement, folder / "b.wav")
    replaced = _tag(folder, model, url)
    assert (replaced.hashed, replaced.tagged, replaced.unchanged) == (1, 1, 2)


def test_content_changed_under_the_same_size_and_mtime_is_missed_until_rehash(model, tmp_path: Path) -> None:
    folder, url = tmp_path / "music", f"sqlite:///{tmp_path / 'catalog.db'}"
    _music(folder)
    assert _tag(folder, model, url).tagged == 3
    target = folder / "b.wav"
    status = os.stat(target)
    other = tmp_path / "other.wav"
    write_audio(other, tone(3.5, frequency=1234.0, seed=11))
    new = other.read_bytes()
    assert len(new) == status.st_size
    with open(target, "r+b") as handle:  # in place: same inode
        handle.write(new)
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))

    blind = _tag(folder, model, url)  # the blind spot: taken as unchanged, so nothing was read
    assert (blind.hashed, blind.skipped, blind.tagged, blind.changed_in_place) == (0, 3, 0, [])

    checked = _tag(folder, model, url, rehash=True)
    assert checked.hashed == 3 and checked.changed_in_place == [str(target)] and checked.tagged == 1


def test_a_file_changing_while_hashed_is_hashed_again_or_recorded_as_unstable(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "growing.wav", tone(60.0, seed=1))  # > 1 block: the hook runs mid-read
    writes = []

    def append_once(target: Path) -> None:
        if not writes:
            writes.append(1)
            with open(target, "ab") as handle:
                handle.write(b"\0" * 10)

    once = hash_tracks([TrackSource("growing", path)], while_reading=append_once)
    (track, fingerprint), = once.hashed
    assert fingerprint.size == path.stat().st_size and once.unstable == []  # the second read is the one kept
    assert hash_tracks([TrackSource("growing", path)]).hashed[0][0].sha256 == track.sha256

    def append_always(target: Path) -> None:
        with open(target, "ab") as handle:
            handle.write(b"\0")

    always = hash_tracks([TrackSource("growing", path)], while_reading=append_always)
    assert always.hashed == [] and always.unstable == [TrackSource("growing", path)] and always.failed == []


def test_known_failures_are_not_decoded_again_unless_retried(model, tmp_path: Path) -> None:
    folder, url = tmp_path / "music", f"sqlite:///{tmp_path / 'catalog.db'}"
    _music(folder)
    (folder / "broken.wav").write_text("not audio at all\n")
    first = _tag(folder, model, url)
    assert (first.tagged, first.failed, first.known_failures) == (3, 1, 0)

    again = _tag(folder, model, url)
    assert (again.failed, again.known_failures, again.known_failure_paths) == (0, 1, [str(folder / "broken.wav")])

    retried = _tag(folder, model, url, retry_failed=True)
    assert (retried.failed, retried.known_failures) == (1, 0)
    assert retried.failures[0]["path"] == str(folder / "broken.wav")


def test_a_run_without_a_terminal_logs_its_progress(model, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, url = tmp_path / "music", f"sqlite:///{tmp_path / 'catalog.db'}"
    _music(folder)
    log = logging.getLogger("test-progress")
    with caplog.at_level(logging.INFO, logger="test-progress"):
        _tag(folder, model, url, progress_every_s=0.05, log=log)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress after")]
    assert len(lines) >= 2  # the periodic ones and the last
    assert "3 tracks listed" in lines[-1] and "3 hashed" in lines[-1]
    assert "scored 3/3 tracks: 3 tagged, 0 failed" in lines[-1] and "ETA" in lines[-1] and "last change" in lines[-1]


def test_fingerprints_are_kept_and_looked_up_in_batches(catalog_url: str) -> None:
    big = (1 << 64) - 3  # an unsigned 64-bit inode above BIGINT's range round-trips
    files = [(HashedTrack(f"t{i}", Path(f"/music/{i}.flac"), f"{i:064x}"), Fingerprint(7, big - i, 1000 + i, 10**18 + i))
             for i in range(2500)]  # more than one lookup chunk
    with Catalog(catalog_url) as catalog:
        catalog.record_fingerprints(files)
        catalog.record_fingerprints([(HashedTrack("t0", Path("/music/0.flac"), "f" * 64), Fingerprint(7, big, 1, 2))])  # upsert
        by_path = catalog.fingerprints([f"/music/{i}.flac" for i in range(2500)] + ["/music/none.flac"])
        by_inode = catalog.fingerprints_by_inode([(7, big - 2499), (7, 5), (8, big)])
    assert len(by_path) == 2500 and by_path["/music/0.flac"].sha256 == "f" * 64
    assert by_path["/music/1.flac"].fingerprint == Fingerprint(7, big - 1, 1001, 10**18 + 1)
    assert list(by_inode) == [(7, big - 2499)] and by_inode[(7, big - 2499)][0].path == "/music/2499.flac"
