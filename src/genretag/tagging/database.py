"""The catalog database's plumbing: its URL, connection and dialect details, upgrades and faults.

SQLAlchemy 2 Core, SQLite by default (a file in the project), PostgreSQL by URL ($GENRETAG_CATALOG_URL,
else params.yaml score.database_url). An existing database gains the columns a later genretag added
(genretag.tagging.schema declares them); a database that cannot be reached or written fails in one line
naming it, password redacted. genretag.tagging.store.Catalog reads and writes the catalog through these.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from genretag.core.config import Params, resolve_sqlite_url
from genretag.core.errors import CatalogError, ScoringError
from genretag.tagging.schema import metadata


CATALOG_URL_ENV = "GENRETAG_CATALOG_URL"
LOOKUP_CHUNK = 1000  # keys per lookup query (SQLite allows 32,766 bound parameters, PostgreSQL 65,535)


def signed(value: int) -> int:
    """An unsigned 64-bit stat value (st_dev, st_ino) as the signed BIGINT both databases store."""
    return value - (1 << 64) if value >= 1 << 63 else value


def unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def chunks(keys: Sequence[Any], size: int = LOOKUP_CHUNK) -> Iterable[Sequence[Any]]:
    return (keys[start : start + size] for start in range(0, len(keys), size))


def catalog_url(params: Params, *, root: Path, override: str | None = None) -> str:
    """``override``, else $GENRETAG_CATALOG_URL, else params.score.database_url; relative
    SQLite paths are resolved against the project root."""
    url = override or os.environ.get(CATALOG_URL_ENV) or params.score.database_url
    return resolve_sqlite_url(url, root)


def redact(url: str) -> str:
    """The URL without its password, for logs and summaries."""
    return sa.make_url(url).render_as_string(hide_password=True)


def insert(engine: Engine, table: sa.Table):
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise ScoringError(f"catalog database {engine.dialect.name!r} is not supported (SQLite or PostgreSQL)")
    return insert(table)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (exports, tests) never block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process in WAL mode
    cursor.close()


def add_missing_columns(engine: Engine) -> None:
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


def database_fault(url: str, exc: Exception) -> CatalogError:
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
ROW_ERRORS = (sa.exc.SQLAlchemyError, UnicodeError, ValueError, TypeError)


def transient(exc: BaseException) -> bool:
    """Whether a failed database write may succeed when retried (lost connection, lock)."""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or bool(getattr(exc, "connection_invalidated", False))


def missing_folder(url: str, database: str) -> CatalogError:
    folder = Path(database).absolute().parent
    return CatalogError(f"catalog database {redact(url)} (file {database}): folder {folder} does not exist "
                        "(a typo? --create-catalog creates it)")
