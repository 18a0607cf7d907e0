"""The catalog database: one row per (file content, model version) tagged, one per failure.

SQLAlchemy 2 Core, SQLite by default (a file in the project), PostgreSQL by URL. A file is
known by the SHA-256 of its bytes: a rerun skips what the same model version already
tagged (before decoding anything), a new model version tags everything again, and the
UNIQUE (sha256, model_version) constraints keep any row from being written twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from genretag.core.atomic import atomic_path, write_csv
from genretag.audio.decoding import file_sha256, is_apple_metadata, is_audio_name, scan_folder
from genretag.core.config import Params, ScoreParams, resolve_sqlite_url
from genretag.evaluation.drift import InputStats, drift_markdown, drift_warnings, run_drift
from genretag.core.errors import CatalogError, GenretagError, ScoringError
from genretag.core.paths import absolute, display, exact_bytes

CATALOG_URL_ENV = "GENRETAG_CATALOG_URL"

metadata = sa.MetaData()

catalog_tags = sa.Table(
    "catalog_tags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("track_id", sa.String(512), nullable=False),
    sa.Column("path", sa.Text, nullable=False),  # absolute; display form (genretag.paths.display)
    sa.Column("path_bytes", sa.LargeBinary, nullable=True),  # the exact bytes when the name is not UTF-8
    sa.Column("sha256", sa.String(80), nullable=False),
    sa.Column("genre", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("top3", sa.Text, nullable=False),  # JSON [{"genre": ..., "probability": ...}] x 3
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON {label: probability}
    sa.Column("windows_scored", sa.Integer, nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    # Added with contract v2; the server defaults describe rows written before (v1 models, no window skipped).
    sa.Column("contract_version", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("windows_silent", sa.Integer, nullable=False, server_default=sa.text("0")),  # skipped as silent
    # Input audio statistics (genretag.drift.InputStats); empty for rows written before them.
    sa.Column("source_sample_rate", sa.Integer, nullable=True),  # Hz of the file before resampling
    sa.Column("duration_s", sa.Float, nullable=True),
    sa.Column("loudness_dbfs", sa.Float, nullable=True),  # RMS of the scored windows
    # Added with the review loop (genretag.review): old rows are not flagged and have no timeline.
    sa.Column("needs_review", sa.Boolean, nullable=False, server_default=sa.text("false")),  # confidence < score.review_below
    sa.Column("window_probabilities", sa.Text, nullable=True),  # JSON, see window_timeline
    sa.UniqueConstraint("sha256", "model_version", name="uq_catalog_tags_sha256_model_version"),
)

catalog_errors = sa.Table(
    "catalog_errors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("track_id", sa.String(512), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("path_bytes", sa.LargeBinary, nullable=True),
    sa.Column("sha256", sa.String(80), nullable=False),  # "unreadable:<hash of the path>" when unread
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("sha256", "model_version", name="uq_catalog_errors_sha256_model_version"),
)

catalog_runs = sa.Table(  # one row per tagging run: what it did, with which model, where, how fast
    "catalog_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("listed", sa.Integer, nullable=False),
    sa.Column("tagged", sa.Integer, nullable=False),
    sa.Column("skipped", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("windows_scored", sa.Integer, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("genre_counts", sa.Text, nullable=False),  # JSON {genre: tracks tagged with it in this run}
    sa.Column("genre_psi", sa.Float, nullable=True),  # PSI of genre_counts against the training tracks' genres (genretag.drift)
    sa.Column("embedding_shift", sa.Float, nullable=True),  # genretag.drift.embedding_shift of the run's mean embedding
    sa.Column("loudness_dbfs", sa.Float, nullable=True),  # mean level of the tagged tracks' scored windows
    sa.Column("drift", sa.Text, nullable=True),  # JSON: every drift measure (genretag.drift.run_drift)
    sa.Column("drift_warnings", sa.Text, nullable=True),  # JSON list of the warnings the run raised ([] none)
    sa.Column("run", sa.String(128), nullable=False),  # "prefect:<flow run id>" or "cli" (no Prefect)
)

_CONFLICT_KEY = ["sha256", "model_version"]


def catalog_url(params: Params, *, root: Path, override: str | None = None) -> str:
    """``override``, else $GENRETAG_CATALOG_URL, else params.score.database_url; relative
    SQLite paths are resolved against the project root."""
    url = override or os.environ.get(CATALOG_URL_ENV) or params.score.database_url
    return resolve_sqlite_url(url, root)


def redact(url: str) -> str:
    """The URL without its password, for logs and summaries."""
    return sa.make_url(url).render_as_string(hide_password=True)


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackSource:
    track_id: str
    path: Path


@dataclass(frozen=True)
class HashedTrack:
    track_id: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class TrackFailure:
    track_id: str
    path: Path
    sha256: str
    reason: str


@dataclass(frozen=True)
class SourceScan:
    """What a source holds: the tracks to tag and the files skipped, by reason (absolute paths)."""

    tracks: list[TrackSource]
    not_audio: list[Path] = field(default_factory=list)
    apple_metadata: list[Path] = field(default_factory=list)  # AppleDouble ``._*`` and ``__MACOSX/``

    @property
    def files(self) -> int:
        return len(self.tracks) + len(self.not_audio) + len(self.apple_metadata)


def scan_source(source: str | Path) -> SourceScan:
    """A folder (every file under it, recursively), a CSV with track_id,path, or one file.

    In a folder, track_id is the file's path below it without its extension; relative
    paths in a CSV are relative to the CSV's folder. Every path is absolute and normalised
    (genretag.paths.absolute). Files whose suffix no decoder reads, and macOS metadata, are
    counted, never silently dropped; a CSV or a single file is taken as given (its rows fail
    with their reason if they are not audio).
    """
    source = absolute(source)
    if source.is_dir():
        found = scan_folder(source)
        tracks = [TrackSource(p.relative_to(source).with_suffix("").as_posix(), p) for p in found.audio]
        return SourceScan(tracks, found.not_audio, found.apple_metadata)
    if source.suffix.lower() == ".csv":
        try:
            frame = pd.read_csv(source, dtype=str, keep_default_na=False)
        except FileNotFoundError as exc:
            raise ScoringError(f"{source}: no such CSV file") from exc
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ScoringError(f"{source}: not a readable CSV ({exc})") from exc
        missing = {"track_id", "path"} - set(frame.columns)
        if missing:
            raise ScoringError(f"{source}: the CSV needs columns track_id,path; missing {sorted(missing)}")
        return SourceScan([
            TrackSource(row.track_id or Path(row.path).stem, absolute(source.parent / Path(row.path).expanduser()))
            for row in frame.itertuples(index=False)
        ])
    if source.is_file():
        if is_apple_metadata(source):
            return SourceScan([], apple_metadata=[source])
        return SourceScan([TrackSource(source.stem, source)]) if is_audio_name(source) else SourceScan([], not_audio=[source])
    raise ScoringError(f"{display(source)}: no such folder, CSV or audio file")


def list_tracks(source: str | Path) -> list[TrackSource]:
    """The tracks of :func:`scan_source` (the skipped files are in its other lists)."""
    return scan_source(source).tracks


def unreadable_key(path: Path) -> str:
    """Stands in for the content hash of a file that could not be read (stable across reruns)."""
    return "unreadable:" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:64]


_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def hash_tracks(
    tracks: Iterable[TrackSource],
    *,
    before_read: Callable[[Path], None] | None = None,
    strict: bool = True,
) -> tuple[list[HashedTrack], list[TrackFailure]]:
    """SHA-256 of each file's bytes. A missing or forbidden file is a per-file failure; any
    other OSError propagates when ``strict`` (so a caller can retry it) and is recorded
    as a failure otherwise."""
    hashed: list[HashedTrack] = []
    failed: list[TrackFailure] = []
    for track in tracks:
        try:
            if before_read:
                before_read(track.path)
            if track.path.exists() and not track.path.is_file():  # reading a pipe would block
                failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), "cannot read: not a regular file"))
                continue
            hashed.append(HashedTrack(track.track_id, track.path, file_sha256(track.path)))
        except GenretagError as exc:
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc}"))
        except _PERMANENT_OS_ERRORS as exc:
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc.strerror or exc}"))
        except OSError as exc:
            if strict:
                raise
            failed.append(TrackFailure(track.track_id, track.path, unreadable_key(track.path), f"cannot read: {exc}"))
    return hashed, failed


@dataclass(frozen=True)
class TaggingPlan:
    todo: list[HashedTrack]
    already_tagged: list[HashedTrack]
    duplicates: list[HashedTrack]  # same bytes as another file of this run: tagged once


def plan_tagging(hashed: Sequence[HashedTrack], tagged: set[str]) -> TaggingPlan:
    """Split files into those to score, those this model version already tagged, and repeats."""
    todo: list[HashedTrack] = []
    already: list[HashedTrack] = []
    duplicates: list[HashedTrack] = []
    seen: set[str] = set()
    for track in hashed:
        if track.sha256 in tagged:
            already.append(track)
        elif track.sha256 in seen:
            duplicates.append(track)
        else:
            seen.add(track.sha256)
            todo.append(track)
    return TaggingPlan(todo, already, duplicates)


# --- the database ---------------------------------------------------------------------------


def _insert(engine: Engine, table: sa.Table):
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise ScoringError(f"catalog database {engine.dialect.name!r} is not supported (SQLite or PostgreSQL)")
    return insert(table)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (exports, tests) never block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process in WAL mode
    cursor.close()


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns a catalog made by an earlier genretag lacks: nullable ones empty, the others
    filled by their server default for old rows (no existing value is touched).

    Raises CatalogError for a missing column that is neither nullable nor has a default.
    """
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in present]
        if not missing:
            continue
        with engine.begin() as connection:
            for column in missing:
                kind = column.type.compile(dialect=engine.dialect)
                if column.nullable:
                    connection.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                elif column.server_default is not None:
                    connection.execute(sa.text(
                        f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind} NOT NULL DEFAULT {column.server_default.arg.text}'
                    ))
                else:
                    raise CatalogError(f"catalog table {table.name} lacks column {column.name}, which has no default to fill old rows")


