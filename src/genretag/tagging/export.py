"""Export the catalog's tags to CSV or Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from genretag.core.atomic import atomic_path, write_csv
from genretag.core.errors import ScoringError
from genretag.core.paths import display
from genretag.tagging.store import Catalog


def export_tags(
    database_url: str,
    *,
    out: str | Path,
    fmt: Literal["csv", "parquet"] = "csv",
    model_version: str | None = None,
    table: Literal["catalog_tags", "catalog_skips"] = "catalog_tags",
) -> int:
    """Write catalog_tags (optionally one model version), or catalog_skips (every file and folder a run
    skipped, with its reason and run id), to CSV or Parquet, atomically; return rows."""
    if fmt not in ("csv", "parquet"):
        raise ScoringError(f"export format must be csv or parquet, not {fmt!r}")
    with Catalog(database_url) as catalog:
        frame = catalog.read(table, model_version=model_version if table == "catalog_tags" else None)
    try:
        if fmt == "csv":
            write_csv(out, frame)
        else:
            with atomic_path(out) as tmp:
                frame.to_parquet(tmp, index=False)
    except OSError as exc:
        raise ScoringError(f"cannot write {display(out)}: {exc.strerror or exc}") from exc
    return len(frame)
