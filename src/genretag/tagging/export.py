"""Export the catalog's tags (or its named skips, catalog_skips): CSV, Parquet with native types, or JSON Lines.

Every row carries ``model_version`` (the model's registry version), ``run_id`` (the tagging run that
wrote it; empty for rows written before runs had ids) and ``run`` (that run's catalog_runs.run:
``prefect:<flow run id>`` or ``cli``). ``path_bytes`` holds a file name's exact bytes only where the
name is not UTF-8 (genretag.core.paths): for a catalog of UTF-8 names it is empty in every row, by design.

Parquet (pyarrow): ``top3`` list<struct<genre: string, probability: double>>; ``probabilities``
map<string, double>; ``window_probabilities`` struct<labels: list<string>, start_s: list<double>,
probabilities: list<list<double>>>; ``embedding`` (when the catalog has that column) fixed_size_list<float>[D];
``path_bytes`` binary; times timestamp[us, UTC]. JSON Lines (``jsonl``; ``json`` is the same JSON Lines,
one object per line, not an array): the same values as JSON, ``path_bytes`` as hex, times ISO 8601.
CSV keeps the JSON text columns and writes ``path_bytes`` as hex.

The track embedding (``embedding``, ``embedding_dtype``) is exported only with ``include_embedding``:
Parquet and JSON as floats (decoded from the stored float16 or float32 bytes), CSV as base64 of the
stored little-endian bytes (genretag.tagging.rows.encode_embedding; ``embedding_dtype`` says which).

The target's folder must exist and be writable (checked before the catalog is read); the file is written
atomically, so a failed export leaves no partial file.
"""

from __future__ import annotations

import base64
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from genretag.core.atomic import atomic_open, atomic_path, write_csv
from genretag.core.errors import ScoringError
from genretag.core.paths import display
from genretag.onnx.contract import UNKNOWN
from genretag.tagging.rows import decode_embedding
from genretag.tagging.store import Catalog

ExportFormat = Literal["csv", "parquet", "jsonl", "json"]
FORMATS: tuple[str, ...] = ("csv", "parquet", "jsonl", "json")
EMBEDDING = "embedding"  # the catalog_tags column of per-track embeddings, once the catalog has one


