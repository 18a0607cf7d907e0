"""Score audio with an exported contract-v2 ONNX model: sessions (CUDA when usable), track predictions.

The model is self-describing: labels, sample rate and clip length come from its metadata
(:mod:`genretag.contract`), never from params.yaml. A track is decoded at the model's rate and cut
into 3-s windows; the windows' waveforms go into the graph, which holds the whole preprocessing
(nothing here computes spectrograms). Silent windows are not scored. Decoding runs in worker
processes while the calling process feeds the session large batches, so a GPU is not left
waiting on one CPU core.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genretag.audio.clips import cut_clips
from genretag.audio.decoding import decode_windows, is_silent
from genretag.core.config import worker_count
from genretag.evaluation.drift import InputStats, window_loudness
from genretag.core.errors import AudioError, ScoringError
from genretag.onnx.session import ScoringModel
from genretag.core.processes import die_with_parent
from genretag.dsp.spectrogram import window_starts

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrackScore:
    """One track's prediction: the mean of its scored windows' probabilities."""

    label: str
    confidence: float
    top3: tuple[tuple[str, float], ...]
    probabilities: dict[str, float]
    windows_scored: int  # windows that went into the model (silent ones do not)
    windows_silent: int = 0  # windows skipped as silent
    window_starts_s: tuple[float, ...] = ()  # start (s) of each scored window in the track; () when not known
    window_probabilities: tuple[tuple[float, ...], ...] = ()  # per scored window, in ``probabilities``' label order


def summarize(
    window_probabilities: np.ndarray, labels: tuple[str, ...], *, windows_silent: int = 0,
    window_starts_s: tuple[float, ...] = (),
) -> TrackScore:
    """Average the windows' probabilities float [n, K]; label = the most probable genre. The
    per-window rows are kept (the track's genre timeline), with ``window_starts_s`` (n seconds, or
    () when unknown). ValueError when n = 0 or the starts do not match the windows."""
    if len(window_probabilities) == 0:
        raise ValueError("no windows to summarize")
    if window_starts_s and len(window_starts_s) != len(window_probabilities):
        raise ValueError(f"{len(window_starts_s)} window starts for {len(window_probabilities)} windows")
    windows = np.asarray(window_probabilities, dtype=np.float64)
    mean = windows.mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    return TrackScore(
        label=labels[order[0]],
        confidence=float(mean[order[0]]),
        top3=tuple((labels[i], float(mean[i])) for i in order[:3]),
        probabilities={label: float(p) for label, p in zip(labels, mean, strict=True)},
        windows_scored=len(window_probabilities),
        windows_silent=windows_silent,
        window_starts_s=tuple(float(s) for s in window_starts_s),
        window_probabilities=tuple(tuple(float(p) for p in row) for row in windows),
    )


@dataclass(frozen=True)
class TrackWindows:
    """The windows of one track that the model scores: float32 [n, S], how many were silent, where
    the scored ones start, and the track's input statistics for drift (None when cut from a
    waveform, not decoded from a file)."""

    waveforms: np.ndarray
    silent: int = 0
    starts: np.ndarray | None = None  # int64 [n]: each scored window's first sample in the track (None: unknown)
    audio: InputStats | None = None


def drop_silent(windows: np.ndarray, *, starts: np.ndarray | None = None, silence_rms_dbfs: float = -60.0) -> TrackWindows:
    """Windows float32 [n, S] without the silent ones (:func:`is_silent`), which are counted;
    ``starts`` (int64 [n] first samples) keeps those of the windows kept."""
    keep = [not is_silent(window, silence_rms_dbfs=silence_rms_dbfs) for window in windows]
    kept = [window for window, wanted in zip(windows, keep, strict=True) if wanted]
    stacked = np.stack(kept) if kept else np.empty((0, windows.shape[1]), dtype=np.float32)
    kept_starts = None if starts is None else np.asarray(starts, dtype=np.int64)[np.asarray(keep, dtype=bool)]
    return TrackWindows(waveforms=stacked, silent=len(windows) - len(kept), starts=kept_starts)


def window_seconds(windows: TrackWindows, *, sample_rate: int) -> tuple[float, ...]:
    """The scored windows' starts in seconds (``starts`` / ``sample_rate`` Hz, 3 decimals); () when unknown."""
    return () if windows.starts is None else tuple(round(int(s) / sample_rate, 3) for s in windows.starts)


