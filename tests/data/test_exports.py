"""export-tags in native types (Parquet, JSON Lines), each row with its run; machine-readable output of
show and predict; genretag --version; exports that cannot be written leave nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import genretag
from genretag.cli.app import app
from genretag.core.errors import ScoringError
from genretag.onnx.session import open_model
from genretag.tagging.export import export_tags
from genretag.tagging.run import tag_catalog
from genretag.tagging.store import Catalog
from tests.conftest import tone, write_audio
from tests.tagging_support import make_onnx_model


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """A catalog of two tracks, one of them under a name that is not UTF-8, and the model file."""
    root = tmp_path_factory.mktemp("exports")
    folder = root / "music"
    write_audio(folder / "plain.wav", tone(4.0, frequency=300.0, seed=1))
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.wav"))
    os.rename(write_audio(folder / "cafe.wav", tone(4.0, frequency=600.0, seed=2)), odd)  # libsndfile opens no such name
    model_file = make_onnx_model(root / "m.onnx", version="5")
    url = f"sqlite:///{root / 'catalog.db'}"
    summary = tag_catalog(folder, model=open_model(model_file, prefer_gpu=False), database_url=url, max_windows=2, workers=1)
    assert summary.tagged == 2
    return root, url, model_file, odd


def test_parquet_has_native_types_path_bytes_and_the_run(tagged, tmp_path):
    root, url, _, odd = tagged
    assert export_tags(url, out=tmp_path / "tags.parquet", fmt="parquet") == 2
    table = pq.read_table(tmp_path / "tags.parquet")
    schema = table.schema
    assert schema.field("top3").type == pa.list_(pa.struct([("genre", pa.string()), ("probability", pa.float64())]))
    assert schema.field("probabilities").type == pa.map_(pa.string(), pa.float64())
    assert pa.types.is_struct(schema.field("window_probabilities").type)
    assert schema.field("path_bytes").type == pa.binary()
    assert schema.field("scored_at").type == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    by_name = {Path(os.fsdecode(r["path_bytes"])).name if r["path_bytes"] else Path(r["path"]).name: r for r in rows}
    assert by_name[odd.name]["path_bytes"] == os.fsencode(odd)  # the exact bytes of the name that is not UTF-8
    assert by_name[odd.name]["path"].endswith("caf\\xe9.wav")
    assert by_name["plain.wav"]["path_bytes"] is None  # a UTF-8 name is faithful as text: no bytes needed
    for row in rows:
        assert len(row["top3"]) == 3 and {"genre", "probability"} == set(row["top3"][0])
        assert abs(sum(p for _, p in row["probabilities"]) - 1.0) < 1e-4
        assert row["model_version"] == "5" and row["run"] == "cli" and len(row["run_id"]) == 32
    with Catalog(url) as catalog:
        assert set(catalog.read("catalog_runs")["run_id"]) == {rows[0]["run_id"]}


def test_an_embedding_column_exports_as_a_fixed_size_list():
    from genretag.tagging.export import parquet_table
    import pandas as pd
    import numpy as np

    frame = pd.DataFrame({"top3": ['[{"genre": "rock", "probability": 1.0}]'], "probabilities": ['{"rock": 1.0}'],
                          "window_probabilities": [None], "path_bytes": [None],
                          "scored_at": [pd.Timestamp("2026-01-01", tz="UTC")],
                          "embedding": [np.arange(4, dtype="<f4").tobytes()]})
    table = parquet_table(frame)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert table.column("embedding").to_pylist() == [[0.0, 1.0, 2.0, 3.0]]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_json_lines_parse_with_native_values(tagged, tmp_path, fmt):
    _, url, _, odd = tagged
    out = tmp_path / f"tags.{fmt}"
    result = CliRunner().invoke(app, ["export-tags", "--format", fmt, "--out", str(out), "--database", url])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert isinstance(row["top3"], list) and isinstance(row["probabilities"], dict)
        assert isinstance(row["window_probabilities"]["labels"], list) and row["run"] == "cli"
        assert row["scored_at"].endswith("+00:00")
    assert {bytes.fromhex(r["path_bytes"]) for r in rows if r["path_bytes"]} == {os.fsencode(odd)}


def test_an_export_that_cannot_be_written_says_so_in_one_line_and_leaves_nothing(tagged, tmp_path):
    _, url, _, _ = tagged
    missing = tmp_path / "nowhere" / "tags.parquet"
    with pytest.raises(ScoringError, match=f"^cannot write {missing}: folder {missing.parent} does not exist$"):
        export_tags(url, out=missing, fmt="parquet")
    assert not missing.parent.exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: a file in the way of the folder stands in
            locked.chmod(0o755)
            locked.rmdir()
            locked.write_text("a file, not a folder", encoding="utf-8")
        result = CliRunner().invoke(app, ["export-tags", "--format", "jsonl", "--out", str(locked / "tags.jsonl"), "--database", url])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith(f"error: cannot write {locked / 'tags.jsonl'}: folder {locked} ")
    finally:
        if locked.is_dir():
            locked.chmod(0o755)
    assert not (locked.is_dir() and any(locked.iterdir()))


def test_show_and_predict_print_json_and_the_version_names_the_package(tagged, tmp_path, monkeypatch):
    root, url, model_file, _ = tagged
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["show", str(root / "music" / "plain.wav"), "--database", url, "--json"])
    assert shown.exit_code == 0, shown.output
    record = json.loads(shown.output)
    assert record["tags"][0]["model_version"] == "5" and isinstance(record["tags"][0]["top3"], list) and record["errors"] == []

    predicted = runner.invoke(app, ["predict", str(root / "music" / "plain.wav"), str(tmp_path / "gone.wav"),
                                    "--model", str(model_file), "--json"])
    assert predicted.exit_code == 1
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert lines[0]["model_version"] == "5" and len(lines[0]["top"]) == 3 and set(lines[0]["top"][0]) == {"genre", "probability"}
    assert lines[1]["file"].endswith("gone.wav") and lines[1]["error"]

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith(f"genretag {genretag.__version__}")