@dataclass(frozen=True)
class WriteCounts:
    tagged: int = 0  # new catalog_tags rows
    existing: int = 0  # tags another run wrote meanwhile (conflicts, not written)
    errors: int = 0  # catalog_errors rows written or refreshed
    unstored: tuple[str, ...] = ()  # "path: reason" of rows the database refused even as error rows

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(self.tagged + other.tagged, self.existing + other.existing, self.errors + other.errors,
                           self.unstored + other.unstored)


def _database_fault(url: str, exc: Exception) -> CatalogError:
    """One line naming the database (password redacted) and what went wrong."""
    name = redact(url)
    database = sa.make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:":
        name = f"{name} (file {database})"
    if isinstance(exc, (sa.exc.NoSuchModuleError, ImportError)):
        return CatalogError(f"catalog database {name}: no driver for this URL is installed (supported: sqlite, postgresql+psycopg)")
    reason = getattr(exc, "orig", None) or exc
    first = (str(reason).strip().splitlines() or [type(reason).__name__])[0]
    return CatalogError(f"catalog database {name}: {first}")


# What a refused row raises: the database's own errors, or the driver's when it cannot even send
# a value (sqlite3 raises UnicodeEncodeError for a lone surrogate, unwrapped by SQLAlchemy).
_ROW_ERRORS = (sa.exc.SQLAlchemyError, UnicodeError, ValueError, TypeError)


