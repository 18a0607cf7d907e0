"""A tagging run's steps up to each round's scoring: check the source, open the catalog, open the source
(a stream of chunks); then, for each round, each chunk of it: hash it (only new or changed files are
read), resolve aliases, plan it, point moved files' tags at their new paths, write the unreadable files'
error rows, and name its skipped files and folders. genretag.tagging.run.TAGGING_STEPS orders them.
"""

from __future__ import annotations

from collections.abc import Iterator

from genretag.core.errors import ScoringError
from genretag.core.paths import absolute, display, quoted
from genretag.tagging.fingerprints import HASH_TRIES, FingerprintMatch, hash_tracks, match_fingerprints, stat_tracks
from genretag.tagging.planning import plan_tagging
from genretag.tagging.progress import Progress
from genretag.tagging.rows import error_row
from genretag.tagging.run_state import TaggingRun
from genretag.tagging.sources import HashedTrack, SourceChunk, open_source, source_chunks
from genretag.tagging.store import Catalog


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

