"""The catalog's rows: a tag row of a scored track (with its window timeline), an error row of a failure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np

from genretag.core.errors import CatalogError
from genretag.core.paths import display, exact_bytes
from genretag.evaluation.drift import InputStats
from genretag.onnx.contract import UNKNOWN
from genretag.tagging.sources import HashedTrack


def now_utc() -> datetime:
    """The time now, timezone-aware UTC (every catalog timestamp)."""
    return datetime.now(UTC)


DEFAULT_EMBEDDING_DTYPE = "float32"
"""The catalog's default storage dtype of a track embedding: used for a model whose metadata states none
(exported before ``genretag.embedding``, genretag.onnx.contract.KEY_EMBEDDING)."""


def embedding_dtype(contract: Any) -> str:
    """The dtype a model's tag rows store its track embeddings in: its contract's, else the catalog default."""
    return getattr(contract, "embedding_dtype", "") or DEFAULT_EMBEDDING_DTYPE


def encode_embedding(vector: np.ndarray, *, dtype: str) -> bytes:
    """A track embedding float [D] -> little-endian bytes of ``dtype`` ("float16" or "float32"; D x 2 or D x 4 bytes)."""
    return np.asarray(vector).astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def decode_embedding(blob: bytes, *, dtype: str) -> np.ndarray:
    """The catalog's embedding bytes (:func:`encode_embedding`) -> float32 [D].

    Raises CatalogError for a dtype other than float16 or float32, or bytes that are not whole values of it.
    """
    if dtype not in ("float16", "float32"):
        raise CatalogError(f"catalog_tags.embedding_dtype {dtype!r} is not float16 or float32")
    stored = np.dtype(dtype).newbyteorder("<")
    if len(blob) % stored.itemsize:
        raise CatalogError(f"catalog_tags.embedding holds {len(blob)} bytes, not whole {dtype} values")
    return np.frombuffer(blob, dtype=stored).astype(np.float32)


WINDOW_DIGITS = 4  # probabilities in window_probabilities: 1e-4 resolves any share a reviewer reads


def window_timeline(score: Any) -> str:
    """The window_probabilities JSON of a genretag.tagging.scoring.TrackScore: ``{"labels": [K], "start_s": [n]
    seconds, "probabilities": [n][K] rounded to WINDOW_DIGITS}``, one row per scored window (silent ones
    were not scored: their starts are absent)."""
    return json.dumps({
        "labels": list(score.probabilities),
        "start_s": list(score.window_starts_s),
        "probabilities": [[round(p, WINDOW_DIGITS) for p in row] for row in score.window_probabilities],
    }, separators=(",", ":"))


def timeline_lines(window_probabilities: str | None) -> list[str]:
    """A track's genre timeline from its catalog window_probabilities JSON (:func:`window_timeline`):
    one line per scored window, ``m:ss  genre  probability`` of its most probable genre, then the runner-up.
    Empty for rows tagged before timelines were stored (NULL)."""
    if not window_probabilities:
        return []
    timeline = json.loads(window_probabilities)
    labels = timeline["labels"]
    width = max(len(label) for label in labels)
    lines = []
    for start, row in zip(timeline["start_s"], timeline["probabilities"], strict=True):
        first, second = np.argsort(-np.asarray(row), kind="stable")[:2]
        minutes, seconds = divmod(int(start), 60)
        lines.append(f"{minutes:>3}:{seconds:02d}  {labels[first]:<{width}}  {row[first]:.2f}   ({labels[second]} {row[second]:.2f})")
    return lines


def is_unknown(row: Mapping[str, Any]) -> bool:
    """True for a catalog tag (a catalog_tags row, an export row or a TrackScore-like mapping with ``genre``) that is
    none of the model's genres: its genre is ``unknown``. Such a tag must never be written as a genre (file tags,
    playlists, exports): its top3 are the model's guesses, kept for review only."""
    return row.get("genre") == UNKNOWN


def unknown_prefix(genre: str, unknown_score: float | None) -> str:
    """What ``predict``, ``show`` and both handoff clients print before a track's top genres when it is unknown:
    ``"unknown (none of these genres; score S), "``; "" for any other genre."""
    if genre != UNKNOWN:
        return ""
    return f"{UNKNOWN} (none of these genres; score {unknown_score:.4g}), "


def tag_row(
    track: HashedTrack, score: Any, *, model_name: str, model_version: str, provider: str, contract_version: int,
    review_below: float,
    audio: InputStats | None = None,
    run_id: str | None = None,
    embedding: np.ndarray | None = None,
    embedding_dtype: str = DEFAULT_EMBEDDING_DTYPE,
) -> dict[str, Any]:
    """A catalog_tags row for a genretag.tagging.scoring.TrackScore and the track's input statistics; flagged
    needs_review when its confidence is below ``review_below`` (params score.review_below) or it is ``unknown``
    (genre ``unknown``, its out-of-taxonomy score past the model's threshold; top3 kept); ``run_id``: the tagging
    run that wrote it (catalog_runs.run_id). ``embedding`` (float [D], the mean of the scored windows'
    embeddings) is stored as ``embedding_dtype`` bytes."""
    return {
        "run_id": run_id,
        "embedding": None if embedding is None else encode_embedding(embedding, dtype=embedding_dtype),
        "embedding_dtype": None if embedding is None else embedding_dtype,
        "source_sample_rate": audio.source_sample_rate if audio else None,
        "duration_s": audio.duration_s if audio else None,
        "loudness_dbfs": audio.loudness_dbfs if audio else None,
        "track_id": display(track.track_id),
        "path": display(track.path),
        "path_bytes": exact_bytes(track.path),
        "sha256": track.sha256,
        "genre": score.label,
        "confidence": score.confidence,
        "top3": json.dumps([{"genre": g, "probability": p} for g, p in score.top3]),
        "probabilities": json.dumps(score.probabilities),
        "windows_scored": score.windows_scored,
        "windows_silent": score.windows_silent,
        "windows_available": score.windows_available,
        "needs_review": score.confidence < review_below or score.label == UNKNOWN,
        "unknown_score": score.unknown_score,
        "window_probabilities": window_timeline(score),
        "model_name": model_name,
        "model_version": model_version,
        "provider": provider,
        "contract_version": contract_version,
        "scored_at": now_utc(),
    }


def error_row(track_id: str, path: Path | str, sha256: str, reason: str, *, model_version: str) -> dict[str, Any]:
    return {
        "track_id": display(track_id),
        "path": display(path),
        "path_bytes": exact_bytes(path) if str(path) else None,
        "sha256": sha256,
        "reason": display(reason),
        "model_version": model_version,
        "failed_at": now_utc(),
    }
