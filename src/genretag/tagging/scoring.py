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
from genretag.core.errors import AudioError
from genretag.evaluation.drift import InputStats
from genretag.onnx.contract import UNKNOWN, OpenSet, track_probabilities
from genretag.onnx.session import ScoringModel
from genretag.tagging.decode_pool import DecodedTrack, decode_files
from genretag.tagging.early_exit import EarlyExit, spread_order
from genretag.tagging.windows import TrackWindows, more_windows, track_windows, window_seconds


@dataclass(frozen=True)
class TrackScore:
    """One track's prediction: :func:`genretag.onnx.contract.track_probabilities` of its scored windows (their mean,
    rescaled by the model's track temperature); ``confidence`` is the top genre's, the number ``score.review_below`` acts on."""

    label: str
    confidence: float
    top3: tuple[tuple[str, float], ...]
    probabilities: dict[str, float]
    windows_scored: int  # windows that went into the model (silent ones do not; with early exit, those used)
    windows_silent: int = 0  # windows skipped as silent
    window_starts_s: tuple[float, ...] = ()  # start (s) of each scored window in the track; () when not known
    window_probabilities: tuple[tuple[float, ...], ...] = ()  # per scored window, in ``probabilities``' label order
    windows_available: int = 0  # non-silent windows the track offered (up to max_windows); early exit used windows_scored of them
    unknown_score: float | None = None  # the track's out-of-taxonomy score (None: the model has none)

    @property
    def unknown(self) -> bool:
        """True when the track is none of the model's genres (label ``unknown``)."""
        return self.label == UNKNOWN


def summarize(
    window_probabilities: np.ndarray, labels: tuple[str, ...], *, windows_silent: int = 0,
    window_starts_s: tuple[float, ...] = (), windows_available: int = 0, track_embedding: np.ndarray | None = None,
    open_set: OpenSet = OpenSet.absent(), track_temperature: float = 1.0,
) -> TrackScore:
    """The track's probabilities from its windows' float [n, K]: :func:`genretag.onnx.contract.track_probabilities`
    at ``track_temperature`` (the model's ``ModelContract.track_temperature``); label = the most probable genre, or
    ``unknown`` when ``open_set`` says ``track_embedding`` float [D] (the mean of the windows' embeddings) is past its
    threshold (:meth:`genretag.onnx.contract.OpenSet.track_score`). The
    per-window rows are kept (the track's genre timeline), with ``window_starts_s`` (n seconds, or
    () when unknown); ``windows_available`` (0: n) is how many windows the track offered. ValueError when
    n = 0 or the starts do not match the windows."""
    if len(window_probabilities) == 0:
        raise ValueError("no windows to summarize")
    if window_starts_s and len(window_starts_s) != len(window_probabilities):
        raise ValueError(f"{len(window_starts_s)} window starts for {len(window_probabilities)} windows")
    windows = np.asarray(window_probabilities, dtype=np.float64)
    mean = track_probabilities(windows, temperature=track_temperature)
    order = np.argsort(-mean, kind="stable")
    unknown_score = open_set.track_score(track_embedding)
    return TrackScore(
        label=UNKNOWN if open_set.is_unknown(unknown_score) else labels[order[0]],
        confidence=float(mean[order[0]]),
        top3=tuple((labels[i], float(mean[i])) for i in order[:3]),
        probabilities={label: float(p) for label, p in zip(labels, mean, strict=True)},
        windows_scored=len(window_probabilities),
        windows_silent=windows_silent,
        window_starts_s=tuple(float(s) for s in window_starts_s),
        window_probabilities=tuple(tuple(float(p) for p in row) for row in windows),
        windows_available=windows_available or len(window_probabilities),
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
                     track_embedding=prediction.embedding.mean(axis=0, dtype=np.float64), open_set=model.contract.open_set,
                     track_temperature=model.contract.track_temperature)


