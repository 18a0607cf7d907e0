"""A tagging run's steps, in ONE ordered list that both ways of tagging run.

:data:`TAGGING_STEPS`: check the source exists (before anything is created) -> open the catalog -> open
the source (a stream) -> for each round: [for each chunk of SCAN_CHUNK tracks, until the round holds
``max_pending`` tracks to score (or the source ends): fingerprint and hash it (only new or changed files
are read), resolve aliases (files write-tags changed), plan it (skip what this model version tagged or
failed on, tag repeated content once), point moved files' tags at their new paths, write the unreadable
files' error rows, name the chunk's skipped files and folders in catalog_skips -> score and write the
round's tracks, one commit at a time -> an error row for each copy of a file that failed] -> measure the
run's drift -> record the run -> add the new embeddings to the similarity index -> draw the run
(genretag.tagging.run_report: reports/tagging/<run id>/). The source is never listed whole, and a first
run over 10^6 new files never holds them all: a run holds one chunk and at most ``max_pending`` tracks
to score (plus one chunk's worth), whatever the catalog's size, and writes its first tags after the first
round's scan. :func:`tag_catalog` runs the steps directly, in this process, without Prefect;
``flows/tag_catalog.py`` runs each step as a Prefect task (retried where :attr:`Step.retry` says a retry
may clear a failure) through the same walker, :func:`run_steps`, so the order lives here only. Both share
one :class:`TaggingRun`: the state each step reads and advances.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from genretag.audio.folders import FileKind, Skip
from genretag.core.config import ScoreParams
from genretag.core.errors import CatalogError, ScoringError
from genretag.core.paths import absolute, display, quoted
from genretag.tagging.progress import Progress
from genretag.onnx.session import ScoringModel
from genretag.tagging.commit import write_results
from genretag.tagging.early_exit import EarlyExit
from genretag.tagging.rows import error_row
from genretag.tagging.run_report import RunReport, write_run_report
from genretag.tagging.scoring import ScoredTrack, score_files
from genretag.tagging.sources import (
    FingerprintMatch,
    SourceEntry,
    HashedTrack,
    TaggingPlan,
    TrackFailure,
    TrackSource,
    copies_of_failures,
    hash_tracks,
    match_fingerprints,
    open_source,
    plan_tagging,
    stat_tracks,
    HASH_TRIES,
)
from genretag.tagging.store import Catalog, redact
from genretag.tagging.summary import TaggingSummary

SCAN_CHUNK = 1000  # tracks per scan step (stat, fingerprint lookup, hash, plan): the memory of a scan, and what a retry redoes
NO_OPEN_SET = ("model {name} {version} has no out-of-taxonomy score (exported before genretag.open_set): it cannot say "
               "'unknown', every track gets one of its genres; re-export it (`dvc repro`, stage candidate-<id>) to add one")

Scorer = Callable[[Sequence[HashedTrack]], Iterator[ScoredTrack]]
"""Scores the tracks to tag: one ScoredTrack per track, in any order (decoded here or elsewhere)."""


def local_scorer(model: ScoringModel, *, max_windows: int, batch_size: int, workers: int, silence_rms_dbfs: float,
                 early_exit: EarlyExit | None = None) -> Scorer:
    """Decode in ``workers`` local processes (0: every core) and score here
    (genretag.tagging.scoring.score_files; ``max_windows`` 3-s windows per track, 0: all; ``early_exit``: in rounds)."""

    def score(todo: Sequence[HashedTrack]) -> Iterator[ScoredTrack]:
        return score_files(model, ((t, t.path) for t in todo), max_windows=max_windows, batch_size=batch_size,
                           workers=workers, silence_rms_dbfs=silence_rms_dbfs, early_exit=early_exit)

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
        max_pending: int = 10000,
        review_below: float = 0.5,
        drift_limits: ScoreParams | None = None,
        reference_genres: Mapping[str, int] | None = None,
        before_read: Callable[[Path], None] | None = None,
        while_hashing: Callable[[Path], None] | None = None,
        rehash: bool = False,
        retry_failed: bool = False,
        hash_workers: int = 0,
        progress_every_s: float = 30.0,
        progress_bars: bool | None = None,
        recorded_as: str = "cli",
        log: logging.Logger | logging.LoggerAdapter = logging.getLogger(__name__),
        started: float | None = None,
        create_catalog: bool = False,
        report_dir: Path | None = None,
        index_dir: str | None = None,
    ):
        self.source = str(source)
        self.model = model
        self.database_url = database_url
        self.scorer = scorer
        self.commit_every = max(commit_every, 1)
        self.max_pending = max(max_pending, 1)  # a round's scan stops once it holds this many tracks to score (and copies)
        self.review_below = review_below
        self.drift_limits = drift_limits or ScoreParams()
        self.reference_genres = reference_genres
        self.before_read = before_read
        self.while_hashing = while_hashing  # genretag.tagging.sources.hash_file's while_reading (faults, tests)
        self.rehash = rehash  # read every file, trusting no fingerprint
        self.retry_failed = retry_failed  # decode known failures again
        self.hash_workers = hash_workers  # hashing threads (0: every core)
        self.progress_every_s = progress_every_s
        self.progress_bars = sys.stderr.isatty() if progress_bars is None else progress_bars
        self.recorded_as = recorded_as  # catalog_runs.run: "cli" or "prefect:<flow run id>"
        self.create_catalog = create_catalog  # a SQLite catalog's missing folder is created (else: CatalogError)
        self.run_id = uuid.uuid4().hex  # catalog_runs.run_id, and run_id of each catalog_tags and catalog_skips row this run writes
        self.log = log
        self.started = time.perf_counter() if started is None else started
        self.summary = TaggingSummary(display(source), redact(database_url), model.model_name, model.model_version, model.provider)
        if not model.contract.open_set.available:  # said once per run, on the log and in the summary
            self.summary.notes.append(NO_OPEN_SET.format(name=model.model_name, version=model.model_version))
            self.log.warning(self.summary.notes[-1])
        self.catalog: Catalog | None = None
        self.progress: Progress | None = None
        self.chunks: Iterator[SourceChunk] = iter(())  # the source's chunks, drawn across the rounds
        self.next_chunk: SourceChunk | None = None  # drawn one ahead of the scan; None: the source has ended
        self.round = 0  # the round being run (1, 2, ...)
        self.to_score = 0  # tracks planned for scoring in every round so far
        self.hashed: list[HashedTrack] = []  # the chunk's tracks with their content hashes
        self.unreadable: list[TrackFailure] = []  # the chunk's tracks that could not be read
        self.plan = TaggingPlan([], [], [])  # the chunk's plan
        self.todo: list[HashedTrack] = []  # the round's tracks to score
        self.seen: set[str] = set()  # hashes planned in this round (self.todo, and content scored in an earlier round)
        self.stream: Iterator[ScoredTrack] | None = None  # the round's scorer results (open from its first commit to its last)
        self.duplicates: list[HashedTrack] = []  # the round's repeated content (its copies fail when it fails)
        self.results: list[ScoredTrack] = []  # the commit being scored and written
        self.scoring_failures: dict[str, TrackFailure] = {}  # by hash: content scored in this run (any round) that failed
        self.report_dir = report_dir  # the run report goes to report_dir/<run_id>/ (None: no report)
        self.index_dir = index_dir  # params similar.index_dir (None: the similarity index lives beside the catalog)
        self.report: RunReport | None = None  # written by the last step

    @property
    def db(self) -> Catalog:
        """The open catalog (CatalogError until the open-catalog step ran)."""
        if self.catalog is None:
            raise CatalogError(f"catalog database {redact(self.database_url)}: not opened yet (the open-catalog step comes first)")
        return self.catalog

    def close(self) -> None:
        """Stop the scoring stream (and its decoding workers) and the progress report, then close the catalog."""
        try:
            if self.stream is not None:
                self.stream.close()
        finally:
            if self.progress is not None:
                self.progress.close()
            if self.catalog is not None:
                self.catalog.close()


# --- the steps --------------------------------------------------------------------------------------


def check_source(run: TaggingRun) -> None:
    """Fail before anything is created (the catalog database included) when the source does not exist.
    Raises ScoringError naming it."""
    if not absolute(run.source).exists():
        raise ScoringError(f"{quoted(absolute(run.source))}: no such folder, CSV or audio file")


def open_catalog(run: TaggingRun) -> None:
    """Open the catalog, creating its tables (and a SQLite file's folder only with ``create_catalog``), and
    check it is writable before any file is read."""
    run.catalog = Catalog(run.database_url, check_writable=True, create_folder=run.create_catalog)


def list_source(run: TaggingRun) -> None:
    """Open the source as a stream of chunks (checked now: ScoringError when it does not exist or is
    not a readable CSV), and start reporting progress."""
    run.chunks = source_chunks(open_source(run.source))
    if run.progress is None:
        run.progress = Progress(log=run.log, every_s=run.progress_every_s, bars=run.progress_bars)


@dataclass(frozen=True)
class SourceChunk:
    """A part of the source: its tracks and the entries skipped among them (each at most SCAN_CHUNK)."""

    tracks: list[TrackSource]
    skips: list[tuple[FileKind, Skip]]  # kind: "not_audio", "apple_metadata" or "folder" (not walked)


def source_chunks(entries: Iterable[SourceEntry]) -> Iterator[SourceChunk]:
    """A source's ``entries``, SCAN_CHUNK tracks (or skips) at a time, drawn as the scan steps need them."""
    tracks: list[TrackSource] = []
    skips: list[tuple[FileKind, Skip]] = []
    for kind, entry in entries:
        (tracks.append(entry) if kind == "audio" else skips.append((kind, entry)))
        if len(tracks) == SCAN_CHUNK or len(skips) == SCAN_CHUNK:
            yield SourceChunk(tracks, skips)
            tracks, skips = [], []
    if tracks or skips:
        yield SourceChunk(tracks, skips)


def rounds(run: TaggingRun) -> Iterator[int]:
    """One part per round (1, 2, ...): a scan of the source's next chunks, then the scoring of what it
    planned. A round starts with nothing to score (the last round's tracks are let go) and only while the
    source has a chunk left, the first round always (an empty source is one empty round)."""
    run.next_chunk = next(run.chunks, None)
    while run.round == 0 or run.next_chunk is not None:
        run.round += 1
        run.todo, run.seen, run.duplicates = [], set(), []
        yield run.round


def round_chunks(run: TaggingRun) -> Iterator[SourceChunk]:
    """The round's chunks of the source, each drawn once the one before is planned: until the round holds
    ``max_pending`` tracks (to score, and copies of them, which wait for their outcome) or the source ends."""
    while run.next_chunk is not None and len(run.todo) + len(run.duplicates) < run.max_pending:
        yield run.next_chunk
        run.next_chunk = next(run.chunks, None)


def hash_chunk(run: TaggingRun, chunk: SourceChunk) -> None:
    """Each track's content hash: from its fingerprint when the catalog knows it unchanged (at this path,
    or moved to it), else read (on every core). An OSError that is not a missing or forbidden file
    propagates, for a retry."""
    _hash(run, chunk, strict=True)


def hash_chunk_leniently(run: TaggingRun, chunk: SourceChunk) -> None:
    """As :func:`hash_chunk`, but a file that cannot be read for any reason is recorded as unreadable."""
    _hash(run, chunk, strict=False)


def _hash(run: TaggingRun, chunk: SourceChunk, *, strict: bool) -> None:
    stated, unreadable = stat_tracks(chunk.tracks)
    by_path = run.db.fingerprints([display(item.track.path) for item in stated])
    if run.rehash:
        match = FingerprintMatch([], [], stated)
    else:
        match = match_fingerprints(stated, by_path=by_path, by_inode=run.db.fingerprints_by_inode)
    outcome = hash_tracks(match.to_hash, workers=run.hash_workers, before_read=run.before_read, while_reading=run.while_hashing,
                          strict=strict, on_done=run.progress.hashed if run.progress else None)
    run.db.record_fingerprints(match.renamed + outcome.hashed)
    # the chunk is done (a retry above redoes it whole): count it
    summary = run.summary
    summary.listed += len(chunk.tracks)
    summary.unchanged += len(match.unchanged)
    summary.renamed += len(match.renamed)
    summary.hashed += len(outcome.hashed)
    summary.bytes_hashed += outcome.bytes_read
    summary.unstable += [display(track.path) for track in outcome.unstable]
    for track in outcome.unstable:
        run.log.warning("%s: changed while it was read, %d times: skipped as unstable (tried again next run)",
                        quoted(track.path), HASH_TRIES)
    for track, fingerprint in outcome.hashed:
        known = by_path.get(display(track.path))
        if run.rehash and known is not None and known.fingerprint == fingerprint and known.sha256 != track.sha256:
            summary.changed_in_place.append(display(track.path))
            run.log.warning("%s: content changed in place under the same size and mtime (found by --rehash)", quoted(track.path))
    if run.progress is not None:
        run.progress.listed_files(len(chunk.tracks), unchanged=len(match.unchanged) + len(match.renamed))
    run.hashed = match.unchanged + [track for track, _ in match.renamed] + [track for track, _ in outcome.hashed]
    run.unreadable = unreadable + outcome.failed


def resolve_aliases(run: TaggingRun, _chunk: SourceChunk) -> None:
    """Know each hashed file by the content hash the catalog holds for it: a file that `genretag write-tags`
    wrote tags into has a new SHA-256, recorded as an alias of its old one (catalog_aliases)."""
    canonical = run.db.canonical(t.sha256 for t in run.hashed)
    run.hashed = [HashedTrack(t.track_id, t.path, canonical[t.sha256]) for t in run.hashed]


def plan(run: TaggingRun, _chunk: SourceChunk) -> None:
    """Split the chunk's hashed files into those to score, those this model version tagged, those whose
    content failed with it before (not decoded again unless ``retry_failed``), and repeats: of content
    planned earlier in the round, or scored in an earlier round of this run (its tag carries this run's
    run_id, or it failed in this run), so a run's rows and counts do not depend on ``max_pending``."""
    version = run.model.model_version
    shas = [t.sha256 for t in run.hashed]
    tagged = run.db.tagged_shas(shas, model_version=version)
    failed = set() if run.retry_failed else run.db.failed_shas(shas, model_version=version)
    earlier = {sha for sha, run_id in tagged.items() if run_id == run.run_id} | (set(shas) & run.scoring_failures.keys())
    run.seen |= earlier
    run.plan = plan_tagging(run.hashed, tagged.keys() - earlier, failed=failed - earlier, seen=run.seen)
    run.todo += run.plan.todo
    run.duplicates += run.plan.duplicates
    run.summary.skipped += len(run.plan.already_tagged)
    run.summary.duplicates += len(run.plan.duplicates)
    run.summary.add_known_failures(display(t.path) for t in run.plan.known_failures)


def refresh_moved_paths(run: TaggingRun, _chunk: SourceChunk) -> None:
    """Point this model version's tags of the chunk's already-tagged files at where the files are now."""
    run.summary.moved += run.db.refresh_paths(run.plan.already_tagged, model_version=run.model.model_version)


def write_read_failures(run: TaggingRun, _chunk: SourceChunk) -> None:
    """An error row per file of the chunk that could not be read (upserted: a rerun refreshes, never repeats it)."""
    version = run.model.model_version
    counts = run.db.write([], [error_row(f.track_id, f.path, f.sha256, f.reason, model_version=version) for f in run.unreadable])
    run.summary.add_failures(run.unreadable)
    run.summary.add_unstored(counts.unstored)


def write_skips(run: TaggingRun, chunk: SourceChunk) -> None:
    """Name each file and folder of the chunk that was skipped in catalog_skips (under the run's run_id), in
    one transaction, then count them; each folder not walked gets a warning line, and the first
    NAMES_KEPT files skipped of each kind an info line (the table names them all; a run killed before
    record-run leaves its skips under a run_id that catalog_runs does not hold)."""
    run.db.record_skips(((skip.path, skip.reason) for _, skip in chunk.skips), run_id=run.run_id)
    for kind, skip in chunk.skips:
        kept = run.summary.add_skip(kind, skip)
        if kind == "folder":
            run.log.warning("skipped: %s: %s", quoted(skip.path), skip.reason)
        elif kept:
            run.log.info("skipped: %s: %s", quoted(skip.path), skip.reason)


def commits(run: TaggingRun) -> range:
    """One part per commit of ``commit_every`` of the round's tracks to score (the scorer yields one result
    per track); the round's scan is complete here: its tracks join the scoring progress's total, and the
    scan's counts are logged (a line per round while the source has more, the whole run's after the last)."""
    summary = run.summary
    run.to_score += len(run.todo)
    if run.next_chunk is not None:
        run.log.info("round %d: %d tracks to score (score.max_pending %d); %d tracks listed so far",
                     run.round, len(run.todo), run.max_pending, summary.listed)
    else:
        run.log.info("%d tracks listed: %d to score%s, %d already tagged by %s, %d known failures not decoded again%s, "
                     "%d duplicate content, %d unreadable, %d unstable; %d read (%.1f MB), %d unchanged and %d moved not read",
                     summary.listed, run.to_score, f" (in {run.round} rounds)" if run.round > 1 else "", summary.skipped,
                     run.model.model_version, summary.known_failures,
                     " (--retry-failed decodes them)" if summary.known_failures else "", summary.duplicates, summary.failed,
                     len(summary.unstable), summary.hashed, summary.bytes_hashed / 1e6, summary.unchanged, summary.renamed)
    if run.progress is not None:
        run.progress.start_scoring(len(run.todo))
    return range(math.ceil(len(run.todo) / run.commit_every))


def _counted(run: TaggingRun, stream: Iterator[ScoredTrack]) -> Iterator[ScoredTrack]:
    for result in stream:
        if run.progress is not None:
            run.progress.scored_track(tagged=result.score is not None)
        yield result


def score_next(run: TaggingRun, commit: int) -> None:
    """The round's next ``commit_every`` results of the scorer (started at the round's first commit, it runs
    ahead; stopped after its last, which ends its decoding workers)."""
    if run.stream is None:
        run.stream = _counted(run, run.scorer(run.todo))
    run.results = list(islice(run.stream, run.commit_every))
    if (commit + 1) * run.commit_every >= len(run.todo):
        run.stream.close()
        run.stream = None


def write_scored(run: TaggingRun, _commit: int) -> None:
    """Write the results just scored in one transaction, and count them."""
    outcome = write_results(run.db, run.results, model=run.model, review_below=run.review_below, run_id=run.run_id)
    run.summary.record(outcome)
    run.scoring_failures.update((f.sha256, f) for f in outcome.failures)


def write_copy_failures(run: TaggingRun, _round: int) -> None:
    """An error row of its own for each of the round's copies (same bytes) of a file that failed in this run."""
    copies = copies_of_failures(run.duplicates, run.scoring_failures.values())
    version = run.model.model_version
    counts = run.db.write([], [error_row(f.track_id, f.path, f.sha256, f.reason, model_version=version) for f in copies])
    run.summary.duplicates -= len(copies)
    run.summary.add_failures(copies)
    run.summary.add_unstored(counts.unstored)


def measure_drift(run: TaggingRun) -> None:
    """The run's time, then its drift against the model's training reference (warnings kept on the summary)."""
    run.summary.seconds = time.perf_counter() - run.started
    run.summary.finish_drift(run.model.contract.drift_reference, score=run.drift_limits, fallback_genres=run.reference_genres)


def record_run(run: TaggingRun) -> None:
    """Append the run's row to catalog_runs (not retried: an append written twice would count the run twice)."""
    run.db.record_run(run.summary.run_row(), run=run.recorded_as, run_id=run.run_id)


def update_similarity_index(run: TaggingRun) -> None:
    """Add this model version's new track embeddings to its similarity index beside the catalog
    (genretag.similarity.index.update_index, in the run's ``index_dir``: params ``similar.index_dir``). The tags are written
    already: an index that cannot be written is a warning, and the next ``genretag similar`` rebuilds it."""
    from genretag.core.errors import GenretagError
    from genretag.similarity.index import index_folder, update_index

    try:
        update_index(run.db, model_version=run.model.model_version, folder=index_folder(run.database_url, index_dir=run.index_dir))
    except (GenretagError, OSError, ImportError) as exc:  # ImportError: an install without usearch
        run.log.warning("similarity index not updated: %s", exc)


def draw_run(run: TaggingRun) -> None:
    """The run's picture and page in report_dir/<run_id>/ (genretag.tagging.run_report), when a report_dir is set."""
    if run.report_dir is not None:
        run.report = write_run_report(run.summary, folder=run.report_dir / run.run_id, run_id=run.run_id,
                                      review_below=run.review_below)
        run.log.info("run report: %s", run.report.page)


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
    """Steps run for each part in turn: every step on the first part, then on the next. A ForEach among
    the steps runs whole, on its own parts, for each part of this one."""

    parts: Callable[[TaggingRun], Iterable[Any]]  # drawn lazily, one part at a time
    steps: tuple[Step | ForEach, ...]


TAGGING_STEPS: tuple[Step | ForEach, ...] = (
    Step("check-source", check_source),
    Step("open-catalog", open_catalog, retry=True),
    Step("list-tracks", list_source, retry=True),
    ForEach(rounds, (
        ForEach(round_chunks, (
            Step("hash-tracks", hash_chunk, retry=True, lenient=hash_chunk_leniently),
            Step("resolve-aliases", resolve_aliases, retry=True),
            Step("plan-tagging", plan, retry=True),
            Step("refresh-moved-paths", refresh_moved_paths, retry=True),
            Step("write-read-failures", write_read_failures, retry=True),
            Step("write-skips", write_skips, retry=True),
        )),
        ForEach(commits, (Step("score-tracks", score_next), Step("write-tags", write_scored, retry=True))),
        Step("write-copy-failures", write_copy_failures, retry=True),
    )),
    Step("measure-drift", measure_drift),
    Step("record-run", record_run),
    Step("update-similarity-index", update_similarity_index, retry=True),
    Step("draw-run", draw_run, retry=True),
)


def _flat(entries: Iterable[Step | ForEach]) -> Iterator[Step]:
    for entry in entries:
        yield from _flat(entry.steps) if isinstance(entry, ForEach) else (entry,)


def all_steps() -> tuple[Step, ...]:
    """Every step of :data:`TAGGING_STEPS` in order, those of each ForEach (nested ones too) once."""
    return tuple(_flat(TAGGING_STEPS))


StepCall = Callable[..., None]
"""How a walker runs one step: ``call(step, run)`` or ``call(step, run, part)``."""


def call_directly(step: Step, run: TaggingRun, *part: Any) -> None:
    """A step's only try, in this process: the lenient form where it has one (no retry will follow)."""
    (step.lenient or step.do)(run, *part)


def _walk(entries: Iterable[Step | ForEach], run: TaggingRun, call: StepCall, *part: Any) -> None:
    """Each of ``entries`` in order: a Step by ``call(step, run, *part)`` (``part``: the innermost
    ForEach's, none at the top), a ForEach's entries for each of its parts."""
    for entry in entries:
        if isinstance(entry, Step):
            call(entry, run, *part)
            continue
        for inner in entry.parts(run):
            _walk(entry.steps, run, call, inner)


def run_steps(run: TaggingRun, *, call: StepCall = call_directly) -> TaggingSummary:
    """Run :data:`TAGGING_STEPS` in order with ``call``; close the run's stream and catalog in any case."""
    try:
        _walk(TAGGING_STEPS, run, call)
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
    max_pending: int = 10000,
    workers: int = 0,
    silence_rms_dbfs: float = -60.0,
    before_read: Callable[[Path], None] | None = None,
    reference_genres: Mapping[str, int] | None = None,
    drift_limits: ScoreParams | None = None,
    review_below: float = 0.5,
    rehash: bool = False,
    retry_failed: bool = False,
    progress_every_s: float = 30.0,
    progress_bars: bool | None = None,
    log: logging.Logger | logging.LoggerAdapter = logging.getLogger(__name__),
    early_exit: EarlyExit | None = None,
    create_catalog: bool = False,
    report_dir: Path | None = None,
    index_dir: str | None = None,
) -> TaggingSummary:
    """Tag every audio file of ``source`` with an open genretag.onnx.session.ScoringModel: the steps
    of :data:`TAGGING_STEPS` in this process, without Prefect, each tried once.

    Decoding runs in ``workers`` local processes (0: every core), ``max_windows`` 3-s windows per
    track (0: all), ``batch_size`` windows per session call, a commit every ``commit_every``
    tracks. The source is scanned and scored in rounds that hold at most ``max_pending`` tracks (plus
    one scan chunk): that bounds the run's memory, and each round restarts the decoding workers. The
    run's drift is measured against the model's own drift reference (its contract);
    ``reference_genres`` (training genre -> tracks) stands in for the genre PSI of a model without
    one; ``drift_limits`` (ScoreParams, default the built-in ones) sets the warnings' limits. Tags
    below ``review_below`` confidence are flagged needs_review. Files are read only when new or
    changed (their fingerprint), on ``workers`` threads; ``rehash`` reads every file. Content that
    failed with this model version is not decoded again unless ``retry_failed``. Progress: bars on
    stderr when it is a terminal (``progress_bars`` None), else a line on ``log`` every
    ``progress_every_s`` seconds. With ``early_exit`` each track's windows are scored in rounds until the
    rest cannot change its genre (genretag.tagging.early_exit). A SQLite catalog's folder is created only
    with ``create_catalog``. Raises ScoringError when the source does not exist and CatalogError when the
    database cannot be opened or written, both before anything is created. With ``report_dir``, the run's picture and page go to
    ``report_dir/<run id>/`` (genretag.tagging.run_report). The new embeddings are added to the similarity index in
    ``index_dir`` (params ``similar.index_dir``; None: beside the catalog, genretag.similarity.index.index_folder).
    """
    scorer = local_scorer(model, max_windows=max_windows, batch_size=batch_size, workers=workers, silence_rms_dbfs=silence_rms_dbfs,
                          early_exit=early_exit)
    run = TaggingRun(source, model=model, database_url=database_url, scorer=scorer, commit_every=commit_every,
                     max_pending=max_pending, review_below=review_below, drift_limits=drift_limits,
                     reference_genres=reference_genres, before_read=before_read, rehash=rehash, retry_failed=retry_failed,
                     hash_workers=workers,
                     progress_every_s=progress_every_s, progress_bars=progress_bars, log=log, create_catalog=create_catalog,
                     report_dir=report_dir, index_dir=index_dir)
    return run_steps(run)
