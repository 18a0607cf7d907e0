"""Issue 23: every file of a hostile folder is tagged, an error row, or named as skipped (catalog_skips), and
one bad file, link or folder costs only itself. Each failure class has its own test; the last test puts
them all in one folder and runs the real tagger (contract-v2 ONNX model, real decoders, SQLite)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genretag.core.paths import display, quoted
from genretag.tagging.decode_pool import DECODER_CRASHED, decode_files
from genretag.tagging.fingerprints import hash_tracks
from genretag.tagging.sources import scan_source
from genretag.tagging.store import Catalog
from genretag.tagging.windows import windows_or_reason
from tests.audio_files import encode_with_pyav
from tests.conftest import REPO_ROOT, tone, write_audio
from tests.crash_decoder import decode_or_die

SR, CLIP = 22050, 3 * 22050
# Run as root, a child drops the capabilities that let root ignore permissions (CAP_DAC_*).
DROP_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def _as_a_user(command: list[str]) -> list[str]:
    """``command`` run so that folder permissions apply: without root's DAC override when root."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE to make a folder unreadable")
    return DROP_DAC + command


def _scan_in_child(folder: Path) -> dict:
    code = ("import json, sys; from genretag.tagging.sources import scan_source; s = scan_source(sys.argv[1]); "
            "print(json.dumps({'tracks': [str(t.path) for t in s.tracks], 'skips': [[str(k.path), k.reason] for k in s.skips()]}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]))
    result = subprocess.run(_as_a_user([sys.executable, "-c", code, str(folder)]), capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout)


def test_a_symlink_loop_costs_one_error_row_not_the_run(tmp_path: Path) -> None:
    (tmp_path / "a.wav").symlink_to("b.wav")
    (tmp_path / "b.wav").symlink_to("a.wav")
    write_audio(tmp_path / "good.wav", tone(4))
    outcome = hash_tracks(scan_source(tmp_path).tracks, strict=True)
    assert [t.track_id for t, _ in outcome.hashed] == ["good"]
    failed = outcome.failed
    assert {f.track_id: f.reason for f in failed} == {"a": "cannot read: Too many levels of symbolic links",
                                                      "b": "cannot read: Too many levels of symbolic links"}
    assert len({f.sha256 for f in failed}) == 2


def test_folder_links_are_followed_once_and_a_loop_is_named(tmp_path: Path) -> None:
    music = tmp_path / "music"
    write_audio(tmp_path / "elsewhere" / "x.wav", tone(4))
    music.mkdir()
    (music / "album").symlink_to(tmp_path / "elsewhere")  # a folder link: followed
    (music / "again").symlink_to(tmp_path / "elsewhere")  # a second link to it: named, not walked twice
    (tmp_path / "elsewhere" / "up").symlink_to(music)  # a loop back to the top
    scan = scan_source(music)
    assert [t.path for t in scan.tracks] == [music / "again" / "x.wav"]
    skips = {s.path: s.reason for s in scan.skips()}
    assert skips == {
        music / "album": f"folder already walked as {music / 'again'} (a link loop or a second link to it)",
        music / "again" / "up": f"folder already walked as {music} (a link loop or a second link to it)",
    }


def test_an_unreadable_folder_is_named(tmp_path: Path) -> None:
    write_audio(tmp_path / "music" / "ok.wav", tone(4))
    write_audio(tmp_path / "music" / "locked" / "hidden.wav", tone(4, seed=1))
    (tmp_path / "music" / "locked").chmod(0)
    try:
        found = _scan_in_child(tmp_path / "music")
    finally:
        (tmp_path / "music" / "locked").chmod(0o755)
    assert found == {"tracks": [str(tmp_path / "music" / "ok.wav")],
                     "skips": [[str(tmp_path / "music" / "locked"), "cannot list folder: Permission denied"]]}


def test_track_ids_are_unique_per_file(tmp_path: Path) -> None:
    encode_with_pyav(tmp_path / "pyav.m4a")
    encode_with_pyav(tmp_path / "pyav.opus")
    write_audio(tmp_path / "sub" / "solo.wav", tone(4))
    assert [t.track_id for t in scan_source(tmp_path).tracks] == ["pyav.m4a", "pyav.opus", "sub/solo"]


def test_a_file_named_without_an_audio_extension_is_a_named_skip(tmp_path: Path) -> None:
    write_audio(tmp_path / "tmp.wav", tone(4)).rename(tmp_path / "recording")  # a WAV without its extension
    (tmp_path / "notes.txt").write_text("hi")
    assert {s.path.name: s.reason for s in scan_source(tmp_path).skips()} == {
        "recording": "not audio: no file extension", "notes.txt": "not audio: no decoder reads suffix '.txt'"}


def test_names_with_control_characters_are_quoted_on_one_line() -> None:
    assert quoted("/m/new\nline.wav") == "'/m/new\\nline.wav'" and quoted("/m/tab\there") == "'/m/tab\\there'"
    assert quoted("/m/plain é.wav") == "/m/plain é.wav" and "\n" not in quoted("a\r\n\x1b[31m")


def test_decoder_noise_lands_in_the_files_reason_not_on_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(1).bytes(20_000))  # libmpg123 complains on fd 2 while it resyncs
    windows, reason = windows_or_reason(path=str(noise), sample_rate=SR, clip_samples=CLIP, max_windows=2, silence_rms_dbfs=-60)
    out, err = capfd.readouterr()
    assert windows is None and reason.startswith("not a decodable audio file (soundfile: ")
    assert "(decoder said: " in reason and ("MPEG" in reason or "resync" in reason)
    assert err == "" and out == ""