def _transient(exc: BaseException) -> bool:
    """Whether a failed database write may succeed when retried (lost connection, lock)."""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or bool(getattr(exc, "connection_invalidated", False))


def check_database(url: str) -> None:
    """Fail now, in one line, when the catalog database at ``url`` cannot be reached or written.

    Creates nothing: a SQLite file that does not exist yet is checked by writing a scratch file
    in the nearest existing folder on its path; any other database (or an existing SQLite
    file) is opened and a row is written and rolled back (:meth:`Catalog.check_writable`).
    Raises CatalogError naming the database (password redacted) and the reason.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise CatalogError(f"catalog database {url!r} is not a database URL (e.g. sqlite:///catalog.db)") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        target = Path(parsed.database)
        if not target.exists():
            folder = next(parent for parent in target.absolute().parents if parent.exists())
            try:
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                raise CatalogError(
                    f"catalog database {redact(url)} (file {target}): cannot create it, folder {folder} is not writable "
                    f"({exc.strerror or exc})"
                ) from exc
            return
    Catalog(url, check_writable=True).close()


class Catalog:
    """A connection to the catalog database; creates the tables when missing.

    Raises CatalogError (one line naming the database, password redacted) when the URL has
    no installed driver, or the database cannot be reached, opened or written.
    """

    def __init__(self, url: str, *, check_writable: bool = False):
        self.url = url
        try:
            backend = sa.make_url(url).get_backend_name()
        except sa.exc.ArgumentError as exc:
            raise CatalogError(f"catalog database {url!r} is not a database URL (e.g. sqlite:///catalog.db)") from exc
        try:
            if backend == "sqlite":
                database = sa.make_url(url).database
                if database and database != ":memory:":
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url)
            if backend == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
            if check_writable:
                self.check_writable()
        except CatalogError:
            raise
        except (sa.exc.SQLAlchemyError, OSError, ImportError) as exc:  # ImportError: the URL's driver is not installed
            raise _database_fault(url, exc) from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_writable(self) -> None:
        """Write a row and roll it back: fails now, not after hours of scoring, on a read-only database."""
        with self.engine.connect() as connection, connection.begin() as transaction:
            connection.execute(catalog_errors.insert().values(
                track_id="", path="", sha256="write-check", reason="", model_version="", failed_at=_now()))
            transaction.rollback()

    def tagged_shas(self, shas: Iterable[str], *, model_version: str, chunk: int = 500) -> set[str]:
        """Which of ``shas`` this model version has already tagged."""
        wanted = list(dict.fromkeys(shas))
        found: set[str] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), chunk):
                query = sa.select(catalog_tags.c.sha256).where(
                    catalog_tags.c.model_version == model_version,
                    catalog_tags.c.sha256.in_(wanted[start : start + chunk]),
                )
                found.update(connection.scalars(query))
        return found

    def write(self, tags: Sequence[dict[str, Any]], errors: Sequence[dict[str, Any]]) -> WriteCounts:
        """Insert tags (never twice) and upsert errors, in one transaction.

        A tag replaces an earlier error row of the same file and model version. When the
        batch fails for a reason a retry cannot clear (a value the database refuses), each
        row is written on its own, so one bad row never costs the others; a row that still
        fails is stored as an error row saying why, or, failing that, returned in
        ``WriteCounts.unstored``. A transient failure (lost connection, lock) is raised for
        the caller to retry.
        """
        try:
            with self.engine.begin() as connection:
                return self._write(connection, tags, errors)
        except _ROW_ERRORS as exc:
            if _transient(exc):
                raise
        total = WriteCounts()
        for kind, rows in (("tag", tags), ("error", errors)):
            for row in rows:
                try:
                    with self.engine.begin() as connection:
                        counts = self._write(connection, [row] if kind == "tag" else [], [row] if kind == "error" else [])
                except _ROW_ERRORS as exc:
                    if _transient(exc):
                        raise
                    counts = self._store_refused(row, exc)
                total = total + counts
        return total

    def _store_refused(self, row: dict[str, Any], exc: Exception) -> WriteCounts:
        """An error row for a row the database refused, with everything in display form."""
        reason = f"cannot store this row: {(str(getattr(exc, 'orig', None) or exc).splitlines() or [''])[0]}"
        fallback = error_row(row.get("track_id", ""), row.get("path", ""), row.get("sha256", ""), reason,
                             model_version=row.get("model_version", ""))
        try:
            with self.engine.begin() as connection:
                return self._write(connection, [], [fallback])
        except _ROW_ERRORS as again:
            if _transient(again):
                raise
            return WriteCounts(unstored=(f"{display(str(row.get('path', '')))}: {reason}",))

    def _write(self, connection: sa.Connection, tags: Sequence[dict[str, Any]], errors: Sequence[dict[str, Any]]) -> WriteCounts:
        tagged = existing = 0
        for row in tags:
            statement = _insert(self.engine, catalog_tags).values(**row).on_conflict_do_nothing(index_elements=_CONFLICT_KEY)
            if connection.execute(statement).rowcount:
                tagged += 1
            else:
                existing += 1
            connection.execute(  # the file (or what stood at its path) is no longer a failure
                sa.delete(catalog_errors).where(
                    catalog_errors.c.model_version == row["model_version"],
                    sa.or_(catalog_errors.c.sha256 == row["sha256"], catalog_errors.c.path == row["path"]),
                )
            )
        for row in errors:
            statement = _insert(self.engine, catalog_errors).values(**row)
            statement = statement.on_conflict_do_update(
                index_elements=_CONFLICT_KEY,
                set_={"reason": statement.excluded.reason, "failed_at": statement.excluded.failed_at,
                      "path": statement.excluded.path, "path_bytes": statement.excluded.path_bytes,
                      "track_id": statement.excluded.track_id},
            )
            connection.execute(statement)
        return WriteCounts(tagged=tagged, existing=existing, errors=len(errors))

    def refresh_paths(self, tracks: Sequence[HashedTrack], *, model_version: str) -> int:
        """Point this model version's tags of ``tracks`` at where the files are now (moved or
        re-seen under another name); returns how many rows changed."""
        wanted = {t.sha256: t for t in tracks}
        if not wanted:
            return 0
        changed = 0
        with self.engine.begin() as connection:
            stored: dict[str, str] = {}
            shas = list(wanted)
            for start in range(0, len(shas), 500):
                query = sa.select(catalog_tags.c.sha256, catalog_tags.c.path).where(
                    catalog_tags.c.model_version == model_version, catalog_tags.c.sha256.in_(shas[start : start + 500]))
                stored.update((row[0], row[1]) for row in connection.execute(query))
            for sha, old_path in stored.items():
                track = wanted[sha]
                if old_path != display(track.path):
                    connection.execute(
                        sa.update(catalog_tags)
                        .where(catalog_tags.c.sha256 == sha, catalog_tags.c.model_version == model_version)
                        .values(path=display(track.path), path_bytes=exact_bytes(track.path), track_id=display(track.track_id))
                    )
                    changed += 1
        return changed

    def record_run(self, summary: TaggingSummary, *, run: str) -> None:
        """Append the run's row to catalog_runs (``run``: "prefect:<flow run id>" or "cli")."""
        with self.engine.begin() as connection:
            connection.execute(sa.insert(catalog_runs).values(
                finished_at=_now(), source=summary.source, model_name=summary.model_name,
                model_version=summary.model_version, provider=summary.provider, listed=summary.listed,
                tagged=summary.tagged, skipped=summary.skipped, duplicates=summary.duplicates, failed=summary.failed,
                windows_scored=summary.windows_scored, seconds=round(summary.seconds, 3),
                genre_counts=json.dumps(dict(sorted(summary.genre_counts.items()))), genre_psi=summary.genre_psi, run=run,
                embedding_shift=summary.drift.get("embedding_shift"), loudness_dbfs=summary.drift.get("loudness_dbfs"),
                drift=json.dumps(summary.drift), drift_warnings=json.dumps(summary.drift_warnings),
            ))

    def find(self, sha256: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(tag rows, error rows) of the file content whose SHA-256 is or starts with ``sha256``, newest first."""
        found = []
        with self.engine.connect() as connection:
            for table, when in ((catalog_tags, catalog_tags.c.scored_at), (catalog_errors, catalog_errors.c.failed_at)):
                query = sa.select(table).where(table.c.sha256.startswith(sha256.lower(), autoescape=True)).order_by(when.desc())
                found.append([dict(row) for row in connection.execute(query).mappings()])
        return found[0], found[1]

    def read(self, table: Literal["catalog_tags", "catalog_errors", "catalog_runs"] = "catalog_tags", *,
             model_version: str | None = None) -> pd.DataFrame:
        """A table as a DataFrame (ordered by id), times as UTC."""
        source = {"catalog_tags": catalog_tags, "catalog_errors": catalog_errors, "catalog_runs": catalog_runs}[table]
        query = sa.select(source).order_by(source.c.id)
        if model_version is not None:
            query = query.where(source.c.model_version == model_version)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        frame = pd.DataFrame(rows, columns=[c.name for c in source.columns])
        time_column = {"catalog_tags": "scored_at", "catalog_errors": "failed_at", "catalog_runs": "finished_at"}[table]
        frame[time_column] = pd.to_datetime(frame[time_column], utc=True)
        return frame


# --- rows -------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


WINDOW_DIGITS = 4  # probabilities in window_probabilities: 1e-4 resolves any share a reviewer reads


def window_timeline(score: Any) -> str:
    """The window_probabilities JSON of a genretag.scoring.TrackScore: ``{"labels": [K], "start_s": [n]
    seconds, "probabilities": [n][K] rounded to WINDOW_DIGITS}``, one row per scored window (silent ones
    were not scored: their starts are absent)."""
    return json.dumps({
        "labels": list(score.probabilities),
        "start_s": list(score.window_starts_s),
        "probabilities": [[round(p, WINDOW_DIGITS) for p in row] for row in score.window_probabilities],
    }, separators=(",", ":"))


def timeline_lines(window_probabilities: str | None) -> list[str]:
    """A track's genre timeline from its catalog window_probabilities JSON (:func:`window_timeline`):
    one line per scored window, ``m:ss  genre  probability`` of its most probable genre, then the runner-up.
    Empty for rows tagged before timelines were stored (NULL)."""
    if not window_probabilities:
        return []
    timeline = json.loads(window_probabilities)
    labels = timeline["labels"]
    width = max(len(label) for label in labels)
    lines = []
    for start, row in zip(timeline["start_s"], timeline["probabilities"], strict=True):
        first, second = np.argsort(-np.asarray(row), kind="stable")[:2]
        minutes, seconds = divmod(int(start), 60)
        lines.append(f"{minutes:>3}:{seconds:02d}  {labels[first]:<{width}}  {row[first]:.2f}   ({labels[second]} {row[second]:.2f})")
    return lines


def tag_row(
    track: HashedTrack, score: Any, *, model_name: str, model_version: str, provider: str, contract_version: int,
    review_below: float,
    audio: InputStats | None = None,
) -> dict[str, Any]:
    """A catalog_tags row for a genretag.scoring.TrackScore and the track's input statistics; flagged
    needs_review when its confidence is below ``review_below`` (params score.review_below)."""
    return {
        "source_sample_rate": audio.source_sample_rate if audio else None,
        "duration_s": audio.duration_s if audio else None,
        "loudness_dbfs": audio.loudness_dbfs if audio else None,
        "track_id": display(track.track_id),
        "path": display(track.path),
        "path_bytes": exact_bytes(track.path),
        "sha256": track.sha256,
        "genre": score.label,
        "confidence": score.confidence,
        "top3": json.dumps([{"genre": g, "probability": p} for g, p in score.top3]),
        "probabilities": json.dumps(score.probabilities),
        "windows_scored": score.windows_scored,
        "windows_silent": score.windows_silent,
        "needs_review": score.confidence < review_below,
        "window_probabilities": window_timeline(score),
        "model_name": model_name,
        "model_version": model_version,
        "provider": provider,
        "contract_version": contract_version,
        "scored_at": _now(),
    }


def error_row(track_id: str, path: Path | str, sha256: str, reason: str, *, model_version: str) -> dict[str, Any]:
    return {
        "track_id": display(track_id),
        "path": display(path),
        "path_bytes": exact_bytes(path) if str(path) else None,
        "sha256": sha256,
        "reason": display(reason),
        "model_version": model_version,
        "failed_at": _now(),
    }


# --- a run's bookkeeping ------------------------------------------------------------------------


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
    moved: int = 0  # already-tagged files whose stored path was updated
    tagged: int = 0
    skipped: int = 0  # already tagged by this model version
    duplicates: int = 0  # same bytes as another file of this run
    failed: int = 0
    windows_scored: int = 0
    windows_silent: int = 0  # windows of tagged tracks skipped as silent
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    genre_counts: Counter[str] = field(default_factory=Counter)
    genre_psi: float | None = None  # drift of genre_counts from the training genres (None: no reference or nothing tagged)
    audio: list[InputStats] = field(default_factory=list)  # input statistics of the tracks tagged
    embedding_sum: Any = None  # float64 [D]: sum of the tagged windows' embeddings (None: none yet)
    drift: dict[str, Any] = field(default_factory=dict)  # genretag.drift.run_drift, set by finish_drift
    drift_warnings: list[str] = field(default_factory=list)

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

    def count_skipped(self, scan: SourceScan) -> None:
        self.listed = len(scan.tracks)
        self.not_audio, self.apple_metadata = len(scan.not_audio), len(scan.apple_metadata)

    @property
    def tracks_per_second(self) -> float:
        return self.tagged / self.seconds if self.seconds > 0 else 0.0

    def record(self, outcome: WriteOutcome) -> None:
        """Count a commit. A tag another run wrote meanwhile counts as skipped."""
        self.tagged += outcome.counts.tagged
        self.skipped += outcome.counts.existing
        self.genre_counts.update(outcome.genres)
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
            "moved": self.moved,
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
        }

    def to_markdown(self, *, max_failures: int = 50) -> str:
        lines = [
            f"# Catalog tagging: {self.model_name} {self.model_version} on {self.provider}",
            "",
            f"Source `{self.source}` -> `{self.database}`",
            "",
            f"{self.files} files: {self.listed} audio, {self.not_audio} skipped (not audio), "
            f"{self.apple_metadata} skipped (macOS metadata: ._* and __MACOSX/)",
            "",
            "| tracks listed | tagged | skipped (already tagged) | duplicate content | failed | tracks/s | windows | silent windows |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {self.listed} | {self.tagged} | {self.skipped} | {self.duplicates} | {self.failed} "
            f"| {self.tracks_per_second:.2f} | {self.windows_scored} | {self.windows_silent} |",
            "",
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
                f"| `{f['path']}` | {f['reason'].replace('|', '/')} |" for f in self.failures[:max_failures]
            ]
            if len(self.failures) > max_failures:
                lines.append(f"| ... | {len(self.failures) - max_failures} more in catalog_errors |")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class WriteOutcome:
    """What one commit of results wrote."""

    counts: WriteCounts
    genres: tuple[str, ...]
    windows_scored: int
    windows_silent: int
    failures: tuple[TrackFailure, ...]
    audio: tuple[InputStats, ...] = ()  # input statistics of the tracks tagged
    embedding_sum: Any = None  # float64 [D] over their scored windows (None: nothing tagged)


def write_results(catalog: Catalog, results: Sequence[Any], *, model: Any, review_below: float) -> WriteOutcome:
    """Write genretag.scoring.ScoredTrack results (their keys are HashedTracks) in one commit
    (``review_below``: :func:`tag_row`)."""
    tags, errors, failures, audio, embedding_sums = [], [], [], [], []
    for result in results:
        track: HashedTrack = result.key
        if result.score is None:
            failures.append(TrackFailure(track.track_id, track.path, track.sha256, result.error))
            errors.append(error_row(track.track_id, track.path, track.sha256, result.error, model_version=model.model_version))
        else:
            tags.append(tag_row(track, result.score, model_name=model.model_name, model_version=model.model_version,
                                provider=model.provider, contract_version=model.contract_version, review_below=review_below,
                                audio=result.audio))
            audio += [result.audio] if result.audio else []
            embedding_sums += [result.embedding_sum] if result.embedding_sum is not None else []
    counts = catalog.write(tags, errors)
    return WriteOutcome(
        counts=counts,
        genres=tuple(row["genre"] for row in tags),
        windows_scored=sum(row["windows_scored"] for row in tags),
        windows_silent=sum(row["windows_silent"] for row in tags),
        failures=tuple(failures),
        audio=tuple(audio),
        embedding_sum=sum(embedding_sums[1:], embedding_sums[0]) if embedding_sums else None,
    )


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def tag_catalog(
    source: str | Path,
    *,
    model: Any,
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
    """Tag every audio file of ``source`` with an open genretag.onnx.session.ScoringModel.

    The same steps as the tag-catalog flow, without Prefect: list, hash, skip what this
    model version already tagged, score in parallel, commit every ``commit_every`` tracks.
    The run's drift is measured against the model's own drift reference (its contract);
    ``reference_genres`` (training genre -> tracks) stands in for the genre PSI of a model without
    one; ``drift_limits`` (ScoreParams, default the built-in ones) sets the warnings' limits. Tags
    below ``review_below`` confidence are flagged needs_review.
    """
    from genretag.tagging.scoring import score_files

    started = time.perf_counter()
    summary = TaggingSummary(display(source), redact(database_url), model.model_name, model.model_version, model.provider)
    with Catalog(database_url, check_writable=True) as catalog:  # before any file is read
        scan = scan_source(source)
        summary.count_skipped(scan)
        hashed, unreadable = hash_tracks(scan.tracks, before_read=before_read, strict=False)
        plan = plan_tagging(hashed, catalog.tagged_shas((t.sha256 for t in hashed), model_version=model.model_version))
        summary.skipped, summary.duplicates = len(plan.already_tagged), len(plan.duplicates)
        summary.moved = catalog.refresh_paths(plan.already_tagged, model_version=model.model_version)
        counts = catalog.write([], [error_row(f.track_id, f.path, f.sha256, f.reason, model_version=model.model_version) for f in unreadable])
        summary.add_failures(unreadable)
        summary.add_unstored(counts.unstored)
        stream = score_files(
            model, ((t, t.path) for t in plan.todo), max_windows=max_windows, batch_size=batch_size,
            workers=workers, silence_rms_dbfs=silence_rms_dbfs,
        )
        for results in _chunks(stream, commit_every):
            summary.record(write_results(catalog, results, model=model, review_below=review_below))
        summary.seconds = time.perf_counter() - started
        summary.finish_drift(model.contract.drift_reference, score=drift_limits or ScoreParams(), fallback_genres=reference_genres)
        catalog.record_run(summary, run="cli")
    return summary


# --- export ---------------------------------------------------------------------------------------


def export_tags(
    database_url: str,
    *,
    out: str | Path,
    fmt: Literal["csv", "parquet"] = "csv",
    model_version: str | None = None,
) -> int:
    """Write catalog_tags (optionally one model version) to CSV or Parquet, atomically; return rows."""
    if fmt not in ("csv", "parquet"):
        raise ScoringError(f"export format must be csv or parquet, not {fmt!r}")
    with Catalog(database_url) as catalog:
        frame = catalog.read("catalog_tags", model_version=model_version)
    try:
        if fmt == "csv":
            write_csv(out, frame)
        else:
            with atomic_path(out) as tmp:
                frame.to_parquet(tmp, index=False)
    except OSError as exc:
        raise ScoringError(f"cannot write {display(out)}: {exc.strerror or exc}") from exc
    return len(frame)
