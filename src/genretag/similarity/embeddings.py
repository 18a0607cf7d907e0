"""One model version's track embeddings from the catalog (catalog_tags.embedding), read in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from genretag.core.errors import CatalogError
from genretag.tagging.rows import decode_embedding
from genretag.tagging.schema import catalog_tags
from genretag.tagging.store import Catalog

CHUNK = 20_000  # rows per read: 20,000 x 1,506 float32 is 120 MB


@dataclass(frozen=True)
class Embeddings:
    """``ids`` int64 [n] (catalog_tags.id) and unit-norm ``vectors`` float32 [n, D] of one model version."""

    ids: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero): cosine similarity becomes a dot product."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _with_embedding(model_version: str) -> sa.ColumnElement[bool]:
    return sa.and_(catalog_tags.c.model_version == model_version, catalog_tags.c.embedding.is_not(None))


def embedding_stats(catalog: Catalog, *, model_version: str, up_to_id: int | None = None) -> tuple[int, int]:
    """(rows with an embedding, their largest id; 0 when none) of ``model_version``, optionally only ids <= ``up_to_id``."""
    where = _with_embedding(model_version)
    if up_to_id is not None:
        where = sa.and_(where, catalog_tags.c.id <= up_to_id)
    with catalog.engine.connect() as connection:
        count, last = connection.execute(sa.select(sa.func.count(), sa.func.max(catalog_tags.c.id)).where(where)).one()
    return int(count), int(last or 0)


def iter_embeddings(catalog: Catalog, *, model_version: str, after_id: int = 0, genre: str | None = None,
                    chunk: int = CHUNK) -> Iterator[Embeddings]:
    """``model_version``'s embeddings with id > ``after_id`` (and of ``genre`` when given), in id order, ``chunk`` rows at a time.

    Raises CatalogError when rows of one version disagree on the dimension.
    """
    where = sa.and_(_with_embedding(model_version), catalog_tags.c.id > after_id)
    if genre is not None:
        where = sa.and_(where, catalog_tags.c.genre == genre)
    dim = 0
    last = after_id
    with catalog.engine.connect() as connection:
        while True:
            query = (sa.select(catalog_tags.c.id, catalog_tags.c.embedding, catalog_tags.c.embedding_dtype)
                     .where(where, catalog_tags.c.id > last).order_by(catalog_tags.c.id).limit(chunk))
            rows = connection.execute(query).all()
            if not rows:
                return
            vectors = [decode_embedding(blob, dtype=dtype) for _, blob, dtype in rows]
            dims = {len(v) for v in vectors} | ({dim} if dim else set())
            if len(dims) > 1:
                raise CatalogError(f"catalog_tags of model version {model_version}: embeddings of {sorted(dims)} dimensions")
            dim = dims.pop()
            last = rows[-1][0]
            yield Embeddings(np.array([r[0] for r in rows], np.int64), unit(np.stack(vectors)))


def read_embeddings(catalog: Catalog, *, model_version: str, after_id: int = 0, genre: str | None = None) -> Embeddings:
    """All of :func:`iter_embeddings` at once (ids empty, vectors [0, 0] when none)."""
    parts = list(iter_embeddings(catalog, model_version=model_version, after_id=after_id, genre=genre))
    if not parts:
        return Embeddings(np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    return Embeddings(np.concatenate([p.ids for p in parts]), np.concatenate([p.vectors for p in parts]))