def test_a_killed_decoding_worker_costs_no_track(tmp_path: Path) -> None:
    names = ["a.wav", "crash-once.wav", "b.wav", "crash-always.wav", "c.wav", "d.wav"]
    for seed, name in enumerate(names):
        write_audio(tmp_path / name, tone(4, seed=seed))
    # Real SIGKILLs of the worker that reads a crash-* file, two workers, every track in flight at once.
    results = list(decode_files(((n, tmp_path / n) for n in names), sample_rate=SR, clip_samples=CLIP, max_windows=1,
                                workers=2, in_flight=6, decode=decode_or_die))
    assert [r[0] for r in results] == names  # every track once, in order
    reasons = {key: reason for key, _, _, reason in results}
    assert reasons == {**dict.fromkeys(names, ""), "crash-always.wav": DECODER_CRASHED}
    assert all(windows is not None for key, _, windows, _ in results if key != "crash-always.wav")
    assert (tmp_path / "crash-once.wav.crashed").exists()  # it did kill a worker, and its retry tagged it


_HOSTILE_RUN = """
import json, sys
from genretag.onnx.session import open_model
from genretag.tagging.run import tag_catalog
summary = tag_catalog(sys.argv[1], model=open_model(sys.argv[2], prefer_gpu=False), database_url=sys.argv[3],
                      max_windows=2, batch_size=16, commit_every=4, workers=2)
print(json.dumps(summary.to_dict(), default=str))
"""


def _hostile_folder(music: Path, elsewhere: Path) -> dict[str, str]:
    """Every class of issues 12 and 23 in one folder: relative path (as listed) -> "tag" | "error" | "skip"."""
    from tests.data.test_every_file_accounted import _mixed_folder

    _mixed_folder(music / "mixed")
    expected = {f"mixed/{name}": "tag" for name in ("plain.wav", "UPPER.WAV", "peak.wav", "crashed.wav", "x\\xff.wav",
                                                   *(f"formats/track{s}" for s in (".m4a", ".mp4", ".opus", ".webm", ".wma")))}
    expected |= {f"mixed/{name}": "error" for name in ("noise.mp3", "empty.wav", "onehz.wav", "pipe.wav")}
    expected |= {f"mixed/{name}": "skip" for name in ("._plain.wav", "__MACOSX/._UPPER.WAV", "notes.txt", "cover.jpg")}
    (music / "loop-a.wav").symlink_to("loop-b.wav")  # a symlink loop: two error rows
    (music / "loop-b.wav").symlink_to("loop-a.wav")
    write_audio(elsewhere / "linked.wav", tone(5, seed=21))
    (music / "album").symlink_to(elsewhere)  # a folder link: followed
    (elsewhere / "up").symlink_to(music)  # a loop to the top: named
    write_audio(music / "locked" / "hidden.wav", tone(5, seed=22))  # an unreadable folder: named
    write_audio(music / "tmp.wav", tone(5, seed=23)).rename(music / "recording")  # a WAV without its extension
    (music / "empty-copy.wav").write_bytes(b"")  # a copy of a failed file: its own error row
    encode_with_pyav(music / "pyav.m4a", seconds=5)  # two files, one stem: two track ids
    encode_with_pyav(music / "pyav.opus", seconds=5)
    write_audio(music / "new\nline.wav", tone(5, seed=24))  # a newline in a name
    expected |= {"loop-a.wav": "error", "loop-b.wav": "error", "album/linked.wav": "tag", "album/up": "skip",
                 "locked": "skip", "recording": "skip", "empty-copy.wav": "error", "pyav.m4a": "tag", "pyav.opus": "tag",
                 "new\nline.wav": "tag"}
    return expected


