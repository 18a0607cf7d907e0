"""Score audio with an exported contract-v2 ONNX model: sessions (CUDA when usable), track predictions.

The model is self-describing: labels, sample rate and clip length come from its metadata
(:mod:`genretag.contract`), never from params.yaml. A track is decoded at the model's rate and cut
into 3-s windows; the windows' waveforms go into the graph, which holds the whole preprocessing
(nothing here computes spectrograms). Silent windows are not scored. Decoding runs in worker
processes while the calling process feeds the session large batches, so a GPU is not left
waiting on one CPU core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
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
import onnx
import onnxruntime as ort

from genretag.audio.decoding import decode_windows, is_silent
from genretag.core.config import worker_count
from genretag.onnx.contract import (
    EMBEDDING_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    ModelContract,
    cuda_batch_limit,
    read_contract,
    require_v2,
)
from genretag.evaluation.drift import InputStats, window_loudness
from genretag.core.errors import AudioError, GenretagError, RegistryError, ScoringError
from genretag.families import Prediction
from genretag.core.processes import die_with_parent
from genretag.dsp.spectrogram import window_starts

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# onnxruntime's own default log level (2 = warning); restored after a quiet session start.
_ORT_DEFAULT_SEVERITY = 2


@dataclass(frozen=True)
class ScoringModel:
    """An open ONNX session, the model's contract, and where it really runs."""

    path: Path
    session: ort.InferenceSession
    contract: ModelContract
    requested: tuple[str, ...]
    provider: str  # the provider that actually runs: session.get_providers()[0]
    cuda_problem: str = ""  # why CUDA is not active ("" when it is, or was not wanted)
    max_batch: int = 0  # most clips per session run (0: no limit); see cuda_batch_limit

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def sample_rate(self) -> int:
        """Hz of the ``waveform`` input: tracks are decoded at this rate."""
        return self.contract.sample_rate

    @property
    def clip_samples(self) -> int:
        """S, samples per window (3 s at ``sample_rate``)."""
        return self.contract.clip_samples

    @property
    def contract_version(self) -> int:
        return self.contract.contract_version

    @property
    def model_name(self) -> str:
        return self.contract.model_name

    @property
    def model_version(self) -> str:
        return self.contract.model_version

    @property
    def on_gpu(self) -> bool:
        return self.provider == CUDA

    def predict(self, waveforms: np.ndarray, *, batch_size: int = 256) -> Prediction:
        """Windows float32 [n, S] at ``sample_rate`` -> probabilities [n, K] and embedding [n, D].

        The session runs on at most ``batch_size`` windows at a time (and never more than
        ``max_batch``, cuDNN's limit on a GPU); n = 0 gives empty arrays.
        """
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != self.clip_samples:
            raise ScoringError(f"{self.path}: expected windows [n, {self.clip_samples}], got shape {waveforms.shape}")
        step = max(1, min(batch_size, self.max_batch) if self.max_batch else batch_size)
        runs = [
            self.session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: waveforms[start : start + step]})
            for start in range(0, len(waveforms), step)
        ] or [self.session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: waveforms})]
        return Prediction(
            probabilities=np.concatenate([p for p, _ in runs]).astype(np.float32, copy=False),
            embedding=np.concatenate([e for _, e in runs]).astype(np.float32, copy=False),
        )


def _preload_cuda_libraries() -> str:
    """Load CUDA/cuDNN from pip's nvidia packages when present; return what went wrong."""
    if not hasattr(ort, "preload_dlls"):
        return ""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # it prints each library it cannot find
            ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - best effort; the session start says the rest
        captured.write(f"preload_dlls failed: {exc}")
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    missing = [line.split()[3].rstrip(":") for line in lines if line.startswith("Failed to load ") and len(line.split()) > 3]
    if missing:
        return "cannot load " + ", ".join(dict.fromkeys(Path(name).name for name in missing))
    return " ".join(lines)[:300]


def _built_cuda() -> str:
    """The CUDA major version this onnxruntime was built for (its libraries must match)."""
    try:
        from onnxruntime.capi import build_and_package_info

        return str(build_and_package_info.cuda_version).split(".")[0] + ".x"
    except (ImportError, AttributeError):
        return "12/13"


