"""Score decoded tracks with an exported contract-v2 ONNX model: batches pooled across tracks, one
prediction per track (the mean of its windows').

The model is self-describing: labels, sample rate and clip length come from its metadata
(:mod:`genretag.onnx.contract`), never from params.yaml. The windows' waveforms go into the graph, which
holds the whole preprocessing (nothing here computes spectrograms). Decoding runs in worker
processes (:mod:`genretag.tagging.decode_pool`) while the calling process feeds the session large
batches, so a GPU is not left waiting on one CPU core.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genretag.core.config import worker_count
from genretag.evaluation.drift import InputStats
from genretag.onnx.contract import UNKNOWN, OpenSet
from genretag.onnx.session import ScoringModel
from genretag.tagging.decode_pool import DecodedTrack, decode_files
from genretag.tagging.windows import TrackWindows, track_windows, window_seconds


@dataclass(frozen=True)
class TrackScore:
    """One track's prediction: the mean of its scored windows' probabilities; ``label`` is the most probable
    genre, or ``unknown`` when the track's out-of-taxonomy score (the mean of its windows' ``unknown_score``)
    is above the model's threshold (``top3`` and ``confidence`` still those of the genres)."""

    label: str
    confidence: float
    top3: tuple[tuple[str, float], ...]
    probabilities: dict[str, float]
    windows_scored: int  # windows that went into the model (silent ones do not)
    windows_silent: int = 0  # windows skipped as silent
    window_starts_s: tuple[float, ...] = ()  # start (s) of each scored window in the track; () when not known
    window_probabilities: tuple[tuple[float, ...], ...] = ()  # per scored window, in ``probabilities``' label order
    unknown_score: float | None = None  # the track's out-of-taxonomy score (None: the model has none)

    @property
    def unknown(self) -> bool:
        """True when the track is none of the model's genres (label ``unknown``)."""
        return self.label == UNKNOWN


def summarize(
    window_probabilities: np.ndarray, labels: tuple[str, ...], *, windows_silent: int = 0,
    window_starts_s: tuple[float, ...] = (), window_unknown_scores: np.ndarray | None = None,
    open_set: OpenSet = OpenSet.absent(),
) -> TrackScore:
    """Average the windows' probabilities float [n, K]; label = the most probable genre, or ``unknown`` when
    ``open_set`` says the mean of ``window_unknown_scores`` float [n] is past its threshold. The
    per-window rows are kept (the track's genre timeline), with ``window_starts_s`` (n seconds, or
    () when unknown). ValueError when n = 0 or the starts do not match the windows."""
    if len(window_probabilities) == 0:
        raise ValueError("no windows to summarize")
    if window_starts_s and len(window_starts_s) != len(window_probabilities):
        raise ValueError(f"{len(window_starts_s)} window starts for {len(window_probabilities)} windows")
    windows = np.asarray(window_probabilities, dtype=np.float64)
    mean = windows.mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    unknown_score = open_set.track_score(window_unknown_scores)
    return TrackScore(
        label=UNKNOWN if open_set.is_unknown(unknown_score) else labels[order[0]],
        confidence=float(mean[order[0]]),
        top3=tuple((labels[i], float(mean[i])) for i in order[:3]),
        probabilities={label: float(p) for label, p in zip(labels, mean, strict=True)},
        windows_scored=len(window_probabilities),
        windows_silent=windows_silent,
        window_starts_s=tuple(float(s) for s in window_starts_s),
        window_probabilities=tuple(tuple(float(p) for p in row) for row in windows),
        unknown_score=unknown_score,
    )


def score_file(
    model: ScoringModel,
    path: str | Path,
    *,
    max_windows: int = 0,
    silence_rms_dbfs: float = -60.0,
    batch_size: int = 256,
) -> TrackScore:
    """Score one file in this process (AudioError when it cannot be scored)."""
    windows = track_windows(
        path, sample_rate=model.sample_rate, clip_samples=model.clip_samples, max_windows=max_windows,
        silence_rms_dbfs=silence_rms_dbfs,
    )
    prediction = model.predict(windows.waveforms, batch_size=batch_size)
    return summarize(prediction.probabilities, model.labels, windows_silent=windows.silent,
                     window_starts_s=window_seconds(windows, sample_rate=model.sample_rate),
                     window_unknown_scores=prediction.unknown_score, open_set=model.contract.open_set)


