"""What one tagging run did: counts, failures, genres, input statistics and drift; its markdown report."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genretag.audio.folders import Skip
from genretag.core.paths import display, quoted
from genretag.evaluation.drift import InputStats, drift_markdown, drift_warnings, run_drift
from genretag.tagging.commit import WriteOutcome
from genretag.tagging.sources import TrackFailure

NAMES_KEPT = 100  # paths a summary names per kind of skip (the counts are complete)


def _cell(text: str) -> str:
    """``text`` for one markdown table cell: quoted (genretag.core.paths.quoted) and its pipes escaped (GFM)."""
    return quoted(text).replace("|", "\\|")


@dataclass
class TaggingSummary:
    """What one tagging run did; ``to_dict`` is the flow's return value."""

    source: str
    database: str
    model_name: str
    model_version: str
    provider: str
    listed: int = 0  # audio files (tracks) found
    not_audio: int = 0  # files skipped: no decoder reads their suffix
    apple_metadata: int = 0  # files skipped: AppleDouble ._* and __MACOSX/
    folders_skipped: int = 0  # folders not walked: unreadable, or already walked (a link loop)
    skips: list[dict[str, str]] = field(default_factory=list)  # files and folders skipped, NAMES_KEPT per kind: {"path", "reason"}
    moved: int = 0  # already-tagged files whose stored path was updated
    unchanged: int = 0  # tracks whose fingerprint matched at the same path: not read
    renamed: int = 0  # tracks whose fingerprint matched at another path (moved, renamed, hard link): not read
    hashed: int = 0  # tracks read and hashed (new, changed, or --rehash)
    bytes_hashed: int = 0
    unstable: list[str] = field(default_factory=list)  # changed during every read: skipped, tried again next run
    known_failures: int = 0  # content that failed with this model version before: not decoded again
    known_failure_paths: list[str] = field(default_factory=list)  # the first NAMES_KEPT of them
    changed_in_place: list[str] = field(default_factory=list)  # --rehash: new content under an unchanged fingerprint
    tagged: int = 0
    skipped: int = 0  # already tagged by this model version
    duplicates: int = 0  # same bytes as another file of this run
    failed: int = 0
    windows_scored: int = 0
    windows_silent: int = 0  # windows of tagged tracks skipped as silent
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    genre_counts: Counter[str] = field(default_factory=Counter)
    confidences: list[float] = field(default_factory=list)  # top-1 probability of each track tagged (the run report's histogram)
    genre_psi: float | None = None  # drift of genre_counts from the training genres (None: no reference or nothing tagged)
    audio: list[InputStats] = field(default_factory=list)  # input statistics of the tracks tagged
    embedding_sum: Any = None  # float64 [D]: sum of the tagged windows' embeddings (None: none yet)
    drift: dict[str, Any] = field(default_factory=dict)  # genretag.drift.run_drift, set by finish_drift
    drift_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the run says once (e.g. a model that cannot say unknown)

    def finish_drift(self, reference: Mapping[str, Any] | None, *, score: Any, fallback_genres: Mapping[str, int] | None = None) -> list[str]:
        """Measure the run's drift against the model's training ``reference`` (its contract's
        drift_reference; genre PSI falls back to ``fallback_genres``); return the warnings past
        ``score`` (ScoreParams) drift_* limits, also kept on the summary."""
        self.drift = run_drift(reference or None, audio=self.audio, embedding_sum=self.embedding_sum,
                               embedding_windows=self.windows_scored, genre_counts=self.genre_counts, fallback_genres=fallback_genres,
                               min_tracks=score.drift_min_tracks)
        self.genre_psi = self.drift["genre_psi"]
        self.drift_warnings = drift_warnings(self.drift, psi_limit=score.drift_psi_warn, embedding_limit=score.drift_embedding_warn,
                                             loudness_limit_db=score.drift_loudness_warn_db)
        return self.drift_warnings

    @property
    def files(self) -> int:
        """Every file under the source: tagged + skipped + duplicates + failed + not audio + metadata."""
        return self.listed + self.not_audio + self.apple_metadata

    def add_skip(self, kind: str, skip: Skip) -> bool:
        """One more entry skipped: a file of ``kind`` "not_audio" or "apple_metadata", or a "folder" not walked.
        Counted; named in :attr:`skips` while fewer than NAMES_KEPT of its kind are (returns whether it is)."""
        field_name = "folders_skipped" if kind == "folder" else kind
        count = getattr(self, field_name) + 1
        setattr(self, field_name, count)
        if count <= NAMES_KEPT:
            self.skips.append({"path": display(skip.path), "reason": skip.reason})
        return count <= NAMES_KEPT

    def add_known_failures(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.known_failures += 1
            if len(self.known_failure_paths) < NAMES_KEPT:
                self.known_failure_paths.append(display(path))

    @property
    def tracks_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    def record(self, outcome: WriteOutcome) -> None:
        """Count a commit. A tag another run wrote meanwhile counts as skipped."""
        self.tagged += outcome.counts.tagged
        self.skipped += outcome.counts.existing
        self.genre_counts.update(outcome.genres)
        self.confidences.extend(outcome.confidences)
        self.windows_scored += outcome.windows_scored
        self.windows_silent += outcome.windows_silent
        self.audio.extend(outcome.audio)
        if outcome.embedding_sum is not None:
            self.embedding_sum = outcome.embedding_sum if self.embedding_sum is None else self.embedding_sum + outcome.embedding_sum
        self.add_failures(outcome.failures)
        self.add_unstored(outcome.counts.unstored)

    def add_unstored(self, unstored: Iterable[str]) -> None:
        """Rows the database refused even as error rows ("path: reason"): failures of this run."""
        for line in unstored:
            path, _, reason = line.partition(": ")
            self.failed += 1
            self.failures.append({"path": path, "reason": reason})

    def add_failures(self, failures: Iterable[TrackFailure]) -> None:
        for failure in failures:
            self.failed += 1
            self.failures.append({"path": display(failure.path), "reason": display(failure.reason)})

    def run_row(self) -> dict[str, Any]:
        """The run's catalog_runs columns (genretag.tagging.store) but finished_at and run."""
        return {
            "source": self.source, "model_name": self.model_name, "model_version": self.model_version,
            "provider": self.provider, "listed": self.listed, "tagged": self.tagged, "skipped": self.skipped,
            "duplicates": self.duplicates, "failed": self.failed, "windows_scored": self.windows_scored,
            "seconds": round(self.seconds, 3), "genre_counts": json.dumps(dict(sorted(self.genre_counts.items()))),
            "genre_psi": self.genre_psi, "embedding_shift": self.drift.get("embedding_shift"),
            "loudness_dbfs": self.drift.get("loudness_dbfs"), "drift": json.dumps(self.drift),
            "drift_warnings": json.dumps(self.drift_warnings),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "database": self.database,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "provider": self.provider,
            "files": self.files,
            "listed": self.listed,
            "not_audio": self.not_audio,
            "apple_metadata": self.apple_metadata,
            "folders_skipped": self.folders_skipped,
            "skips": list(self.skips),
            "moved": self.moved,
            "unchanged": self.unchanged,
            "renamed": self.renamed,
            "hashed": self.hashed,
            "bytes_hashed": self.bytes_hashed,
            "unstable": list(self.unstable),
            "known_failures": self.known_failures,
            "known_failure_paths": list(self.known_failure_paths),
            "changed_in_place": list(self.changed_in_place),
            "tagged": self.tagged,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "failures": list(self.failures),
            "genre_counts": dict(sorted(self.genre_counts.items())),
            "genre_psi": self.genre_psi,
            "drift": dict(self.drift),
            "drift_warnings": list(self.drift_warnings),
            "windows_scored": self.windows_scored,
            "windows_silent": self.windows_silent,
            "seconds": round(self.seconds, 3),
            "tracks_per_second": round(self.tracks_per_second, 3),
            "notes": list(self.notes),
        }

    def to_markdown(self, *, max_failures: int = 50) -> str:
        lines = [
            f"# Catalog tagging: {self.model_name} {self.model_version} on {self.provider}",
            "",
            f"Source `{self.source}` -> `{self.database}`",
            "",
            f"{self.files} files: {self.listed} audio, {self.not_audio} skipped (not audio), "
            f"{self.apple_metadata} skipped (macOS metadata: ._* and __MACOSX/); {self.folders_skipped} folders not walked "
            "(each skip named in catalog_skips)",
            "",
            "| tracks listed | tagged | skipped (already tagged) | duplicate content | failed | tracks/s | windows | silent windows |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {self.listed} | {self.tagged} | {self.skipped} | {self.duplicates} | {self.failed} "
            f"| {self.tracks_per_second:.2f} | {self.windows_scored} | {self.windows_silent} |",
            "",
            f"Read: {self.hashed} files hashed ({self.bytes_hashed / 1e6:.1f} MB); not read: {self.unchanged} unchanged, "
            f"{self.renamed} moved or renamed (known by their fingerprint). {self.known_failures} known failures not decoded "
            f"again (--retry-failed decodes them); {len(self.unstable)} unstable (changing while read: tried again next run).",
            "",
            *(f"- changing while read: `{quoted(path)}`" for path in self.unstable[:NAMES_KEPT]),
            *(f"- failed before with this model version: `{quoted(path)}`" for path in self.known_failure_paths),
            *(f"- **changed in place** (same size and mtime, found by --rehash): `{quoted(path)}`"
              for path in self.changed_in_place[:NAMES_KEPT]),
            *(f"- skipped: `{quoted(skip['path'])}`: {skip['reason']}" for skip in self.skips),
            "",
            *(line for note in self.notes for line in (f"Note: {note}", "")),
            "## Genres tagged in this run",
            "",
            "| genre | tracks |",
            "| --- | ---: |",
            *(f"| {genre} | {count} |" for genre, count in self.genre_counts.most_common()),
            "",
            "Drift of these genres from the training tracks' (PSI): "
            + ("not measured (no training reference, or nothing tagged)" if self.genre_psi is None else f"{self.genre_psi:.4f}"),
            "",
            drift_markdown(self.drift, self.drift_warnings).rstrip("\n"),
        ]
        if self.failures:
            lines += ["", "## Failed files", "", "| file | reason |", "| --- | --- |"]
            lines += [
                f"| `{_cell(f['path'])}` | {_cell(f['reason'])} |" for f in self.failures[:max_failures]
            ]
            if len(self.failures) > max_failures:
                lines.append(f"| ... | {len(self.failures) - max_failures} more in catalog_errors |")
        return "\n".join(lines) + "\n"
