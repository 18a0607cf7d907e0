"""The nearest catalog tracks of a track, by one model version's track embeddings (cosine distance = 1 - cos).

:func:`similar` is the Python API of ``genretag similar``. The query is a track the catalog holds (by
SHA-256) or an embedding (a file scored on the fly: :func:`embed_file`). Only ``model_version``'s rows
are searched, never a mix of versions: embeddings of different models are not comparable. Below
``exact_below`` embeddings the search is exact (numpy, every row); above, it goes through the version's
usearch index (:func:`genretag.similarity.index.update_index`, which first brings the index up to date
or rebuilds it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from genretag.core.errors import ScoringError
from genretag.onnx.session import ScoringModel
from genretag.similarity.embeddings import embedding_stats, iter_embeddings, unit
from genretag.similarity.index import update_index
from genretag.tagging.rows import decode_embedding
from genretag.tagging.scoring import score_files
from genretag.tagging.schema import catalog_tags
from genretag.tagging.store import Catalog


@dataclass(frozen=True)
class Neighbour:
    """One similar track: its tag row's identity and tags, and its cosine distance (0: same direction, 2: opposite)."""

    sha256: str
    path: str
    genre: str
    confidence: float
    top3: list[dict[str, Any]]
    distance: float


@dataclass(frozen=True)
class SimilarTracks:
    """The answer: the query, the model version searched, how (``exact`` or ``index``), and the neighbours, nearest first."""

    query: str
    model_version: str
    method: str
    searched: int  # embeddings of the version searched (of ``genre`` only when given, exact search)
    neighbours: list[Neighbour]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def query_embedding(catalog: Catalog, *, sha256: str, model_version: str) -> tuple[np.ndarray, str, int] | None:
    """(unit embedding float32 [D], full SHA-256, row id) of the track ``sha256`` (or its prefix) as ``model_version``
    tagged it; None when that version holds no embedding of it. Raises ScoringError for an ambiguous prefix."""
    query = (sa.select(catalog_tags.c.id, catalog_tags.c.sha256, catalog_tags.c.embedding, catalog_tags.c.embedding_dtype)
             .where(catalog_tags.c.model_version == model_version, catalog_tags.c.embedding.is_not(None),
                    catalog_tags.c.sha256.startswith(sha256.lower(), autoescape=True)).limit(2))
    with catalog.engine.connect() as connection:
        rows = connection.execute(query).all()
    if len(rows) > 1:
        raise ScoringError(f"sha256 {sha256} matches several tracks: give more of its digits")
    if not rows:
        return None
    row_id, full, blob, dtype = rows[0]
    return unit(decode_embedding(blob, dtype=dtype)[None, :])[0], full, row_id


def embed_file(model: ScoringModel, path: str | Path, *, max_windows: int = 20, silence_rms_dbfs: float = -60.0) -> np.ndarray:
    """A file the catalog does not hold, scored here as the tagger scores it (genretag.tagging.scoring.score_files):
    its track embedding, the mean of its scored windows' embeddings, float32 [D]. Raises ScoringError when it cannot be scored."""
    result = next(score_files(model, [(str(path), path)], max_windows=max_windows, workers=1, parallel=False,
                              silence_rms_dbfs=silence_rms_dbfs))
    if result.track_embedding is None:
        raise ScoringError(f"{path}: cannot be scored ({result.error or 'no window scored'})")
    return result.track_embedding.astype(np.float32)


