"""Decode tracks into windows in local worker processes, read ahead, in input order."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from genretag.core.config import worker_count
from genretag.core.paths import quoted
from genretag.core.processes import die_with_parent
from genretag.tagging.windows import TrackWindows, windows_or_reason

log = logging.getLogger(__name__)

DECODER_CRASHED = "decoder crashed: its decoding worker died twice while reading this file alone"


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
    decode: Callable[..., tuple[TrackWindows | None, str]] = windows_or_reason,
    first: int = 0,
) -> Iterator[DecodedTrack | None]:
    """Decode ``(key, path)`` items at ``sample_rate`` into windows of ``clip_samples`` (``decode``:
    genretag.tagging.windows.windows_or_reason, a module-level function the workers can import) in
    ``workers`` local processes (0: every core), in input order; ``first`` > 0 decodes only each
    track's first round of that many windows (early exit: the scorer decodes the rest as it needs them).

    At most ``in_flight`` files (0: twice the workers) are read ahead. With ``announce_waits``,
    a None comes first whenever the next track is not decoded yet (once per track): the consumer
    may use the wait. A worker that dies (killed, or a decoder crash) costs no track: the pool is
    restarted and each track the dead pool lost is decoded again, alone (so a death then is its own);
    a track that kills its worker alone twice gets the reason :data:`DECODER_CRASHED`, and the run
    goes on. Closing the iterator stops the workers.
    """
    n_workers = worker_count(workers)
    limit = max(in_flight or 2 * n_workers, 1) if parallel else 1
    executor: Executor = _process_pool(n_workers) if parallel else _InlineExecutor()
    pending: deque[tuple[Hashable, str, Future]] = deque()
    source = iter(items)

    def submit(path: str) -> Future:
        try:
            return executor.submit(decode, path=path, sample_rate=sample_rate, clip_samples=clip_samples,
                                   max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs, first=first)
        except BrokenProcessPool as exc:  # a worker died since the last result: the track is lost like those in flight
            lost: Future = Future()
            lost.set_exception(exc)
            return lost

    def refill() -> None:
        while len(pending) < limit:
            try:
                key, path = next(source)
            except StopIteration:
                return
            pending.append((key, str(path), submit(str(path))))

    def restart() -> None:
        nonlocal executor
        executor.shutdown(wait=True, cancel_futures=True)
        executor = _process_pool(n_workers)

    def retry_alone(path: str) -> tuple[TrackWindows | None, str]:
        for _ in range(2):  # alone, a death is this track's own: the second one settles it
            try:
                return submit(path).result()
            except BrokenProcessPool:
                restart()
        log.warning("%s: %s", quoted(path), DECODER_CRASHED)
        return None, DECODER_CRASHED

    try:
        refill()
        while pending:
            if announce_waits and not pending[0][2].done():
                yield None
            key, path, job = pending.popleft()
            try:
                windows, reason = job.result()
            except BrokenProcessPool:
                lost = [(key, path, job), *pending]
                pending.clear()
                log.warning("a decoding worker died while %d tracks were in flight; restarting the pool and decoding "
                            "each of them again, alone", len(lost))
                restart()
                for lost_key, lost_path, lost_job in lost:
                    done = lost_job.done() and not lost_job.cancelled() and lost_job.exception() is None
                    yield (lost_key, lost_path, *(lost_job.result() if done else retry_alone(lost_path)))
                refill()
                continue
            if windows is not None and windows.decoder_messages:
                log.info("%s: decoder said: %s", quoted(path), "; ".join(windows.decoder_messages))
            refill()
            yield key, path, windows, reason
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