@dataclass(frozen=True)
class ScoredTrack:
    """What became of one input: a score, or the reason it has none."""

    key: Hashable
    path: str
    score: TrackScore | None
    error: str = ""
    audio: InputStats | None = None  # the track's input statistics (drift)
    embedding_sum: np.ndarray | None = None  # float64 [D]: sum of the scored windows' embeddings (drift)

    @property
    def track_embedding(self) -> np.ndarray | None:
        """The track's embedding, the mean of its scored windows' embeddings: float64 [D] (None: nothing scored)."""
        if self.score is None or self.embedding_sum is None or not self.score.windows_scored:
            return None
        return self.embedding_sum / self.score.windows_scored


@dataclass
class _InFlight:
    """A decoded track being scored in rounds: its windows' scoring order and what was scored so far."""

    key: Hashable
    path: str
    windows: TrackWindows  # decoded so far (with early exit decoded round by round: in scoring order, the rest pending)
    order: np.ndarray  # int64 [n]: the order its decoded windows are scored in
    probabilities: list[np.ndarray]  # float32 [r, K] per round scored
    embedding_sum: np.ndarray | None = None  # float64 [D]
    scored: int = 0

    def next_round(self, early_exit: EarlyExit | None) -> np.ndarray:
        """The indices of the windows the next round scores (all the rest without early exit)."""
        stop = len(self.order) if early_exit is None else self.scored + early_exit.round_windows
        return self.order[self.scored : stop]


@dataclass(frozen=True)
class _Decoding:
    """How later rounds of a track decoded round by round are decoded (genretag.tagging.windows.more_windows)."""

    max_windows: int = 0
    silence_rms_dbfs: float = -60.0


def score_decoded(
    model: ScoringModel, decoded: Iterable[DecodedTrack | None], *, batch_size: int = 256, early_exit: EarlyExit | None = None,
    max_windows: int = 0, silence_rms_dbfs: float = -60.0,
) -> Iterator[ScoredTrack]:
    """Score decoded tracks; yield one ScoredTrack per track as soon as its last round ran.

    Windows of several tracks are pooled into batches of ``batch_size`` for the session. A None
    in ``decoded`` says the next track is still being decoded (``decode_files(announce_waits=True)``):
    a round of the windows at hand is scored then, so the session works while the decoders do instead
    of waiting for a full batch. A track without windows comes back at once with its reason, so
    a failure can overtake tracks still waiting for a batch.

    Without ``early_exit`` a track's windows are all scored in one round. With it, a track's windows
    are scored ``early_exit.round_windows`` at a time in :func:`genretag.tagging.early_exit.spread_order`,
    and it stops as soon as the rest cannot change its genre (:func:`genretag.tagging.early_exit.settled`);
    its TrackScore then holds the windows used (``windows_scored`` of ``windows_available``). A track
    decoded round by round (TrackWindows.pending, ``decode_files(first=...)``) has its next round
    decoded here, in this process, only when it is not settled (``max_windows`` and ``silence_rms_dbfs``
    as it was decoded with); a file that fails then comes back with its reason.
    """
    decoding = _Decoding(max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs)
    active: list[_InFlight] = []

    def score_round() -> Iterator[ScoredTrack]:
        return _score_round(model, active, batch_size=batch_size, early_exit=early_exit, decoding=decoding)

    for item in decoded:
        if item is None:
            yield from score_round()
            continue
        key, path, windows, reason = item
        if windows is None:
            yield ScoredTrack(key, path, None, reason)
            continue
        count = len(windows.waveforms)
        in_scoring_order = early_exit is None or windows.pending is not None
        order = np.arange(count, dtype=np.int64) if in_scoring_order else spread_order(count)
        active.append(_InFlight(key, path, windows, order, []))
        if sum(len(track.next_round(early_exit)) for track in active) >= batch_size:
            yield from score_round()
    while active:
        yield from score_round()


def _decode_next_round(model: ScoringModel, track: _InFlight, *, early_exit: EarlyExit, decoding: _Decoding) -> None:
    """Decode the pending windows the next round of ``track`` needs (AudioError as more_windows)."""
    pending = track.windows.pending
    while pending is not None and len(pending) and track.scored + early_exit.round_windows > len(track.order):
        track.windows = more_windows(track.path, track.windows, count=track.scored + early_exit.round_windows - len(track.order),
                                     sample_rate=model.sample_rate, clip_samples=model.clip_samples,
                                     max_windows=decoding.max_windows, silence_rms_dbfs=decoding.silence_rms_dbfs)
        track.order = np.arange(len(track.windows.waveforms), dtype=np.int64)
        pending = track.windows.pending