def similar(
    catalog: Catalog,
    *,
    model_version: str,
    sha256: str | None = None,
    embedding: np.ndarray | None = None,
    k: int = 10,
    genre: str | None = None,
    exact_below: int = 20000,
    index_folder: Path | None = None,
) -> SimilarTracks:
    """The ``k`` catalog tracks nearest (cosine) to the track ``sha256`` of the catalog, or to ``embedding`` (float [D]),
    among ``model_version``'s tag rows (of ``genre`` only, when given), nearest first; the query track itself is left out.

    Exact below ``exact_below`` embeddings of the version (or without ``index_folder``), else through its index.
    Raises ScoringError when the query is neither given nor tagged by ``model_version``, or its dimension differs.
    """
    if (sha256 is None) == (embedding is None):
        raise ScoringError("similar: give the query as a catalog sha256 or as an embedding, one of them")
    exclude = -1
    if sha256 is not None:
        found = query_embedding(catalog, sha256=sha256, model_version=model_version)
        if found is None:
            raise ScoringError(f"sha256 {sha256}: no embedding of it tagged by model version {model_version} in the catalog")
        vector, label, exclude = found
    else:
        vector, label = unit(np.asarray(embedding, np.float32)[None, :])[0], "embedding"
    count, _ = embedding_stats(catalog, model_version=model_version)
    if count < exact_below or index_folder is None:
        ids, distances, searched = _exact(catalog, vector, model_version=model_version, k=k, genre=genre, exclude=exclude)
        method = "exact"
    else:
        ids, distances = _indexed(catalog, vector, model_version=model_version, k=k, genre=genre, exclude=exclude,
                                  folder=index_folder, count=count)
        method, searched = "index", count
    return SimilarTracks(query=label, model_version=model_version, method=method, searched=searched,
                         neighbours=_neighbours(catalog, ids, distances))


def _check_dim(vector: np.ndarray, dim: int, *, model_version: str) -> None:
    if len(vector) != dim:
        raise ScoringError(f"the query embedding has {len(vector)} dimensions, model version {model_version}'s catalog embeddings {dim}")


def _exact(catalog: Catalog, vector: np.ndarray, *, model_version: str, k: int, genre: str | None, exclude: int):
    """Brute force over every embedding of the version, in chunks: (ids, distances, rows searched)."""
    best_ids, best_distances, searched = np.zeros(0, np.int64), np.zeros(0, np.float32), 0
    for part in iter_embeddings(catalog, model_version=model_version, genre=genre):
        _check_dim(vector, part.vectors.shape[1], model_version=model_version)
        keep = part.ids != exclude
        ids = np.concatenate([best_ids, part.ids[keep]])
        distances = np.concatenate([best_distances, 1.0 - part.vectors[keep] @ vector])
        order = np.argsort(distances, kind="stable")[:k]
        best_ids, best_distances, searched = ids[order], distances[order], searched + len(part)
    return best_ids, best_distances, searched


def _indexed(catalog: Catalog, vector: np.ndarray, *, model_version: str, k: int, genre: str | None, exclude: int,
             folder: Path, count: int):
    """Through the version's usearch index; with ``genre``, asks for more neighbours until k of that genre are found."""
    index, _ = update_index(catalog, model_version=model_version, folder=folder)
    _check_dim(vector, index.ndim, model_version=model_version)
    fetch = k + 1 if genre is None else 4 * k
    while True:
        # ask the graph search to look at least as wide as the answer it must give (usearch: expansion_search)
        index.expansion_search = max(index.expansion_search, min(fetch, count))
        matches = index.search(vector, min(fetch, count))
        ids, distances = np.asarray(matches.keys, np.int64), np.asarray(matches.distances, np.float32)
        keep = ids != exclude
        if genre is not None:
            keep &= np.isin(ids, _of_genre(catalog, ids, genre))
        if keep.sum() >= k or fetch >= count:
            return ids[keep][:k], distances[keep][:k]
        fetch *= 4


def _of_genre(catalog: Catalog, ids: np.ndarray, genre: str) -> np.ndarray:
    query = sa.select(catalog_tags.c.id).where(catalog_tags.c.id.in_([int(i) for i in ids]), catalog_tags.c.genre == genre)
    with catalog.engine.connect() as connection:
        return np.array(list(connection.scalars(query)), np.int64)


def _neighbours(catalog: Catalog, ids: np.ndarray, distances: np.ndarray) -> list[Neighbour]:
    if not len(ids):
        return []
    query = sa.select(catalog_tags.c.id, catalog_tags.c.sha256, catalog_tags.c.path, catalog_tags.c.genre,
                      catalog_tags.c.confidence, catalog_tags.c.top3).where(catalog_tags.c.id.in_([int(i) for i in ids]))
    with catalog.engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(query)}
    return [Neighbour(sha256=rows[i].sha256, path=rows[i].path, genre=rows[i].genre, confidence=float(rows[i].confidence),
                      top3=json.loads(rows[i].top3), distance=max(0.0, float(d)))
            for i, d in zip(ids.tolist(), distances.tolist(), strict=True) if i in rows]
