"""A tagging run's steps, in ONE ordered list that both ways of tagging run.

:data:`TAGGING_STEPS`: open the catalog -> list the source -> hash it (in chunks) -> plan (skip what
this model version tagged, tag repeated content once) -> point moved files' tags at their new paths ->
write the unreadable files' error rows -> score and write, one commit at a time -> measure the
run's drift -> record the run -> add the new embeddings to the similarity index. :func:`tag_catalog` runs the steps directly, in this process, without
Prefect; ``flows/tag_catalog.py`` runs each step as a Prefect task (retried where :attr:`Step.retry`
says a retry may clear a failure) through the same walker, :func:`run_steps`, so the order lives
here only. Both share one :class:`TaggingRun`: the state each step reads and advances.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from genretag.core.config import ScoreParams
from genretag.core.errors import CatalogError
from genretag.core.paths import display
from genretag.onnx.session import ScoringModel
from genretag.tagging.commit import write_results
from genretag.tagging.rows import error_row
from genretag.tagging.scoring import ScoredTrack, score_files
from genretag.tagging.sources import (
    HashedTrack,
    SourceScan,
    TaggingPlan,
    TrackFailure,
    TrackSource,
    hash_tracks,
    plan_tagging,
    scan_source,
)
from genretag.tagging.store import Catalog, redact
from genretag.tagging.summary import TaggingSummary

HASH_CHUNK = 256  # files per hashing step: a transient failure re-reads at most this many

Scorer = Callable[[Sequence[HashedTrack]], Iterator[ScoredTrack]]
"""Scores the tracks to tag: one ScoredTrack per track, in any order (decoded here or elsewhere)."""


def local_scorer(model: ScoringModel, *, max_windows: int, batch_size: int, workers: int, silence_rms_dbfs: float) -> Scorer:
    """Decode in ``workers`` local processes (0: every core) and score here
    (genretag.tagging.scoring.score_files; ``max_windows`` 3-s windows per track, 0: all)."""

    def score(todo: Sequence[HashedTrack]) -> Iterator[ScoredTrack]:
        return score_files(model, ((t, t.path) for t in todo), max_windows=max_windows, batch_size=batch_size,
                           workers=workers, silence_rms_dbfs=silence_rms_dbfs)

    return score


class TaggingRun:
    """One tagging run's inputs and the state its steps read and advance, in :data:`TAGGING_STEPS` order.

    A plain class, not a dataclass: Prefect passes it to each task as it is (it does not walk into it).
    """

    def __init__(
        self,
        source: str | Path,
        *,
        model: ScoringModel,
        database_url: str,
        scorer: Scorer,
        commit_every: int = 16,
        review_below: float = 0.5,
        drift_limits: ScoreParams | None = None,
        reference_genres: Mapping[str, int] | None = None,
        before_read: Callable[[Path], None] | None = None,
        recorded_as: str = "cli",
        log: logging.Logger | logging.LoggerAdapter = logging.getLogger(__name__),
        started: float | None = None,
    ):
        self.source = str(source)
        self.model = model
        self.database_url = database_url
        self.scorer = scorer
        self.commit_every = max(commit_every, 1)
        self.review_below = review_below
        self.drift_limits = drift_limits or ScoreParams()
        self.reference_genres = reference_genres
        self.before_read = before_read
        self.recorded_as = recorded_as  # catalog_runs.run: "cli" or "prefect:<flow run id>"
        self.log = log
        self.started = time.perf_counter() if started is None else started
        self.summary = TaggingSummary(display(source), redact(database_url), model.model_name, model.model_version, model.provider)
        self.catalog: Catalog | None = None
        self.scan = SourceScan([])
        self.hashed: list[HashedTrack] = []
        self.unreadable: list[TrackFailure] = []
        self.plan = TaggingPlan([], [], [])
        self.stream: Iterator[ScoredTrack] | None = None
        self.results: list[ScoredTrack] = []  # the commit being scored and written

    @property
    def db(self) -> Catalog:
        """The open catalog (CatalogError until the open-catalog step ran)."""
        if self.catalog is None:
            raise CatalogError(f"catalog database {redact(self.database_url)}: not opened yet (the open-catalog step comes first)")
        return self.catalog

    def close(self) -> None:
        """Stop the scoring stream (and its decoding workers), then close the catalog."""
        try:
            if self.stream is not None:
                self.stream.close()
        finally:
            if self.catalog is not None:
                self.catalog.close()


# --- the steps --------------------------------------------------------------------------------------


def open_catalog(run: TaggingRun) -> None:
    """Open the catalog, creating its tables, and check it is writable before any file is read."""
    run.catalog = Catalog(run.database_url, check_writable=True)


def list_source(run: TaggingRun) -> None:
    """The source's tracks, and the files skipped (not audio, macOS metadata), counted."""
    run.scan = scan_source(run.source)
    run.summary.count_skipped(run.scan)


