"""Embeddings kept in the catalog, and similarity search over them (issue 20.4, issue 21.1): real onnxruntime,
real SQLite and PostgreSQL (catalog_url), real usearch."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from typer.testing import CliRunner

from genretag.cli.app import app
from genretag.onnx.contract import ModelContract, read_contract, write_contract
from genretag.onnx.session import open_model
from genretag.similarity.embeddings import read_embeddings
from genretag.similarity.index import index_paths, read_manifest, update_index
from genretag.similarity.search import embed_file, similar
from genretag.tagging.export import export_tags
from genretag.tagging.rows import DEFAULT_EMBEDDING_DTYPE, decode_embedding
from genretag.tagging.run import tag_catalog
from genretag.tagging.store import Catalog
from tests.conftest import tone, write_audio
from tests.tagging_support import make_good_files, make_onnx_model, make_root

DIM = 24


def _sha(n: int, version: str = "") -> str:
    return hashlib.sha256(f"track-{n}{version}".encode()).hexdigest()


def _row(n: int, vector: np.ndarray, *, version: str, genre: str = "rock", dtype: str = "float32") -> dict:
    """A catalog_tags row with the track embedding ``vector`` stored as ``dtype``."""
    from genretag.tagging.rows import encode_embedding

    top3 = [{"genre": genre, "probability": 0.9}, {"genre": "jazz", "probability": 0.05}, {"genre": "pop", "probability": 0.05}]
    return {"track_id": f"t{n}", "path": f"/music/t{n}.wav", "sha256": _sha(n, version), "genre": genre, "confidence": 0.9,
            "top3": json.dumps(top3), "probabilities": json.dumps({t["genre"]: t["probability"] for t in top3}),
            "windows_scored": 3, "model_name": "genretag-cnn", "model_version": version, "provider": "CPUExecutionProvider",
            "scored_at": datetime(2026, 1, 2, tzinfo=UTC), "embedding": encode_embedding(vector, dtype=dtype), "embedding_dtype": dtype}


def _fill(catalog: Catalog, vectors: np.ndarray, *, version: str, start: int = 0, genres: list[str] | None = None) -> None:
    rows = [_row(start + i, v, version=version, genre=(genres[i] if genres else "rock")) for i, v in enumerate(vectors)]
    assert catalog.write(rows, []).tagged == len(rows)


def test_embeddings_are_stored_and_read_back_equal(catalog_url: str, tmp_path: Path) -> None:
    vectors = np.random.default_rng(0).standard_normal((4, DIM)).astype(np.float32)
    with Catalog(catalog_url) as catalog:
        rows = [_row(i, v, version="7", dtype=dtype) for i, (v, dtype) in enumerate(zip(vectors, ["float32", "float16"] * 2, strict=True))]
        catalog.write(rows, [])
        stored = catalog.read("catalog_tags")
    for row, vector in zip(stored.itertuples(), vectors, strict=True):
        assert decode_embedding(row.embedding, dtype=row.embedding_dtype).tolist() == vector.astype(row.embedding_dtype).astype(np.float32).tolist()
        assert len(row.embedding) == DIM * np.dtype(row.embedding_dtype).itemsize


def test_a_tagging_run_keeps_each_tracks_mean_embedding_in_the_models_dtype(catalog_url: str, tmp_path: Path) -> None:
    """A model exported before ``genretag.embedding`` stores the catalog default (float32); one that states
    float16 stores float16; both equal the mean of the track's scored windows' embeddings."""
    folder = tmp_path / "music"
    write_audio(folder / "a.wav", tone(7.0, frequency=220.0, seed=1))
    write_audio(folder / "b.wav", tone(10.0, frequency=880.0, seed=2))
    old = make_onnx_model(tmp_path / "old.onnx", version="old")
    assert read_contract(old).embedding_dim == 0
    half = tmp_path / "half.onnx"
    proto = onnx.load(str(old))
    contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
    onnx.save(write_contract(proto, ModelContract(**{**contract.__dict__, "model_version": "half", "embedding_dim": 16,
                                                       "embedding_dtype": "float16"})), str(half))
    assert (read_contract(half).embedding_dim, read_contract(half).embedding_dtype) == (16, "float16")
    for path, dtype in ((old, DEFAULT_EMBEDDING_DTYPE), (half, "float16")):
        model = open_model(path, prefer_gpu=False)
        summary = tag_catalog(folder, model=model, database_url=catalog_url, max_windows=4, batch_size=8, workers=1)
        assert summary.tagged == 2
        with Catalog(catalog_url) as catalog:
            rows = catalog.read("catalog_tags", model_version=model.model_version)
        for row in rows.itertuples():
            expected = embed_file(model, row.path, max_windows=4)
            assert row.embedding_dtype == dtype
            assert np.array_equal(decode_embedding(row.embedding, dtype=dtype), expected.astype(dtype).astype(np.float32))


def test_export_includes_the_embedding_only_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    vectors = np.random.default_rng(1).standard_normal((2, DIM)).astype(np.float32)
    with Catalog(url) as catalog:
        _fill(catalog, vectors, version="1")
    export_tags(url, out=tmp_path / "plain.csv")
    assert "embedding" not in pd.read_csv(tmp_path / "plain.csv").columns
    export_tags(url, out=tmp_path / "with.csv", include_embedding=True)
    import base64

    blobs = pd.read_csv(tmp_path / "with.csv")["embedding"]
    assert [np.frombuffer(base64.b64decode(b), "<f4").tolist() for b in blobs] == vectors.tolist()
    export_tags(url, out=tmp_path / "with.parquet", fmt="parquet", include_embedding=True)
    assert [list(v) for v in pd.read_parquet(tmp_path / "with.parquet")["embedding"]] == vectors.tolist()


def _planted(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n random unit vectors, a query direction) with rows 5, 17 and 33 planted close to the query, 5 closest."""
    base = rng.standard_normal((n, DIM)).astype(np.float32)
    query = rng.standard_normal(DIM).astype(np.float32)
    for row, noise in ((5, 0.01), (17, 0.05), (33, 0.1)):
        base[row] = query + noise * rng.standard_normal(DIM).astype(np.float32) * np.linalg.norm(query)
    return base, query


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["exact", "index"])
def test_the_nearest_neighbours_of_a_planted_track_are_the_planted_ones(catalog_url: str, tmp_path: Path, exact_below: int) -> None:
    base, query = _planted(np.random.default_rng(2), 400)
    with Catalog(catalog_url) as catalog:
        _fill(catalog, np.vstack([base, query[None, :]]), version="1")
        by_sha = similar(catalog, model_version="1", sha256=_sha(400, "1")[:12], k=3, exact_below=exact_below, index_folder=tmp_path / "ix")
        by_vector = similar(catalog, model_version="1", embedding=query * 5, k=4, exact_below=exact_below, index_folder=tmp_path / "ix")
    assert by_sha.method == ("exact" if exact_below else "index")
    assert [n.sha256 for n in by_sha.neighbours] == [_sha(i, "1") for i in (5, 17, 33)]  # the query itself is left out
    assert [n.sha256 for n in by_vector.neighbours][:4] == [_sha(i, "1") for i in (400, 5, 17, 33)]
    distances = [n.distance for n in by_sha.neighbours]
    assert distances == sorted(distances) and distances[0] < 0.01


