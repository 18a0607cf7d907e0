"""Export the catalog's tags to CSV or Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import base64

from genretag.core.atomic import atomic_path, write_csv
from genretag.core.errors import ScoringError
from genretag.core.paths import display
from genretag.tagging.rows import decode_embedding
from genretag.tagging.store import Catalog


def export_tags(
    database_url: str,
    *,
    out: str | Path,
    fmt: Literal["csv", "parquet"] = "csv",
    model_version: str | None = None,
    include_embedding: bool = False,
) -> int:
    """Write catalog_tags (optionally one model version) to CSV or Parquet, atomically; return rows.

    The track embedding is left out unless ``include_embedding``: then CSV holds its stored bytes in
    base64 (little-endian ``embedding_dtype``, genretag.tagging.rows.encode_embedding) and Parquet a list
    of float32 per row (fixed size within a model version); rows without one hold an empty value.
    """
    if fmt not in ("csv", "parquet"):
        raise ScoringError(f"export format must be csv or parquet, not {fmt!r}")
    with Catalog(database_url) as catalog:
        frame = catalog.read("catalog_tags", model_version=model_version)
    if not include_embedding:
        frame = frame.drop(columns=["embedding", "embedding_dtype"])
    elif fmt == "csv":
        frame["embedding"] = [base64.b64encode(blob).decode("ascii") if blob is not None else "" for blob in frame["embedding"]]
    else:
        frame["embedding"] = [decode_embedding(blob, dtype=dtype) if blob is not None else None
                              for blob, dtype in zip(frame["embedding"], frame["embedding_dtype"], strict=True)]
    try:
        if fmt == "csv":
            write_csv(out, frame)
        else:
            with atomic_path(out) as tmp:
                frame.to_parquet(tmp, index=False)
    except OSError as exc:
        raise ScoringError(f"cannot write {display(out)}: {exc.strerror or exc}") from exc
    return len(frame)