def check_target(out: str | Path) -> Path:
    """``out`` as a Path when its folder exists and is writable; else ScoringError naming the file and the reason."""
    target = Path(out)
    folder = target.parent
    if target.is_dir():
        raise ScoringError(f"cannot write {display(target)}: it is a folder (name a file)")
    if not folder.is_dir():
        raise ScoringError(f"cannot write {display(target)}: folder {display(folder)} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ScoringError(f"cannot write {display(target)}: folder {display(folder)} is not writable")
    return target


def _embedding_values(value: Any) -> list[float] | None:
    """One stored embedding as floats: float32 bytes, JSON text or a sequence; None when absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(value), dtype="<f4").tolist()
    if isinstance(value, str):
        return [float(v) for v in json.loads(value)]
    return [float(v) for v in value]


def native_row(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog_tags row (a dict) with its JSON text columns parsed: top3 a list of {genre, probability},
    probabilities a dict, window_probabilities a dict (or None), embedding a list of floats (or None);
    missing values (NaN, NaT) None. Other keys (error rows' columns) pass as they are."""
    row = dict(row)
    for key in ("top3", "probabilities", "window_probabilities"):
        if key in row:
            row[key] = json.loads(row[key]) if isinstance(row[key], str) and row[key] else None
    if EMBEDDING in row:
        row[EMBEDDING] = _embedding_values(row[EMBEDDING])
    for key, value in row.items():
        if value is not None and not isinstance(value, (list, dict, bytes)) and pd.isna(value):
            row[key] = None
    return row


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """:func:`native_row` as JSON values: ``path_bytes`` hex, times ISO 8601, numpy scalars plain."""
    return {key: _json_value(value) for key, value in native_row(row).items()}


def _native(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [native_row(row) for row in frame.to_dict("records")]


def parquet_table(frame: pd.DataFrame):
    """A pyarrow Table of catalog_tags rows (with run) in native types (module docstring)."""
    import pyarrow as pa

    rows = _native(frame)
    nested = {
        "top3": pa.list_(pa.struct([("genre", pa.string()), ("probability", pa.float64())])),
        "probabilities": pa.map_(pa.string(), pa.float64()),
        "window_probabilities": pa.struct([("labels", pa.list_(pa.string())), ("start_s", pa.list_(pa.float64())),
                                           ("probabilities", pa.list_(pa.list_(pa.float64())))]),
        "path_bytes": pa.binary(),
        "scored_at": pa.timestamp("us", tz="UTC"),
    }
    if EMBEDDING in frame.columns:
        width = next((len(r[EMBEDDING]) for r in rows if r[EMBEDDING] is not None), 0)
        nested[EMBEDDING] = pa.list_(pa.float32(), width)
    columns = {}
    for name in frame.columns:
        values = [row[name] for row in rows]
        if name == "probabilities":
            values = [None if v is None else list(v.items()) for v in values]
        if name in nested:
            columns[name] = pa.array(values, type=nested[name])
        else:
            columns[name] = pa.array(values, from_pandas=True)
    return pa.table(columns)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _with_embedding(frame: pd.DataFrame, *, include: bool, fmt: str) -> pd.DataFrame:
    """The frame without the embedding columns, or with ``embedding`` as floats (base64 of the stored bytes for CSV)."""
    if not include:
        return frame.drop(columns=[EMBEDDING, "embedding_dtype"], errors="ignore")
    blobs, dtypes = frame[EMBEDDING], frame["embedding_dtype"]
    if fmt == "csv":
        return frame.assign(**{EMBEDDING: [base64.b64encode(b).decode("ascii") if b is not None else "" for b in blobs]})
    return frame.assign(**{EMBEDDING: [decode_embedding(b, dtype=d).tolist() if b is not None else None
                                       for b, d in zip(blobs, dtypes, strict=True)]})


def export_tags(
    database_url: str,
    *,
    out: str | Path,
    fmt: ExportFormat = "csv",
    model_version: str | None = None,
    include_embedding: bool = False,
    table: Literal["catalog_tags", "catalog_skips"] = "catalog_tags",
) -> int:
    """Write catalog_tags (optionally one model version), each row with its run, to ``out`` in ``fmt``
    (module docstring), atomically; return the rows written. A boolean column ``unknown`` marks the tags that
    are none of the model's genres (genre ``unknown``, :func:`genretag.tagging.rows.is_unknown`): never use their genre as a tag.
    With ``table="catalog_skips"``: every file and folder a run skipped, with its reason and run, instead. Raises
    ScoringError (one line) for an unknown format, a target whose folder is missing or not writable, or a failed
    write (no file left)."""
    if fmt not in FORMATS:
        raise ScoringError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    target = check_target(out)
    with Catalog(database_url) as catalog:
        frame = catalog.read(table, model_version=model_version if table == "catalog_tags" else None)
        runs = catalog.read("catalog_runs")[["run_id", "run"]].dropna(subset=["run_id"])
    if table == "catalog_tags":
        frame = _with_embedding(frame, include=include_embedding, fmt=fmt)
    frame = frame.merge(runs, on="run_id", how="left")
    if table == "catalog_tags":
        frame["unknown"] = frame["genre"] == UNKNOWN
    try:
        if fmt == "csv":
            write_csv(target, frame.assign(path_bytes=frame["path_bytes"].map(lambda b: b.hex() if isinstance(b, bytes) else None)))
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            arrow = parquet_table(frame)
            with atomic_path(target) as tmp:
                pq.write_table(arrow, tmp)
        else:
            with atomic_open(target, "w", encoding="utf-8") as handle:
                for row in frame.to_dict("records"):
                    handle.write(json.dumps(json_row(row), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ScoringError(f"cannot write {display(target)}: {exc.strerror or exc}") from exc
    return len(frame)
