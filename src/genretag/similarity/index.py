"""The similarity index of one model version: a usearch HNSW graph over its catalog track embeddings.

Stored beside the catalog (:func:`index_folder`) as ``<model_version>.usearch`` and a JSON manifest
``<model_version>.json`` (model version, count, last catalog id, dim, metric, dtype, library, built_at),
both written atomically, the index first. :func:`update_index` (the tagging run's last step, and every
search above ``similar.exact_below``) adds the rows tagged since the manifest's last id; an index whose
manifest, file, version, dimension or count does not match the catalog is rebuilt from scratch, with
one log line saying why. usearch (Vardanian, github.com/unum-cloud/usearch) was chosen by
bench/similarity.py: see the README's similarity section.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from genretag.core.atomic import atomic_path, write_json
from genretag.core.config import layout
from genretag.core.errors import CatalogError
from genretag.similarity.embeddings import embedding_stats, iter_embeddings
from genretag.tagging.store import Catalog

log = logging.getLogger(__name__)

METRIC = "cos"
DTYPE = "f16"  # vectors held as float16 in the graph: half the memory, recall measured in bench/similarity.py
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 64  # HNSW M, ef_construction, ef_search (bench/similarity.py)


@dataclass(frozen=True)
class IndexManifest:
    """What an index file holds: ``count`` embeddings of ``model_version``, catalog ids up to ``last_id``."""

    model_version: str
    count: int
    last_id: int
    dim: int
    metric: str = METRIC
    dtype: str = DTYPE
    library: str = ""
    built_at: str = ""


def index_folder(database_url: str, *, index_dir: str | None = None, root: Path | None = None) -> Path:
    """Where the catalog's similarity indexes live: ``index_dir`` (params ``similar.index_dir``; relative: to the
    project root), else ``<catalog file>.index`` beside a SQLite catalog, else ``<project root>/catalog.index/<database name>``."""
    if index_dir:
        folder = Path(index_dir).expanduser()
        return folder if folder.is_absolute() else layout(root).root / folder
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).with_name(Path(url.database).name + ".index")
    return layout(root).root / "catalog.index" / re.sub(r"[^A-Za-z0-9._-]", "_", f"{url.host or 'local'}-{url.database or 'db'}")


def index_paths(folder: Path, model_version: str) -> tuple[Path, Path]:
    """(index file, manifest) of ``model_version`` in ``folder``; the version made safe as a file name."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", model_version)
    return folder / f"{stem}.usearch", folder / f"{stem}.json"


def _new_index(dim: int):
    from usearch.index import Index

    return Index(ndim=dim, metric=METRIC, dtype=DTYPE, connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                 expansion_search=EXPANSION_SEARCH)


def _library() -> str:
    import usearch

    return f"usearch {usearch.__version__}"


def read_manifest(path: Path) -> IndexManifest | None:
    """The manifest at ``path``; None when missing or unreadable (the index is then rebuilt)."""
    try:
        return IndexManifest(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _load(index_file: Path, manifest: IndexManifest | None, *, model_version: str, catalog: Catalog):
    """(the stored index, "") when it matches the catalog, else (None, why not)."""
    from usearch.index import Index

    if manifest is None:
        return None, "no readable manifest"
    if manifest.model_version != model_version:
        return None, f"manifest is of model version {manifest.model_version}"
    if not index_file.is_file():
        return None, f"no index file {index_file.name}"
    try:
        index = Index.restore(str(index_file))
    except (RuntimeError, ValueError, OSError) as exc:
        return None, f"unreadable index file ({exc})"
    if index is None or index.ndim != manifest.dim or len(index) != manifest.count:
        return None, f"index file holds {0 if index is None else len(index)} vectors, manifest says {manifest.count}"
    stored, _ = embedding_stats(catalog, model_version=model_version, up_to_id=manifest.last_id)
    if stored != manifest.count:
        return None, f"index holds {manifest.count} embeddings, the catalog {stored} up to id {manifest.last_id}"
    return index, ""


def update_index(catalog: Catalog, *, model_version: str, folder: Path):
    """Bring ``model_version``'s index in ``folder`` up to date with the catalog; return (index, manifest).

    Adds the embeddings tagged since the manifest's last id; rebuilds from scratch (one warning line saying
    why) when the stored index does not match the catalog. Returns (None, None) when the version has no
    embedding. Raises CatalogError when the index cannot be written.
    """
    index_file, manifest_file = index_paths(folder, model_version)
    count, last_id = embedding_stats(catalog, model_version=model_version)
    if count == 0:
        return None, None
    manifest = read_manifest(manifest_file)
    index, problem = _load(index_file, manifest, model_version=model_version, catalog=catalog)
    if index is None:
        if manifest_file.exists() or index_file.exists():
            log.warning("similarity index %s does not match the catalog (%s): rebuilding it", index_file, problem)
        after = 0
    elif manifest.last_id == last_id:
        return index, manifest
    else:
        after = manifest.last_id
    added = 0
    for part in iter_embeddings(catalog, model_version=model_version, after_id=after):
        if index is None:
            index = _new_index(part.vectors.shape[1])
        if part.vectors.shape[1] != index.ndim:
            raise CatalogError(f"catalog_tags of model version {model_version}: {part.vectors.shape[1]}-d embeddings, index {index.ndim}-d")
        # one thread: the graph then depends only on the insertion order, so an incremental add builds the
        # same index as a full build of the same rows (usearch's parallel add races on the neighbour lists)
        index.add(part.ids.astype(np.uint64), part.vectors, threads=1)
        added += len(part)
    manifest = IndexManifest(model_version=model_version, count=len(index), last_id=last_id, dim=index.ndim,
                             library=_library(), built_at=datetime.now(UTC).isoformat(timespec="seconds"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(index_file) as tmp:
            index.save(str(tmp))
        write_json(manifest_file, asdict(manifest))
    except OSError as exc:
        raise CatalogError(f"similarity index {index_file}: cannot write it ({exc.strerror or exc})") from exc
    log.info("similarity index %s: %d embeddings (%d %s)", index_file, len(index), added, "added" if after else "indexed")
    return index, manifest