@dataclass(frozen=True)
class ScoredTrack:
    """What became of one input: a score, or the reason it has none."""

    key: Hashable
    path: str
    score: TrackScore | None
    error: str = ""
    audio: InputStats | None = None  # the track's input statistics (drift)
    embedding_sum: np.ndarray | None = None  # float64 [D]: sum of the scored windows' embeddings (drift)


def score_decoded(model: ScoringModel, decoded: Iterable[DecodedTrack | None], *, batch_size: int = 256) -> Iterator[ScoredTrack]:
    """Score decoded tracks; yield one ScoredTrack per track as soon as its batch ran.

    Windows of several tracks are pooled into batches of ``batch_size`` for the session. A None
    in ``decoded`` says the next track is still being decoded (``decode_files(announce_waits=True)``):
    the windows at hand are scored then, so the session works while the decoders do instead
    of waiting for a full batch. A track without windows comes back at once with its reason, so
    a failure can overtake tracks still waiting for a batch.
    """
    ready: list[tuple[Hashable, str, TrackWindows]] = []
    ready_windows = 0
    for item in decoded:
        if item is None:
            yield from _score_batch(model, ready, batch_size=batch_size)
            ready, ready_windows = [], 0
            continue
        key, path, windows, reason = item
        if windows is None:
            yield ScoredTrack(key, path, None, reason)
            continue
        ready.append((key, path, windows))
        ready_windows += len(windows.waveforms)
        if ready_windows >= batch_size:
            yield from _score_batch(model, ready, batch_size=batch_size)
            ready, ready_windows = [], 0
    yield from _score_batch(model, ready, batch_size=batch_size)


def _score_batch(model: ScoringModel, tracks: list[tuple[Hashable, str, TrackWindows]], *, batch_size: int) -> Iterator[ScoredTrack]:
    if not tracks:
        return
    prediction = model.predict(np.concatenate([w.waveforms for _, _, w in tracks]), batch_size=batch_size)
    offset = 0
    for key, path, windows in tracks:
        count = len(windows.waveforms)
        unknown = None if prediction.unknown_score is None else prediction.unknown_score[offset : offset + count]
        yield ScoredTrack(key, path, summarize(prediction.probabilities[offset : offset + count], model.labels, windows_silent=windows.silent,
                                               window_starts_s=window_seconds(windows, sample_rate=model.sample_rate),
                                               window_unknown_scores=unknown, open_set=model.contract.open_set),
                          audio=windows.audio, embedding_sum=prediction.embedding[offset : offset + count].sum(axis=0, dtype=np.float64))
        offset += count


def score_files(
    model: ScoringModel,
    items: Iterable[tuple[Hashable, str | Path]],
    *,
    max_windows: int = 0,
    batch_size: int = 256,
    workers: int = 0,
    silence_rms_dbfs: float = -60.0,
    parallel: bool = True,
) -> Iterator[ScoredTrack]:
    """Score ``(key, path)`` items: decode_files in local worker processes, then score_decoded.

    Bad files come back with ``error`` set, never raise. Decoding and scoring overlap: enough
    files are read ahead to fill a batch while the session runs, and whenever the next track is
    not decoded yet the windows at hand are scored rather than left waiting for a full batch.
    """
    n_workers = worker_count(workers)
    tracks_per_batch = -(-batch_size // (max_windows or 10))
    decoded = decode_files(
        items, sample_rate=model.sample_rate, clip_samples=model.clip_samples, max_windows=max_windows, workers=n_workers, silence_rms_dbfs=silence_rms_dbfs,
        in_flight=max(2 * n_workers, tracks_per_batch + n_workers), parallel=parallel, announce_waits=parallel,
    )
    try:
        yield from score_decoded(model, decoded, batch_size=batch_size)
    finally:
        decoded.close()
