"""One tagging run's state: its inputs and what its steps (genretag.tagging.scan, genretag.tagging.run)
read and advance, in genretag.tagging.run.TAGGING_STEPS order; and the :data:`Scorer` it is given.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from genretag.core.config import ScoreParams
from genretag.core.errors import CatalogError
from genretag.core.paths import display
from genretag.onnx.session import ScoringModel
from genretag.tagging.database import redact
from genretag.tagging.planning import TaggingPlan
from genretag.tagging.progress import Progress
from genretag.tagging.run_report import RunReport
from genretag.tagging.scoring import ScoredTrack
from genretag.tagging.sources import HashedTrack, SourceChunk, TrackFailure
from genretag.tagging.store import Catalog
from genretag.tagging.summary import TaggingSummary

NO_OPEN_SET = ("model {name} {version} has no out-of-taxonomy score (exported before genretag.open_set): it cannot say "
               "'unknown', every track gets one of its genres; re-export it (`dvc repro`, stage candidate-<id>) to add one")

Scorer = Callable[[Sequence[HashedTrack]], Iterator[ScoredTrack]]
"""Scores the tracks to tag: one ScoredTrack per track, in any order (decoded here or elsewhere)."""


class TaggingRun:
    """One tagging run's inputs and the state its steps read and advance, in :data:`~genretag.tagging.run.TAGGING_STEPS` order.

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
        log: logging.Logger | logging.LoggerAdapter = logging.getLogger("genretag.tagging.run"),  # tag_catalog's
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
        self.while_hashing = while_hashing  # genretag.tagging.fingerprints.hash_file's while_reading (faults, tests)
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