def test_genre_restricts_the_neighbours(tmp_path: Path) -> None:
    base, query = _planted(np.random.default_rng(3), 300)
    genres = ["jazz" if i in (17, 120, 250) else "rock" for i in range(300)]
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        _fill(catalog, base, version="1", genres=genres)
        for exact_below in (10**9, 0):
            found = similar(catalog, model_version="1", embedding=query, k=3, genre="jazz", exact_below=exact_below, index_folder=tmp_path / "ix")
            assert {n.sha256 for n in found.neighbours} == {_sha(i, "1") for i in (17, 120, 250)}
            assert found.neighbours[0].sha256 == _sha(17, "1")


def test_an_incremental_add_equals_a_full_build(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((700, DIM)).astype(np.float32)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    with Catalog(url) as catalog:
        _fill(catalog, vectors[:500], version="1")
        update_index(catalog, model_version="1", folder=tmp_path / "grown")
        _fill(catalog, vectors[500:], version="1", start=500)
        grown, manifest = update_index(catalog, model_version="1", folder=tmp_path / "grown")
        full, _ = update_index(catalog, model_version="1", folder=tmp_path / "full")
        stored = read_embeddings(catalog, model_version="1")
    assert (manifest.count, len(grown), len(full)) == (700, 700, 700)
    assert read_manifest(index_paths(tmp_path / "grown", "1")[1]) == manifest
    queries = rng.standard_normal((30, DIM)).astype(np.float32)
    for query in queries:  # the same neighbours (as sets: float16 distances may swap near-ties), and the exact ones
        exact = set(stored.ids[np.argsort(-(stored.vectors @ (query / np.linalg.norm(query))))[:10]].tolist())
        assert set(grown.search(query, 10).keys.tolist()) == set(full.search(query, 10).keys.tolist()) == exact


def test_an_index_that_does_not_match_the_catalog_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    folder = tmp_path / "ix"
    index_file, manifest_file = index_paths(folder, "1")
    with Catalog(url) as catalog:
        _fill(catalog, rng.standard_normal((50, DIM)).astype(np.float32), version="1")
        _fill(catalog, rng.standard_normal((20, DIM)).astype(np.float32), version="2", start=100)
        update_index(catalog, model_version="1", folder=folder)
        update_index(catalog, model_version="2", folder=folder)
        cases = {
            "count": lambda: manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), "count": 49})),
            "version": lambda: index_paths(folder, "2")[0].replace(index_file) or manifest_file.write_text(
                index_paths(folder, "2")[1].read_text()),
            "catalog": lambda: catalog.engine.dispose() or _delete_one(catalog),
        }
        for name, tamper in cases.items():
            tamper()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="genretag.similarity.index"):
                index, manifest = update_index(catalog, model_version="1", folder=folder)
            assert [r.getMessage() for r in caplog.records if "does not match the catalog" in r.getMessage()], name
            expected = 49 if name == "catalog" else 50
            assert (len(index), manifest.count, manifest.model_version) == (expected, expected, "1"), name


