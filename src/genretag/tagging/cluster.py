"""Scoring where the data is: on a Dask cluster, each worker decodes AND scores its chunk of tracks with its
own onnxruntime session, and the driver plans and records.

:class:`ModelOnWorker` (a ``distributed.WorkerPlugin``) carries the model's bytes to every worker, present
and future (a restarted worker too), writes them to the worker's local directory and opens ONE session
there (:func:`genretag.onnx.session.open_model`: CUDA on a GPU worker, else the CPU). :func:`score_chunk`
runs on a worker: decode each file of the chunk, score it with that session (early exit as configured),
return one ScoredTrack per track. :func:`cluster_scorer` is a tagging :data:`~genretag.tagging.run_state.Scorer`:
it submits chunks of ``chunk`` tracks (at most two per worker thread in flight, so a catalog of 10^6 files
never sits on the scheduler at once) and yields their results as they complete; the driver writes them
with the catalog's idempotent upsert, one commit at a time.

A chunk whose worker dies (killed, out of memory) is rescheduled by the Dask scheduler on another worker
(up to its ``distributed.scheduler.allowed-failures``, 3 by default); its result reaches the driver once,
so no row is lost or written twice (and UNIQUE (sha256, model_version) holds in any case). A chunk that
kills every worker it runs on comes back as one error row per track naming the reason (a rerun tries again).

Imported only when score.dask_address is set: the slim tagger image has no Dask.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

from distributed import Client, WorkerPlugin, as_completed, get_worker
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from genretag.core.atomic import atomic_open
from genretag.core.errors import ScoringError
from genretag.onnx.session import ScoringModel, open_model
from genretag.tagging.early_exit import EarlyExit
from genretag.tagging.scoring import ScoredTrack, score_files
from genretag.tagging.sources import HashedTrack

log = logging.getLogger(__name__)

PLUGIN_NAME = "genretag-model"
_MODELS: dict[str, ScoringModel] = {}  # in a worker process: model key -> its open session


def model_key(model_bytes: bytes) -> str:
    """The key of a model's session on the workers: the first 16 hex digits of its bytes' SHA-256."""
    return hashlib.sha256(model_bytes).hexdigest()[:16]


class ModelOnWorker(WorkerPlugin):
    """Opens the model once per worker process: ``setup`` writes its bytes under the worker's local
    directory and opens a session there (``intra_op_threads``: 0 = onnxruntime's default; ``batch_memory_mb``:
    score.batch_memory_mb), which :func:`score_chunk` uses; ``teardown`` drops it."""

    name = PLUGIN_NAME

    def __init__(self, model_bytes: bytes, *, intra_op_threads: int = 0, batch_memory_mb: int = 0):
        self.model_bytes = model_bytes
        self.key = model_key(model_bytes)
        self.intra_op_threads = intra_op_threads
        self.batch_memory_mb = batch_memory_mb

    def setup(self, worker: Any) -> None:
        path = Path(worker.local_directory) / f"genretag-model-{self.key}.onnx"
        if not path.exists():
            with atomic_open(path, "wb") as handle:
                handle.write(self.model_bytes)
        _MODELS[self.key] = open_model(path, prefer_gpu=True, intra_op_threads=self.intra_op_threads,
                                       batch_memory_mb=self.batch_memory_mb)
        log.info("worker %s: model %s on %s", worker.address, self.key, _MODELS[self.key].provider)

    def teardown(self, worker: Any) -> None:
        _MODELS.pop(self.key, None)


def score_chunk(
    items: Sequence[tuple[Hashable, str]], *, model_id: str, max_windows: int, batch_size: int, silence_rms_dbfs: float,
    early_exit: EarlyExit | None, before_decode: Callable[[Path], None] | None = None,
) -> list[ScoredTrack]:
    """On a Dask worker: decode and score ``(key, path)`` items with the worker's session for model ``model_id`` (:func:`model_key`)
    (genretag.tagging.scoring.score_files, decoding in this worker's thread, one file after the other;
    ``before_decode(path)`` is called before each file is read: fault drills). ScoringError when the
    worker has no session for that model (the plugin was not registered)."""
    model = _MODELS.get(model_id)
    if model is None:
        raise ScoringError(f"Dask worker {get_worker().address}: no session for model {model_id} (ModelOnWorker not registered)")
    return list(score_files(model, _announced(items, before_decode), max_windows=max_windows, batch_size=batch_size,
                            silence_rms_dbfs=silence_rms_dbfs, parallel=False, early_exit=early_exit))


def _announced(items: Sequence[tuple[Hashable, str]], before_decode: Callable[[Path], None] | None) -> Iterator[tuple[Hashable, str]]:
    for key, path in items:
        if before_decode is not None:
            before_decode(Path(path))
        yield key, path


def cluster_scorer(
    model: ScoringModel, *, address: str, chunk: int, max_windows: int, batch_size: int, silence_rms_dbfs: float,
    early_exit: EarlyExit | None = None, session_threads: int = 0, batch_memory_mb: int = 0,
    before_decode: Callable[[Path], None] | None = None,
) -> Any:
    """A tagging Scorer that scores on the Dask cluster at ``address``: ``chunk`` tracks per task, each worker
    with its own session of ``model`` (``session_threads`` onnxruntime threads, 0: its default; see
    :func:`score_chunk` for ``before_decode``). Results come in completion order. Raises ScoringError when
    the scheduler cannot be reached."""
    model_bytes = Path(model.path).read_bytes()

    def score(todo: Sequence[HashedTrack]) -> Iterator[ScoredTrack]:
        try:
            client = Client(address, timeout="30s")
        except OSError as exc:
            raise ScoringError(f"Dask scheduler {address}: cannot connect ({exc})") from exc
        try:
            client.register_plugin(ModelOnWorker(model_bytes, intra_op_threads=session_threads, batch_memory_mb=batch_memory_mb))
            threads = max(sum(client.nthreads().values()), 1)
            log.info("scoring %d tracks on the Dask cluster at %s (%d worker threads), %d per chunk, each worker with its own session",
                     len(todo), address, threads, chunk)
            chunks = iter([list(todo[start : start + chunk]) for start in range(0, len(todo), chunk)])
            options = {"model_id": model_key(model_bytes), "max_windows": max_windows, "batch_size": batch_size,
                       "silence_rms_dbfs": silence_rms_dbfs, "early_exit": early_exit, "before_decode": before_decode}

            def submit(tracks: list[HashedTrack]) -> Any:
                future = client.submit(score_chunk, [(t, str(t.path)) for t in tracks], **options, pure=False)
                submitted[future.key] = tracks
                return future

            submitted: dict[str, list[HashedTrack]] = {}
            running = as_completed([submit(tracks) for tracks in _take(chunks, 2 * threads)])
            for future in running:
                tracks = submitted.pop(future.key)
                yield from _results(future, tracks)
                for more in _take(chunks, 1):
                    running.add(submit(more))
        finally:
            client.close()

    return score


def _take(chunks: Iterator[list[HashedTrack]], count: int) -> list[list[HashedTrack]]:
    return [c for _, c in zip(range(count), chunks)]


def _results(future: Any, tracks: list[HashedTrack]) -> list[ScoredTrack]:
    """A chunk's ScoredTracks; when its workers kept dying, one failure per track naming why."""
    try:
        return future.result()
    except (KilledWorker, FutureCancelledError) as exc:
        reason = f"Dask workers died scoring the chunk holding this file ({type(exc).__name__}); rerun to retry"
        return [ScoredTrack(t, str(t.path), None, reason) for t in tracks]
