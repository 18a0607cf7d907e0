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
``flows/tag_catalog.py`` runs each step as a Prefect task (retried where
:attr:`~genretag.tagging.steps.Step.retry` says a retry may clear a failure) through the same walker,
:func:`run_steps`, so the order lives here only. Both share one
:class:`~genretag.tagging.run_state.TaggingRun`: the state each step reads and advances. The steps up to
each round's scoring are genretag.tagging.scan; the scoring steps and the run's last ones are here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path

from genretag.core.config import ScoreParams
from genretag.onnx.session import ScoringModel
from genretag.tagging.commit import write_results
from genretag.tagging.early_exit import EarlyExit
from genretag.tagging.planning import copies_of_failures
from genretag.tagging.rows import error_row
from genretag.tagging.run_report import write_run_report
from genretag.tagging.run_state import Scorer, TaggingRun
from genretag.tagging.scan import (
    check_source,
    hash_chunk,
    hash_chunk_leniently,
    list_source,
    open_catalog,
    plan,
    refresh_moved_paths,
    resolve_aliases,
    round_chunks,
    rounds,
    write_read_failures,
    write_skips,
)
from genretag.tagging.scoring import ScoredTrack, score_files
from genretag.tagging.sources import HashedTrack
from genretag.tagging.steps import ForEach, Step, StepCall, call_directly, flat_steps, walk_steps
from genretag.tagging.summary import TaggingSummary


def local_scorer(model: ScoringModel, *, max_windows: int, batch_size: int, workers: int, silence_rms_dbfs: float,
                 early_exit: EarlyExit | None = None) -> Scorer:
    """Decode in ``workers`` local processes (0: every core) and score here
    (genretag.tagging.scoring.score_files; ``max_windows`` 3-s windows per track, 0: all; ``early_exit``: in rounds)."""

    def score(todo: Sequence[HashedTrack]) -> Iterator[ScoredTrack]:
        return score_files(model, ((t, t.path) for t in todo), max_windows=max_windows, batch_size=batch_size,
                           workers=workers, silence_rms_dbfs=silence_rms_dbfs, early_exit=early_exit)

    return score


# --- the steps --------------------------------------------------------------------------------------


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


def all_steps() -> tuple[Step, ...]:
    """Every step of :data:`TAGGING_STEPS` in order, those of each ForEach (nested ones too) once."""
    return tuple(flat_steps(TAGGING_STEPS))


def run_steps(run: TaggingRun, *, call: StepCall = call_directly) -> TaggingSummary:
    """Run :data:`TAGGING_STEPS` in order with ``call``; close the run's stream and catalog in any case."""
    try:
        walk_steps(TAGGING_STEPS, run, call)
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