def _delete_one(catalog: Catalog) -> None:
    import sqlalchemy as sa

    from genretag.tagging.schema import catalog_tags

    with catalog.engine.begin() as connection:
        connection.execute(sa.delete(catalog_tags).where(catalog_tags.c.sha256 == _sha(3, "1")))


def test_rows_of_two_model_versions_are_never_mixed(catalog_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    base, query = _planted(rng, 60)
    with Catalog(catalog_url) as catalog:
        _fill(catalog, base, version="1")
        _fill(catalog, np.vstack([query[None, :]] * 5), version="2", start=1000)  # version 2: exactly the query, five times
        for exact_below in (10**9, 0):
            found = similar(catalog, model_version="1", embedding=query, k=60, exact_below=exact_below, index_folder=tmp_path / "ix")
            assert len(found.neighbours) == 60 and {n.sha256 for n in found.neighbours} == {_sha(i, "1") for i in range(60)}
            other = similar(catalog, model_version="2", embedding=query, k=10, exact_below=exact_below, index_folder=tmp_path / "ix")
            assert {n.sha256 for n in other.neighbours} == {_sha(1000 + i, "2") for i in range(5)}
    assert read_manifest(index_paths(tmp_path / "ix", "1")[1]).count == 60
    assert read_manifest(index_paths(tmp_path / "ix", "2")[1]).count == 5


def test_similar_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_root(tmp_path / "project")
    monkeypatch.chdir(root)
    for name in ("GENRETAG_CATALOG_URL", "GENRETAG_ROOT", "GENRETAG_PARAMS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "music"
    make_good_files(folder)
    model = make_onnx_model(tmp_path / "v1.onnx", version="1")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    tag_catalog(folder, model=open_model(model, prefer_gpu=False), database_url=url, max_windows=4, batch_size=8, workers=1)
    assert read_manifest(index_paths(tmp_path / "catalog.db.index", "1")[1]).count == 5  # the tagging run's last step built it
    runner = CliRunner()
    song = folder / "a" / "sine220.wav"

    answer = runner.invoke(app, ["similar", str(song), "--k", "3", "--model-version", "1", "--json", "--database", url])
    assert answer.exit_code == 0, answer.output
    parsed = json.loads(answer.stdout)
    assert (parsed["model_version"], parsed["method"], len(parsed["neighbours"])) == ("1", "exact", 3)
    assert str(song) not in [n["path"] for n in parsed["neighbours"]]

    text = runner.invoke(app, ["similar", str(song), "--model", str(model), "--database", url])
    assert text.exit_code == 0 and len(text.stdout.strip().splitlines()) == 4, text.output

    unknown = folder.parent / "new.wav"
    write_audio(unknown, tone(5.0, frequency=500.0, seed=9))
    no_model = runner.invoke(app, ["similar", str(unknown), "--database", url])  # score.model is champion; no registry here
    assert no_model.exit_code == 1
    assert len(no_model.output.strip().splitlines()) == 1 and "genretag tag-catalog" in no_model.output, no_model.output
    scored = runner.invoke(app, ["similar", str(unknown), "--model", str(model), "--json", "--database", url])
    assert scored.exit_code == 0, scored.output
    assert len(json.loads(scored.stdout)["neighbours"]) == 5


def test_a_model_whose_metadata_misstates_its_embedding_dimension_is_refused(tmp_path: Path) -> None:
    from genretag.core.errors import ScoringError

    path = make_onnx_model(tmp_path / "m.onnx", version="1")
    proto = onnx.load(str(path))
    contract = read_contract(path)
    onnx.save(write_contract(proto, ModelContract(**{**contract.__dict__, "embedding_dim": 17, "embedding_dtype": "float16"})), str(path))
    with pytest.raises(ScoringError, match="16-d embedding but its metadata"):
        open_model(path, prefer_gpu=False)