def _score_round(
    model: ScoringModel, active: list[_InFlight], *, batch_size: int, early_exit: EarlyExit | None, decoding: _Decoding,
) -> Iterator[ScoredTrack]:
    """Score one round of every active track's windows in one session call (decoding the pending windows it
    needs first); yield (and drop from ``active``) the tracks that are done or failed."""
    if early_exit is not None:
        for track in list(active):
            try:
                _decode_next_round(model, track, early_exit=early_exit, decoding=decoding)
            except AudioError as exc:
                active.remove(track)
                yield ScoredTrack(track.key, track.path, None, exc.reason)
    if not active:
        return
    rounds = [track.next_round(early_exit) for track in active]
    prediction = model.predict(np.concatenate([t.windows.waveforms[r] for t, r in zip(active, rounds, strict=True)]), batch_size=batch_size)
    offset, still = 0, []
    for track, indices in zip(active, rounds, strict=True):
        count = len(indices)
        track.probabilities.append(prediction.probabilities[offset : offset + count])
        embedding_sum = prediction.embedding[offset : offset + count].sum(axis=0, dtype=np.float64)
        track.embedding_sum = embedding_sum if track.embedding_sum is None else track.embedding_sum + embedding_sum
        track.scored += count
        offset += count
        total = track.windows.available
        done = track.scored >= total or (early_exit is not None and early_exit.settled(np.concatenate(track.probabilities), total=total))
        if done:
            yield _finished(model, track)
        else:
            still.append(track)
    active[:] = still


def _finished(model: ScoringModel, track: _InFlight) -> ScoredTrack:
    """The ScoredTrack of a track whose rounds are over: its used windows in time order."""
    windows = track.windows
    used = track.order[: track.scored]
    in_time = np.argsort(used if windows.starts is None else windows.starts[used], kind="stable")
    starts = window_seconds(windows, sample_rate=model.sample_rate)
    score = summarize(np.concatenate(track.probabilities)[in_time], model.labels, windows_silent=windows.silent,
                      window_starts_s=tuple(starts[i] for i in used[in_time]) if starts else (),
                      windows_available=windows.available, track_embedding=track.embedding_sum / track.scored, open_set=model.contract.open_set,
                      track_temperature=model.contract.track_temperature)
    return ScoredTrack(track.key, track.path, score, audio=windows.audio, embedding_sum=track.embedding_sum)


def score_files(
    model: ScoringModel,
    items: Iterable[tuple[Hashable, str | Path]],
    *,
    max_windows: int = 0,
    batch_size: int = 256,
    workers: int = 0,
    silence_rms_dbfs: float = -60.0,
    parallel: bool = True,
    early_exit: EarlyExit | None = None,
) -> Iterator[ScoredTrack]:
    """Score ``(key, path)`` items: decode_files in local worker processes, then score_decoded
    (``early_exit``: scored in rounds, see there; the workers decode each track's first round, and
    a track that is not settled then has its next rounds decoded in this process, seeking to them).

    Bad files come back with ``error`` set, never raise. Decoding and scoring overlap: enough
    files are read ahead to fill a batch while the session runs, and whenever the next track is
    not decoded yet the windows at hand are scored rather than left waiting for a full batch.
    """
    n_workers = worker_count(workers)
    tracks_per_batch = -(-batch_size // (early_exit.round_windows if early_exit else max_windows or 10))
    decoded = decode_files(
        items, sample_rate=model.sample_rate, clip_samples=model.clip_samples, max_windows=max_windows, workers=n_workers, silence_rms_dbfs=silence_rms_dbfs,
        in_flight=max(2 * n_workers, tracks_per_batch + n_workers), parallel=parallel, announce_waits=parallel,
        first=early_exit.round_windows if early_exit else 0,
    )
    try:
        yield from score_decoded(model, decoded, batch_size=batch_size, early_exit=early_exit, max_windows=max_windows,
                                 silence_rms_dbfs=silence_rms_dbfs)
    finally:
        decoded.close()
