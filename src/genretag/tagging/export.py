"""Export the catalog's tags to CSV or Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from genretag.core.atomic import atomic_path, write_csv
from genretag.core.errors import ScoringError
from genretag.core.paths import display
from genretag.onnx.contract import UNKNOWN
from genretag.tagging.store import Catalog


def export_tags(
    database_url: str,
    *,
    out: str | Path,
    fmt: Literal["csv", "parquet"] = "csv",
    model_version: str | None = None,
) -> int:
    """Write catalog_tags (optionally one model version) to CSV or Parquet, atomically; return rows. A boolean
    column ``unknown`` marks the tags that are none of the model's genres (genre ``unknown``, see
    :func:`genretag.tagging.rows.is_unknown`): never use their genre as a tag."""
    if fmt not in ("csv", "parquet"):
        raise ScoringError(f"export format must be csv or parquet, not {fmt!r}")
    with Catalog(database_url) as catalog:
        frame = catalog.read("catalog_tags", model_version=model_version)
    frame["unknown"] = frame["genre"] == UNKNOWN
    try:
        if fmt == "csv":
            write_csv(out, frame)
        else:
            with atomic_path(out) as tmp:
                frame.to_parquet(tmp, index=False)
    except OSError as exc:
        raise ScoringError(f"cannot write {display(out)}: {exc.strerror or exc}") from exc
    return len(frame)