def hash_chunks(run: TaggingRun) -> list[list[TrackSource]]:
    """The listed tracks in chunks of HASH_CHUNK: the hash-tracks step's parts."""
    tracks = run.scan.tracks
    return [tracks[start : start + HASH_CHUNK] for start in range(0, len(tracks), HASH_CHUNK)]


def hash_chunk(run: TaggingRun, chunk: list[TrackSource]) -> None:
    """SHA-256 of each file; an OSError that is not a missing or forbidden file propagates, for a retry."""
    _add_hashes(run, *hash_tracks(chunk, before_read=run.before_read, strict=True))


def hash_chunk_leniently(run: TaggingRun, chunk: list[TrackSource]) -> None:
    """As :func:`hash_chunk`, but a file that cannot be read for any reason is recorded as unreadable."""
    _add_hashes(run, *hash_tracks(chunk, before_read=run.before_read, strict=False))


def _add_hashes(run: TaggingRun, hashed: list[HashedTrack], unreadable: list[TrackFailure]) -> None:
    run.hashed += hashed
    run.unreadable += unreadable


def plan(run: TaggingRun) -> None:
    """Split the hashed files into those to score, those this model version tagged, and repeats."""
    version = run.model.model_version
    run.plan = plan_tagging(run.hashed, run.db.tagged_shas((t.sha256 for t in run.hashed), model_version=version))
    run.summary.skipped, run.summary.duplicates = len(run.plan.already_tagged), len(run.plan.duplicates)
    run.log.info("%d tracks listed: %d to score, %d already tagged by %s, %d duplicate content, %d unreadable",
                 run.summary.listed, len(run.plan.todo), len(run.plan.already_tagged), version,
                 len(run.plan.duplicates), len(run.unreadable))


def refresh_moved_paths(run: TaggingRun) -> None:
    """Point this model version's tags of already-tagged files at where the files are now."""
    run.summary.moved = run.db.refresh_paths(run.plan.already_tagged, model_version=run.model.model_version)


def write_read_failures(run: TaggingRun) -> None:
    """An error row per file that could not be read (upserted: a rerun refreshes, never repeats it)."""
    version = run.model.model_version
    counts = run.db.write([], [error_row(f.track_id, f.path, f.sha256, f.reason, model_version=version) for f in run.unreadable])
    run.summary.add_failures(run.unreadable)
    run.summary.add_unstored(counts.unstored)


def commits(run: TaggingRun) -> range:
    """One part per commit of ``commit_every`` scored tracks (the scorer yields one result per track)."""
    return range(math.ceil(len(run.plan.todo) / run.commit_every))


def score_next(run: TaggingRun, _commit: int) -> None:
    """The next ``commit_every`` results of the scorer (started at the first commit; it runs ahead)."""
    if run.stream is None:
        run.stream = run.scorer(run.plan.todo)
    run.results = list(islice(run.stream, run.commit_every))


def write_scored(run: TaggingRun, _commit: int) -> None:
    """Write the results just scored in one transaction, and count them."""
    run.summary.record(write_results(run.db, run.results, model=run.model, review_below=run.review_below))


def measure_drift(run: TaggingRun) -> None:
    """The run's time, then its drift against the model's training reference (warnings kept on the summary)."""
    run.summary.seconds = time.perf_counter() - run.started
    run.summary.finish_drift(run.model.contract.drift_reference, score=run.drift_limits, fallback_genres=run.reference_genres)


def record_run(run: TaggingRun) -> None:
    """Append the run's row to catalog_runs (not retried: an append written twice would count the run twice)."""
    run.db.record_run(run.summary.run_row(), run=run.recorded_as)


