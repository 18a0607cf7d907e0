"""`genretag show PATH|SHA`: what the catalog holds for one track."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from genretag.audio.decoding import file_sha256
from genretag.tagging.store import Catalog
from genretag.cli.app import app


def test_show_prints_each_model_versions_top3_or_its_failure(tmp_path, monkeypatch):
    song = tmp_path / "song.wav"
    song.write_bytes(b"not really audio, but bytes with a hash")
    sha = file_sha256(song)
    url = f"sqlite:///{tmp_path / 'tags.db'}"
    top3 = [{"genre": "jazz", "probability": 0.8125}, {"genre": "blues", "probability": 0.125}, {"genre": "rock", "probability": 0.0625}]
    tag = {"track_id": "song", "path": str(song), "sha256": sha, "genre": "jazz", "confidence": 0.8125, "top3": json.dumps(top3),
           "probabilities": json.dumps({t["genre"]: t["probability"] for t in top3}), "windows_scored": 9,
           "model_name": "genretag-cnn", "model_version": "3", "provider": "CPUExecutionProvider",
           "scored_at": datetime(2026, 1, 2, 3, 4, tzinfo=UTC)}
    error = {"track_id": "song", "path": str(song), "sha256": sha, "reason": "silent: RMS -90.0 dBFS below -60.0",
             "model_version": "4", "failed_at": datetime(2026, 1, 3, tzinfo=UTC)}
    with Catalog(url) as catalog:
        catalog.write([tag], [error])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENRETAG_CATALOG_URL", raising=False)
    monkeypatch.delenv("GENRETAG_ROOT", raising=False)
    monkeypatch.delenv("GENRETAG_PARAMS", raising=False)
    runner = CliRunner()

    by_path = runner.invoke(app, ["show", str(song), "--database", url])
    assert by_path.exit_code == 0, by_path.output
    lines = by_path.output.strip().splitlines()
    assert lines == [
        f"{song} (sha256 {sha[:12]}) genretag-cnn 3 on CPUExecutionProvider, 2026-01-02 03:04: "
        "jazz 0.812  blues 0.125  rock 0.062  (9 windows)",
        f"{song} (sha256 {sha[:12]}) 4: failed: silent: RMS -90.0 dBFS below -60.0",
    ]
    assert runner.invoke(app, ["show", sha[:10], "--database", url]).output == by_path.output
    missing = runner.invoke(app, ["show", "0" * 64, "--database", url])
    assert missing.exit_code == 1 and "not in the catalog" in missing.output
    assert runner.invoke(app, ["show", "abc", "--database", url]).exit_code == 1
    gone = runner.invoke(app, ["show", str(tmp_path / "gone.wav"), "--database", url])  # a path, not a sha256 prefix
    assert gone.exit_code == 1 and gone.output == f"error: {tmp_path / 'gone.wav'}: no such file, and not a SHA-256 (8 to 64 hex digits)\n"
    for command in (["show", sha], ["export-tags", "--out", "tags.csv"]):  # no catalog here: one line, nothing created
        nowhere = runner.invoke(app, command)
        assert nowhere.exit_code == 1 and nowhere.output.startswith(f"error: no catalog database at {tmp_path / 'catalog.db'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.wav", "tags.db"]