def cut_windows(waveform: np.ndarray, *, clip_samples: int, max_windows: int = 0, silence_rms_dbfs: float = -60.0) -> TrackWindows:
    """Cut a mono waveform into whole, non-overlapping windows of ``clip_samples``; drop the silent ones.

    The windows are ``genretag.spectrogram.window_starts`` with ``evenly_spaced=True`` (at most
    ``max_windows``, spread over the track; 0: all); silent ones (:func:`is_silent`) are then
    skipped and counted, so a track may score fewer than ``max_windows``. The windows are cut by
    :func:`genretag.audio.clips.cut_clips` (every start lies a whole window inside the track).
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    starts = window_starts(len(waveform), clip_samples=clip_samples, max_windows=max_windows, evenly_spaced=True)
    windows = cut_clips(waveform, starts=starts, clip_samples=clip_samples, source="waveform")
    return drop_silent(windows, starts=starts, silence_rms_dbfs=silence_rms_dbfs)


def track_windows(
    path: str | Path,
    *,
    sample_rate: int,
    clip_samples: int,
    max_windows: int = 0,
    silence_rms_dbfs: float = -60.0,
) -> TrackWindows:
    """Decode the windows of any audio file at ``sample_rate`` Hz (the model's); drop the silent ones.

    Only the windows are decoded (``genretag.audio.decode_windows``: seeks, so the cost follows
    ``max_windows``, not the track's length); they equal :func:`cut_windows` of the whole decoded
    track. Raises AudioError naming the file when it is unreadable, empty, holds non-finite samples
    in the frames read, is shorter than one window, or every window is silent.
    """
    decoded = decode_windows(path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows)
    if decoded.nonfinite_samples > 0:
        raise AudioError(path, f"{decoded.nonfinite_samples} non-finite samples (NaN or infinity)")
    if decoded.track_samples < clip_samples:
        raise AudioError(path, f"too short: {decoded.duration_s:.2f} s is less than one {clip_samples / sample_rate:g}-s window")
    windows = drop_silent(decoded.windows, starts=decoded.starts, silence_rms_dbfs=silence_rms_dbfs)
    if len(windows.waveforms) == 0:
        raise AudioError(path, f"silent: all {windows.silent} windows are all-zero or below {silence_rms_dbfs:.1f} dBFS RMS")
    audio = InputStats(source_sample_rate=decoded.original_sample_rate, duration_s=round(decoded.duration_s, 3),
                       loudness_dbfs=window_loudness(windows.waveforms))
    return dataclasses.replace(windows, audio=audio)


def windows_or_reason(
    *, path: str, sample_rate: int, clip_samples: int, max_windows: int, silence_rms_dbfs: float
) -> tuple[TrackWindows | None, str]:
    """Worker entry (a process or a Dask task): the track's windows, or why it cannot be scored (never raises)."""
    try:
        return track_windows(
            path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs
        ), ""
    except AudioError as exc:
        return None, exc.reason
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop a catalog run
        return None, f"cannot process: {type(exc).__name__}: {exc}"


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
    probabilities = model.predict(windows.waveforms, batch_size=batch_size).probabilities
    return summarize(probabilities, model.labels, windows_silent=windows.silent,
                     window_starts_s=window_seconds(windows, sample_rate=model.sample_rate))


@dataclass(frozen=True)
class ScoredTrack:
    """What became of one input: a score, or the reason it has none."""

    key: Hashable
    path: str
    score: TrackScore | None
    error: str = ""
    audio: InputStats | None = None  # the track's input statistics (drift)
    embedding_sum: np.ndarray | None = None  # float64 [D]: sum of the scored windows' embeddings (drift)


class _InlineExecutor(Executor):
    """Runs each job at submit time, in this process (small jobs, tests, one-file predictions)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # spawn: never fork a process that runs threads (Prefect, onnxruntime), and every worker is a
    # direct child of this process, so its parent-death signal (die_with_parent) fires when this
    # process is SIGKILLed. (A forkserver's workers are the server's children and hold its "alive"
    # pipe open, so the server and its workers outlive a killed parent.)
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),))  # no orphans after a SIGKILL


DecodedTrack = tuple[Hashable, str, "TrackWindows | None", str]
"""(key, path, the track's windows or None, why there are none): what decoding gives scoring."""


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
        yield ScoredTrack(key, path, summarize(prediction.probabilities[offset : offset + count], model.labels, windows_silent=windows.silent,
                                               window_starts_s=window_seconds(windows, sample_rate=model.sample_rate)),
                          audio=windows.audio, embedding_sum=prediction.embedding[offset : offset + count].sum(axis=0, dtype=np.float64))
        offset += count


def decode_files(
    items: Iterable[tuple[Hashable, str | Path]],
    *,
    sample_rate: int,
    clip_samples: int,
    max_windows: int = 0,
    workers: int = 0,
    silence_rms_dbfs: float = -60.0,
    in_flight: int = 0,
    parallel: bool = True,
    announce_waits: bool = False,
) -> Iterator[DecodedTrack | None]:
    """Decode ``(key, path)`` items at ``sample_rate`` into windows of ``clip_samples`` (:func:`track_windows`)
    in ``workers`` local processes (0: every core), in input order.

    At most ``in_flight`` files (0: twice the workers) are read ahead. With ``announce_waits``,
    a None comes first whenever the next track is not decoded yet (once per track): the consumer
    may use the wait. Closing the iterator stops the workers.
    """
    n_workers = worker_count(workers)
    limit = max(in_flight or 2 * n_workers, 1) if parallel else 1
    executor: Executor = _process_pool(n_workers) if parallel else _InlineExecutor()
    pending: deque[tuple[Hashable, str, Future]] = deque()
    source = iter(items)

    def refill() -> None:
        while len(pending) < limit:
            try:
                key, path = next(source)
            except StopIteration:
                return
            job = executor.submit(
                windows_or_reason, path=str(path), sample_rate=sample_rate, clip_samples=clip_samples,
                max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs,
            )
            pending.append((key, str(path), job))

    try:
        refill()
        while pending:
            if announce_waits and not pending[0][2].done():
                yield None
            key, path, job = pending.popleft()
            try:
                windows, reason = job.result()
            except BrokenProcessPool as exc:
                in_flight_paths = [path] + [p for _, p, _ in pending]
                raise ScoringError(
                    f"a decoding worker died while reading one of {in_flight_paths[:8]}; results so far are kept, rerun to resume"
                ) from exc
            refill()
            yield key, path, windows, reason
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


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