def update_similarity_index(run: TaggingRun) -> None:
    """Add this model version's new track embeddings to its similarity index beside the catalog
    (genretag.similarity.index.update_index; ``similar.index_dir`` of the parameters). The tags are written
    already: an index that cannot be written is a warning, and the next ``genretag similar`` rebuilds it."""
    from genretag.core.config import load_params
    from genretag.core.errors import GenretagError
    from genretag.similarity.index import index_folder, update_index

    try:
        update_index(run.db, model_version=run.model.model_version, folder=index_folder(run.database_url, params=load_params()))
    except (GenretagError, OSError, ImportError) as exc:  # ImportError: an install without usearch
        run.log.warning("similarity index not updated: %s", exc)


# --- the one list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step: ``do(run)``, or ``do(run, part)`` inside a :class:`ForEach`."""

    name: str  # the Prefect task's name
    do: Callable[..., None]
    retry: bool = False  # reads or writes files or the database, idempotently: the flow retries it
    lenient: Callable[..., None] | None = None  # the last try, after the retries: records per item what still fails


@dataclass(frozen=True)
class ForEach:
    """Steps run for each part in turn: every step on the first part, then on the next."""

    parts: Callable[[TaggingRun], Sequence[Any]]
    steps: tuple[Step, ...]


TAGGING_STEPS: tuple[Step | ForEach, ...] = (
    Step("open-catalog", open_catalog, retry=True),
    Step("list-tracks", list_source, retry=True),
    ForEach(hash_chunks, (Step("hash-tracks", hash_chunk, retry=True, lenient=hash_chunk_leniently),)),
    Step("plan-tagging", plan, retry=True),
    Step("refresh-moved-paths", refresh_moved_paths, retry=True),
    Step("write-read-failures", write_read_failures, retry=True),
    ForEach(commits, (Step("score-tracks", score_next), Step("write-tags", write_scored, retry=True))),
    Step("measure-drift", measure_drift),
    Step("record-run", record_run),
    Step("update-similarity-index", update_similarity_index, retry=True),
)


def all_steps() -> tuple[Step, ...]:
    """Every step of :data:`TAGGING_STEPS` in order, those of each ForEach once."""
    return tuple(s for entry in TAGGING_STEPS for s in (entry.steps if isinstance(entry, ForEach) else (entry,)))


StepCall = Callable[..., None]
"""How a walker runs one step: ``call(step, run)`` or ``call(step, run, part)``."""


def call_directly(step: Step, run: TaggingRun, *part: Any) -> None:
    """A step's only try, in this process: the lenient form where it has one (no retry will follow)."""
    (step.lenient or step.do)(run, *part)


def run_steps(run: TaggingRun, *, call: StepCall = call_directly) -> TaggingSummary:
    """Run :data:`TAGGING_STEPS` in order with ``call``; close the run's stream and catalog in any case."""
    try:
        for entry in TAGGING_STEPS:
            if isinstance(entry, Step):
                call(entry, run)
                continue
            for part in entry.parts(run):
                for step in entry.steps:
                    call(step, run, part)
    finally:
        run.close()
    return run.summary


def tag_catalog(
    source: str | Path,
    *,
    model: ScoringModel,
    database_url: str,
    max_windows: int = 20,
    batch_size: int = 256,
    commit_every: int = 16,
    workers: int = 0,
    silence_rms_dbfs: float = -60.0,
    before_read: Callable[[Path], None] | None = None,
    reference_genres: Mapping[str, int] | None = None,
    drift_limits: ScoreParams | None = None,
    review_below: float = 0.5,
) -> TaggingSummary:
    """Tag every audio file of ``source`` with an open genretag.onnx.session.ScoringModel: the steps
    of :data:`TAGGING_STEPS` in this process, without Prefect, each tried once.

    Decoding runs in ``workers`` local processes (0: every core), ``max_windows`` 3-s windows per
    track (0: all), ``batch_size`` windows per session call, a commit every ``commit_every``
    tracks. The run's drift is measured against the model's own drift reference (its contract);
    ``reference_genres`` (training genre -> tracks) stands in for the genre PSI of a model without
    one; ``drift_limits`` (ScoreParams, default the built-in ones) sets the warnings' limits. Tags
    below ``review_below`` confidence are flagged needs_review. Raises CatalogError when the
    database cannot be opened or written, ScoringError when the source does not exist.
    """
    scorer = local_scorer(model, max_windows=max_windows, batch_size=batch_size, workers=workers, silence_rms_dbfs=silence_rms_dbfs)
    run = TaggingRun(source, model=model, database_url=database_url, scorer=scorer, commit_every=commit_every,
                     review_below=review_below, drift_limits=drift_limits, reference_genres=reference_genres,
                     before_read=before_read)
    return run_steps(run)