def open_model(
    path: str | Path,
    *,
    require_gpu: bool = False,
    prefer_gpu: bool = True,
    intra_op_threads: int = 0,
) -> ScoringModel:
    """Open an exported contract-v2 model with CUDA when onnxruntime can use it, else on the CPU.

    A v1 (image-input) model is refused with one line that says how to re-export it, and the
    session's input and outputs must be the contract's names and shapes (ScoringError otherwise).
    onnxruntime-gpu lists CUDA even where it cannot load it and then silently runs on the
    CPU; the provider that really runs is read back from the session. Its own load-error
    spam is silenced and replaced by one warning of ours. ``require_gpu`` raises
    ScoringError at once, with the reason, when CUDA is not active.
    """
    path = Path(path)
    try:
        contract = require_v2(read_contract(path), source=str(path))
    except GenretagError as exc:
        raise ScoringError(str(exc)) from exc
    available = ort.get_available_providers()
    want_cuda = prefer_gpu or require_gpu
    cuda_listed = CUDA in available
    requested = (CUDA, CPU) if want_cuda and cuda_listed else (CPU,)
    preload_problem = _preload_cuda_libraries() if CUDA in requested else ""

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only from this session's own logger
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    ort.set_default_logger_severity(4)  # the provider bridge logs load failures on the default logger
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(requested))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ScoringError(f"{path}: onnxruntime cannot load the model ({exc})") from exc
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
    _check_io(session, path=path, contract=contract)

    provider = session.get_providers()[0]
    problem = ""
    if want_cuda and provider != CUDA:
        if not cuda_listed:
            problem = f"this onnxruntime ({ort.__version__}, providers {available}) has no CUDAExecutionProvider"
        else:
            problem = (
                f"onnxruntime could not start CUDAExecutionProvider (needs a GPU and CUDA {_built_cuda()} libraries"
                + (f"; {preload_problem}" if preload_problem else "")
                + ")"
            )
        if require_gpu:
            raise ScoringError(f"{path}: GPU required but CUDA is not active: {problem}")
        log.log(*cuda_note(provider=provider, problem=problem))
    max_batch = cuda_batch_limit(onnx.load(str(path))) if provider == CUDA else 0
    log.info("scoring %s (%s %s) on %s%s", path.name, contract.model_name, contract.model_version, provider,
             f", at most {max_batch} clips per run" if max_batch else "")
    return ScoringModel(
        path=path, session=session, contract=contract, requested=requested, provider=provider, cuda_problem=problem,
        max_batch=max_batch,
    )


def cuda_note(*, provider: str, problem: str) -> tuple[int, str]:
    """(logging level, message) for CUDA not running: INFO when no GPU is visible to this process
    (the CPU was the only choice), WARNING when one is visible but CUDA cannot run on it."""
    from genretag.core.environment import gpu_visible

    if gpu_visible():
        return logging.WARNING, f"a GPU is visible but CUDA cannot run: scoring on {provider} ({problem})"
    return logging.INFO, f"no GPU visible: scoring on {provider}"


def _check_io(session: ort.InferenceSession, *, path: Path, contract: ModelContract) -> None:
    """The session takes ``waveform`` [N, S] and returns ``probabilities`` [N, K] and ``embedding`` [N, D]."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if list(inputs) != [INPUT_NAME] or not {OUTPUT_NAME, EMBEDDING_NAME} <= set(outputs):
        raise ScoringError(
            f"{path}: contract v2 needs input {INPUT_NAME!r} and outputs {OUTPUT_NAME!r}, {EMBEDDING_NAME!r}; "
            f"found {list(inputs)} -> {list(outputs)}"
        )
    shapes = {INPUT_NAME: inputs[INPUT_NAME], OUTPUT_NAME: outputs[OUTPUT_NAME], EMBEDDING_NAME: outputs[EMBEDDING_NAME]}
    wrong_rank = [f"{name} {shape}" for name, shape in shapes.items() if len(shape) != 2]
    if wrong_rank:
        raise ScoringError(f"{path}: contract v2 tensors are 2-D [N, ...]; found {', '.join(wrong_rank)}")
    samples, width = inputs[INPUT_NAME][1], outputs[OUTPUT_NAME][1]
    if isinstance(samples, int) and samples != contract.clip_samples:
        raise ScoringError(f"{path}: the model takes {samples} samples per window but its contract says {contract.clip_samples}")
    if isinstance(width, int) and width != len(contract.labels):
        raise ScoringError(f"{path}: the model outputs {width} probabilities but its metadata lists {len(contract.labels)} labels")


def resolve_model(model: str, *, tracking_uri: str | None = None, model_name: str | None = None) -> Path:
    """``champion`` / ``challenger`` / a registry version number / a path -> a local .onnx file."""
    candidate = Path(model).expanduser()
    if candidate.suffix == ".onnx" or candidate.is_file():
        if not candidate.is_file():
            raise ScoringError(f"{candidate}: no such ONNX file")
        return candidate.resolve()
    try:
        from genretag.registry import mlflow_registry as registry
    except ImportError as exc:
        raise RegistryError(
            f"model {model!r}: the model registry (genretag.registry) is not available; pass a path to an .onnx file"
        ) from exc
    return Path(registry.fetch_onnx(model, tracking_uri=tracking_uri, model_name=model_name))


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
    skipped and counted, so a track may score fewer than ``max_windows``.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    starts = window_starts(len(waveform), clip_samples=clip_samples, max_windows=max_windows, evenly_spaced=True)
    windows = np.stack([waveform[start : start + clip_samples] for start in starts]) if len(starts) else np.empty((0, clip_samples), np.float32)
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