def test_every_file_of_a_hostile_folder_is_tagged_an_error_or_a_named_skip(tmp_path: Path) -> None:
    from tests.tagging_support import make_onnx_model

    music, url = tmp_path / "music", f"sqlite:///{tmp_path / 'catalog.db'}"
    expected = _hostile_folder(music, tmp_path / "elsewhere")
    model = make_onnx_model(tmp_path / "v1.onnx", version="1", seed=1)
    (music / "locked").chmod(0)
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]))
        result = subprocess.run(_as_a_user([sys.executable, "-c", _HOSTILE_RUN, str(music), str(model), url]),
                                capture_output=True, text=True, env=env, timeout=600)
    finally:
        (music / "locked").chmod(0o755)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MPEG" not in result.stderr and "resync" not in result.stderr  # decoder noise went into the file's row
    summary = json.loads(result.stdout)

    with Catalog(url) as catalog:
        tables = {t: catalog.read(t) for t in ("catalog_tags", "catalog_errors", "catalog_skips", "catalog_runs")}
    found: dict[str, str] = {}
    for kind, table in (("tag", "catalog_tags"), ("error", "catalog_errors"), ("skip", "catalog_skips")):
        for path in tables[table]["path"]:
            name = os.path.relpath(path, display(music))
            assert name not in found, f"{name!r} is both {found[name]} and {kind}"
            found[name] = kind
    assert found == expected  # every file by name, exactly once; nothing else
    assert (summary["tagged"], summary["failed"], len(summary["skips"])) == (
        sum(v == "tag" for v in expected.values()), sum(v == "error" for v in expected.values()),
        sum(v == "skip" for v in expected.values()))
    assert summary["folders_skipped"] == 2 and list(tables["catalog_skips"]["run_id"].unique()) == list(tables["catalog_runs"]["run_id"])

    errors = tables["catalog_errors"].assign(name=lambda f: f["path"].map(lambda p: os.path.relpath(p, music))).set_index("name")
    assert errors.loc["loop-a.wav", "reason"] == "cannot read: Too many levels of symbolic links"
    assert errors.loc["empty-copy.wav", "reason"] == "empty file (0 bytes)"  # listed first: scored; its copy names it
    assert errors.loc["mixed/empty.wav", "reason"] == f"same content as {music / 'empty-copy.wav'}, which failed: empty file (0 bytes)"
    assert "(decoder said: " in errors.loc["mixed/noise.mp3", "reason"]
    skips = tables["catalog_skips"].assign(name=lambda f: f["path"].map(lambda p: os.path.relpath(p, music))).set_index("name")
    assert skips.loc["locked", "reason"] == "cannot list folder: Permission denied"
    assert skips.loc["recording", "reason"] == "not audio: no file extension"
    tags = tables["catalog_tags"]
    assert tags["track_id"].is_unique and {"pyav.m4a", "pyav.opus"} <= set(tags["track_id"])
    assert all("\n" not in line for line in result.stderr.splitlines() if line.startswith(("failed:", "skipped:")))


