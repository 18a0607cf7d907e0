"""One commit of scoring results to the catalog: their rows, written in one transaction, and what it wrote."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genretag.evaluation.drift import InputStats
from genretag.tagging.rows import embedding_dtype, error_row, tag_row
from genretag.tagging.sources import HashedTrack, TrackFailure
from genretag.tagging.store import Catalog, WriteCounts


@dataclass(frozen=True)
class WriteOutcome:
    """What one commit of results wrote."""

    counts: WriteCounts
    genres: tuple[str, ...]
    windows_scored: int
    windows_silent: int
    failures: tuple[TrackFailure, ...]
    audio: tuple[InputStats, ...] = ()  # input statistics of the tracks tagged
    embedding_sum: Any = None  # float64 [D] over their scored windows (None: nothing tagged)
    confidences: tuple[float, ...] = ()  # the top-1 probability of each track tagged


def write_results(catalog: Catalog, results: Sequence[Any], *, model: Any, review_below: float,
                  run_id: str | None = None) -> WriteOutcome:
    """Write genretag.tagging.scoring.ScoredTrack results (their keys are HashedTracks) in one commit
    (``review_below``: :func:`tag_row`; ``run_id``: the tagging run's id, on each tag row); each tag row keeps its
    track embedding, the mean of its scored windows' embeddings, in the model's storage dtype (:func:`embedding_dtype`)."""
    tags, errors, failures, audio, embedding_sums = [], [], [], [], []
    dtype = embedding_dtype(model.contract)
    for result in results:
        track: HashedTrack = result.key
        if result.score is None:
            failures.append(TrackFailure(track.track_id, track.path, track.sha256, result.error))
            errors.append(error_row(track.track_id, track.path, track.sha256, result.error, model_version=model.model_version))
        else:
            tags.append(tag_row(track, result.score, model_name=model.model_name, model_version=model.model_version,
                                provider=model.provider, contract_version=model.contract_version, review_below=review_below,
                                audio=result.audio, run_id=run_id, embedding_dtype=dtype,
                                embedding=result.track_embedding))
            audio += [result.audio] if result.audio else []
            embedding_sums += [result.embedding_sum] if result.embedding_sum is not None else []
    counts = catalog.write(tags, errors)
    return WriteOutcome(
        counts=counts,
        genres=tuple(row["genre"] for row in tags),
        windows_scored=sum(row["windows_scored"] for row in tags),
        windows_silent=sum(row["windows_silent"] for row in tags),
        failures=tuple(failures),
        audio=tuple(audio),
        embedding_sum=sum(embedding_sums[1:], embedding_sums[0]) if embedding_sums else None,
        confidences=tuple(float(row["confidence"]) for row in tags),
    )
