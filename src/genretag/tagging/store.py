"""The catalog database: one row per (file content, model version) tagged, one per failure, one per run.

Its connection plumbing (URL, SQLite pragmas, added columns, one-line faults) is genretag.tagging.database;
check_database fails a run at its start, in one line, on a database it could not open or write. A file is
known by the SHA-256 of its bytes: a rerun skips what the same model version already
tagged (before decoding anything), a new model version tags everything again, and the
UNIQUE (sha256, model_version) constraints keep any row from being written twice.
catalog_fingerprints remembers each path's stat fingerprint and content hash, so a rescan reads only
new or changed files (genretag.tagging.fingerprints explains the rules and their blind spot). Every lookup
takes its keys LOOKUP_CHUNK at a time, on an index, so a catalog of 10^6 rows costs a rescan little.
A file whose bytes changed only because `genretag write-tags` wrote tags into it keeps its identity
through catalog_aliases (its new SHA-256 -> the content hash its rows carry), resolved by Catalog.canonical.
catalog_skips names each file and folder a run skipped, with the reason (not audio, macOS metadata, a
folder it could not list or had walked already).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa

from genretag.core.errors import CatalogError
from genretag.core.paths import display, exact_bytes
from genretag.tagging.database import (
    ROW_ERRORS,
    add_missing_columns,
    chunks,
    database_fault,
    insert,
    missing_folder,
    redact,
    signed,
    sqlite_pragmas,
    transient,
    unsigned,
)
from genretag.tagging.rows import error_row, now_utc
from genretag.tagging.schema import (
    TABLES,
    catalog_aliases,
    catalog_errors,
    catalog_fingerprints,
    catalog_runs,
    catalog_skips,
    catalog_tags,
    metadata,
)
from genretag.tagging.fingerprints import Fingerprint, KnownFile
from genretag.tagging.sources import HashedTrack


_CONFLICT_KEY = ["sha256", "model_version"]


def _known(row: Any) -> KnownFile:
    return KnownFile(row.path, Fingerprint(unsigned(row.device), unsigned(row.inode), row.size, row.mtime_ns), row.sha256)


@dataclass(frozen=True)
class WriteCounts:
    tagged: int = 0  # new catalog_tags rows
    existing: int = 0  # tags another run wrote meanwhile (conflicts, not written)
    errors: int = 0  # catalog_errors rows written or refreshed
    unstored: tuple[str, ...] = ()  # "path: reason" of rows the database refused even as error rows

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(self.tagged + other.tagged, self.existing + other.existing, self.errors + other.errors,
                           self.unstored + other.unstored)


def check_database(url: str, *, create_folder: bool = False) -> None:
    """Fail now, in one line, when the catalog database at ``url`` cannot be reached or written.

    Creates nothing: a SQLite file that does not exist yet must be in an existing folder (unless
    ``create_folder``: then in any folder that can be made under the nearest existing one), which is
    checked by writing a scratch file there; any other database (or an existing SQLite file) is
    opened and a row is written and rolled back (:meth:`Catalog.check_writable`).
    Raises CatalogError naming the database (password redacted) and the reason.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise CatalogError(f"catalog database {url!r} is not a database URL (e.g. sqlite:///catalog.db)") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        target = Path(parsed.database)
        if not target.exists():
            if not create_folder and not target.absolute().parent.is_dir():
                raise missing_folder(url, parsed.database)
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
    """A connection to the catalog database; creates the tables when missing, and a SQLite file's
    folder only when ``create_folder`` (a typo in a path must not invent a database).

    Raises CatalogError (one line naming the database, password redacted) when the URL has
    no installed driver, a SQLite file's folder does not exist (without ``create_folder``), or the
    database cannot be reached, opened or written.
    """

    def __init__(self, url: str, *, check_writable: bool = False, create_folder: bool = False):
        self.url = url
        try:
            backend = sa.make_url(url).get_backend_name()
        except sa.exc.ArgumentError as exc:
            raise CatalogError(f"catalog database {url!r} is not a database URL (e.g. sqlite:///catalog.db)") from exc
        try:
            if backend == "sqlite":
                database = sa.make_url(url).database
                if database and database != ":memory:" and not Path(database).absolute().parent.is_dir():
                    if not create_folder:
                        raise missing_folder(url, database)
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url)
            if backend == "sqlite":
                sa.event.listen(self.engine, "connect", sqlite_pragmas)
            metadata.create_all(self.engine)
            add_missing_columns(self.engine)
            if check_writable:
                self.check_writable()
        except CatalogError:
            raise
        except (sa.exc.SQLAlchemyError, OSError, ImportError) as exc:  # ImportError: the URL's driver is not installed
            raise database_fault(url, exc) from exc

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
                track_id="", path="", sha256="write-check", reason="", model_version="", failed_at=now_utc()))
            transaction.rollback()

    def tagged_shas(self, shas: Iterable[str], *, model_version: str, chunk: int = 500) -> dict[str, str | None]:
        """Which of ``shas`` this model version has already tagged, each with the run_id of the run that
        wrote its tag (None: a row written before run ids)."""
        wanted = list(dict.fromkeys(shas))
        found: dict[str, str | None] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), chunk):
                query = sa.select(catalog_tags.c.sha256, catalog_tags.c.run_id).where(
                    catalog_tags.c.model_version == model_version,
                    catalog_tags.c.sha256.in_(wanted[start : start + chunk]),
                )
                found.update((sha, run_id) for sha, run_id in connection.execute(query))
        return found

    def failed_shas(self, shas: Iterable[str], *, model_version: str) -> set[str]:
        """Which of ``shas`` have an error row of this model version (known failures)."""
        wanted = list(dict.fromkeys(shas))
        found: set[str] = set()
        with self.engine.connect() as connection:
            for part in chunks(wanted):
                found.update(connection.scalars(sa.select(catalog_errors.c.sha256).where(
                    catalog_errors.c.model_version == model_version, catalog_errors.c.sha256.in_(part))))
        return found

    def fingerprints(self, paths: Sequence[str]) -> dict[str, KnownFile]:
        """The stored fingerprints of these paths (display form), by path."""
        found: dict[str, KnownFile] = {}
        with self.engine.connect() as connection:
            for part in chunks(list(dict.fromkeys(paths))):
                for row in connection.execute(sa.select(catalog_fingerprints).where(catalog_fingerprints.c.path.in_(part))):
                    found[row.path] = _known(row)
        return found

    def fingerprints_by_inode(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[KnownFile]]:
        """The stored fingerprints of these (device, inode) pairs, under any path."""
        found: dict[tuple[int, int], list[KnownFile]] = {}
        pairs = list(dict.fromkeys((signed(device), signed(inode)) for device, inode in keys))
        with self.engine.connect() as connection:
            for part in chunks(pairs):
                query = sa.select(catalog_fingerprints).where(
                    sa.tuple_(catalog_fingerprints.c.device, catalog_fingerprints.c.inode).in_(part))
                for row in connection.execute(query):
                    known = _known(row)
                    found.setdefault((known.fingerprint.device, known.fingerprint.inode), []).append(known)
        return found

    def record_fingerprints(self, files: Sequence[tuple[HashedTrack, Fingerprint]]) -> None:
        """Remember each file's fingerprint and content hash at its path (upserted, LOOKUP_CHUNK rows per statement)."""
        when = now_utc()
        rows = [{"path": display(track.path), "device": signed(fp.device), "inode": signed(fp.inode), "size": fp.size,
                 "mtime_ns": fp.mtime_ns, "sha256": track.sha256, "hashed_at": when} for track, fp in files]
        rows = list({row["path"]: row for row in rows}.values())  # one row per path in a statement
        if not rows:
            return
        statement = insert(self.engine, catalog_fingerprints)
        statement = statement.on_conflict_do_update(
            index_elements=["path"],
            set_={name: statement.excluded[name] for name in ("device", "inode", "size", "mtime_ns", "sha256", "hashed_at")},
        )
        with self.engine.begin() as connection:
            for part in chunks(rows):
                connection.execute(statement, list(part))

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
        except ROW_ERRORS as exc:
            if transient(exc):
                raise
        total = WriteCounts()
        for kind, rows in (("tag", tags), ("error", errors)):
            for row in rows:
                try:
                    with self.engine.begin() as connection:
                        counts = self._write(connection, [row] if kind == "tag" else [], [row] if kind == "error" else [])
                except ROW_ERRORS as exc:
                    if transient(exc):
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
        except ROW_ERRORS as again:
            if transient(again):
                raise
            return WriteCounts(unstored=(f"{display(str(row.get('path', '')))}: {reason}",))

    def _write(self, connection: sa.Connection, tags: Sequence[dict[str, Any]], errors: Sequence[dict[str, Any]]) -> WriteCounts:
        tagged = existing = 0
        for row in tags:
            statement = insert(self.engine, catalog_tags).values(**row).on_conflict_do_nothing(index_elements=_CONFLICT_KEY)
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
            statement = insert(self.engine, catalog_errors).values(**row)
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

    def record_run(self, row: Mapping[str, Any], *, run: str, run_id: str | None = None) -> None:
        """Append a run's row to catalog_runs: ``row`` holds its columns but finished_at and run
        (genretag.tagging.summary.TaggingSummary.run_row); ``run`` is "prefect:<flow run id>" or "cli";
        ``run_id`` the id its catalog_tags and catalog_skips rows carry."""
        with self.engine.begin() as connection:
            connection.execute(sa.insert(catalog_runs).values(**row, finished_at=now_utc(), run=run, run_id=run_id))

    def canonical(self, shas: Iterable[str], *, chunk: int = 500) -> dict[str, str]:
        """Each of ``shas`` -> the content hash the catalog knows it by: its catalog_aliases target, else itself."""
        wanted = list(dict.fromkeys(shas))
        resolved = {sha: sha for sha in wanted}
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), chunk):
                query = sa.select(catalog_aliases.c.alias_sha256, catalog_aliases.c.sha256).where(
                    catalog_aliases.c.alias_sha256.in_(wanted[start : start + chunk]))
                resolved.update((alias, sha) for alias, sha in connection.execute(query))
        return resolved

    def add_alias(self, alias_sha256: str, *, sha256: str, path: str | Path) -> None:
        """Record ``alias_sha256`` (a file's new SHA-256 after tag writing) as the same track as ``sha256``,
        resolved first, so aliases never chain; an alias equal to its target is not stored. Upserted."""
        target = self.canonical([sha256])[sha256]
        if alias_sha256 == target:
            return
        row = {"alias_sha256": alias_sha256, "sha256": target, "path": display(path), "created_at": now_utc()}
        statement = insert(self.engine, catalog_aliases).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=["alias_sha256"], set_={"sha256": target, "path": row["path"], "created_at": row["created_at"]})
        with self.engine.begin() as connection:
            connection.execute(statement)

    def remove_alias(self, alias_sha256: str) -> None:
        """Forget an alias (write-tags undoes the one it recorded when the file could not be replaced)."""
        with self.engine.begin() as connection:
            connection.execute(sa.delete(catalog_aliases).where(catalog_aliases.c.alias_sha256 == alias_sha256))

    def record_skips(self, skips: Iterable[tuple[Path, str]], *, run_id: str) -> int:
        """Name each skipped ``(path, reason)`` of run ``run_id`` (catalog_runs.run_id) in catalog_skips, in one
        transaction; returns how many rows were written."""
        rows = [{"run_id": run_id, "path": display(path), "path_bytes": exact_bytes(path), "reason": display(reason)}
                for path, reason in skips]
        if rows:
            with self.engine.begin() as connection:
                connection.execute(sa.insert(catalog_skips), rows)
        return len(rows)

    def find_skips(self, path: str | Path) -> list[dict[str, Any]]:
        """The catalog_skips rows naming ``path`` (absolute, display form), newest run first."""
        query = (sa.select(catalog_skips).where(catalog_skips.c.path == display(path))
                 .order_by(catalog_skips.c.id.desc()))
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def find(self, sha256: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(tag rows, error rows) of the file content whose SHA-256 is or starts with ``sha256``, newest first
        (a whole SHA-256 that is an alias is resolved first)."""
        if len(sha256) == 64:
            sha256 = self.canonical([sha256.lower()])[sha256.lower()]
        found = []
        with self.engine.connect() as connection:
            for table, when in ((catalog_tags, catalog_tags.c.scored_at), (catalog_errors, catalog_errors.c.failed_at)):
                query = sa.select(table).where(table.c.sha256.startswith(sha256.lower(), autoescape=True)).order_by(when.desc())
                found.append([dict(row) for row in connection.execute(query).mappings()])
        return found[0], found[1]

    def read(self, table: Literal["catalog_tags", "catalog_errors", "catalog_runs", "catalog_aliases", "catalog_skips"] = "catalog_tags",
             *, model_version: str | None = None) -> pd.DataFrame:
        """A table as a DataFrame (ordered by id; aliases by alias), times as UTC (``model_version``: tags and errors)."""
        source = TABLES[table]
        query = sa.select(source).order_by(source.c.id if table != "catalog_aliases" else source.c.alias_sha256)
        if model_version is not None:
            query = query.where(source.c.model_version == model_version)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        frame = pd.DataFrame(rows, columns=[c.name for c in source.columns])
        time_column = {"catalog_tags": "scored_at", "catalog_errors": "failed_at", "catalog_runs": "finished_at",
                       "catalog_aliases": "created_at"}.get(table)
        if time_column:
            frame[time_column] = pd.to_datetime(frame[time_column], utc=True)
        return frame