def test_track_ids_from_a_csv_are_unique(tmp_path: Path) -> None:
    listing = tmp_path / "tracks.csv"
    listing.write_text("track_id,path\n,a/x.wav\n,b/x.wav\nt1,c.wav\nt1,d.wav\nx-2,e.wav\n", encoding="utf-8")
    assert [t.track_id for t in scan_source(listing).tracks] == ["x", "x-2", "t1", "t1-2", "x-2-2"]


def test_names_are_quoted_in_the_markdown_failures_table_and_ingests_log_line(tmp_path: Path) -> None:
    from genretag.core.config import Layout
    from genretag.data.ingest import SourceFile, ingest, undecodable_line
    from genretag.tagging.sources import TrackFailure
    from genretag.tagging.summary import TaggingSummary

    summary = TaggingSummary("/m", "sqlite://", "m", "1", "CPUExecutionProvider")
    summary.add_failures([TrackFailure("t", Path("/m/new\nline|.wav"), "unreadable:0", "bad\nheader")])
    rows = [line for line in summary.to_markdown().splitlines() if "line" in line]
    assert rows == ["| `'/m/new\\nline\\|.wav'` | 'bad\\nheader' |"]

    bad = tmp_path / "in" / "rock" / "rock\n01.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    manifest = ingest([SourceFile(bad, "rock", "rock.01")], layout=Layout(tmp_path / "project"), sample_rate=SR, workers=1)
    lines = [undecodable_line(path, reason) for path, reason in zip(manifest["source_path"], manifest["error"], strict=True)]
    assert lines == [f"cannot decode {str(bad)!r}: empty file (0 bytes) (validation will quarantine it)"]


def test_show_and_export_name_a_runs_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from genretag.cli.app import app
    from tests.tagging_support import make_onnx_model, make_root

    monkeypatch.setenv("GENRETAG_ROOT", str(make_root(tmp_path / "root", workers=1, max_windows=2)))
    monkeypatch.delenv("GENRETAG_CATALOG_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    music, url = tmp_path / "music", f"sqlite:///{tmp_path / 'catalog.db'}"
    write_audio(music / "song.wav", tone(4))
    (music / "notes.txt").write_text("liner notes")
    (music / "again").symlink_to(music)  # a link to a folder already walked
    model = make_onnx_model(tmp_path / "v1.onnx", version="1", seed=1)
    runner = CliRunner()

    tagged = runner.invoke(app, ["tag-catalog", str(music), "--model", str(model), "--database", url])
    assert tagged.exit_code == 0, tagged.output
    assert "1 tagged" in tagged.output and "1 skipped (not audio), 0 skipped (macOS metadata), 1 folders not walked" in tagged.output
    walked_again = f"folder already walked as {music} (a link loop or a second link to it)"
    assert f"skipped: {music / 'again'}: {walked_again}" in tagged.output
    with Catalog(url) as catalog:
        run_id = catalog.read("catalog_runs")["run_id"].item()

    for path, reason in ((music / "notes.txt", "not audio: no decoder reads suffix '.txt'"), (music / "again", walked_again)):
        shown = runner.invoke(app, ["show", str(path), "--database", url])
        assert (shown.exit_code, shown.output) == (0, f"{path}: skipped by run {run_id}: {reason}\n")
    as_json = json.loads(runner.invoke(app, ["show", str(music / "notes.txt"), "--database", url, "--json"]).output)
    assert (as_json["tags"], as_json["errors"]) == ([], [])
    assert [(s["path"], s["reason"], s["run_id"]) for s in as_json["skips"]] == [
        (str(music / "notes.txt"), "not audio: no decoder reads suffix '.txt'", run_id)]

    out = tmp_path / "skips.jsonl"
    exported = runner.invoke(app, ["export-tags", "--skips", "--format", "jsonl", "--out", str(out), "--database", url])
    assert (exported.exit_code, exported.output) == (0, f"wrote 2 skipped files and folders to {out}\n")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted((r["path"], r["reason"], r["run_id"], r["run"]) for r in rows) == sorted([
        (str(music / "notes.txt"), "not audio: no decoder reads suffix '.txt'", run_id, "cli"),
        (str(music / "again"), walked_again, run_id, "cli")])
