"""Reading the registry fast: every version with its aliases and the gate's decision.

A SQLite store (the default) is read directly with the standard library's sqlite3, read-only, from
MLflow's own tables (``registered_models``, ``model_versions``, ``model_version_tags``,
``registered_model_aliases``; mlflow/store/model_registry/dbmodels/models.py): importing MLflow alone
takes several seconds here, and ``genretag registry list`` must start in about a second (issue 13).
This module imports no MLflow, pandas, SciPy or onnx; any other store (a tracking server) goes
through MlflowClient (:mod:`genretag.registry.client`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from genretag.core.config import Params
from genretag.core.errors import RegistryError
from genretag.core.tracking import tracking_uri
from genretag.registry.client import (
    CHAMPION,
    TAG_ACCURACY,
    TAG_DECISION,
    TAG_REASON,
    TAG_REFUSAL,
    all_versions,
    mlflow_error,
    open_client,
)


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as ``genretag registry list`` shows it (``accuracy``: the gate's track accuracy, 0..1)."""

    version: str
    aliases: tuple[str, ...]
    accuracy: float | None
    created: datetime
    decision: str
    reason: str
    model_version: str
    run_id: str


_StoredVersion = tuple[str, int, str | None, dict[str, str]]  # version, created (ms since epoch), run id, tags


def list_versions(params: Params, *, root: Path) -> list[VersionInfo]:
    """Every version of the registered model, oldest first, with aliases and the gate's decision
    ("incomplete" for a version no gate finished with). Raises RegistryError for an unreadable store."""
    name = params.registry.model_name
    uri = tracking_uri(params, root=root)
    stored = _read_sqlite_registry(uri, name=name) if uri.startswith("sqlite:///") else _read_client_registry(params, root=root, name=name)
    if stored is None:
        return []
    aliases, versions = stored
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    return [
        VersionInfo(
            version=version,
            aliases=tuple(sorted(by_version.get(version, []))),
            accuracy=float(tags[TAG_ACCURACY]) if tags.get(TAG_ACCURACY) else None,
            created=datetime.fromtimestamp(created_ms / 1000, UTC),
            decision=tags.get(TAG_DECISION, "incomplete"),
            reason=tags.get(TAG_REASON, ""),
            model_version=tags.get("genretag.model_version", ""),
            run_id=run_id or "",
        )
        for version, created_ms, run_id, tags in sorted(versions, key=lambda row: int(row[0]))
    ]


def version_number(params: Params, *, root: Path, ref: str, versions: Sequence[VersionInfo] | None = None) -> str:
    """The version number behind ``ref`` (a number, champion or challenger), read as :func:`list_versions` reads
    (``versions``: its result when the caller already has it; None reads it).

    Raises RegistryError when no version has that number or alias.
    """
    for row in list_versions(params, root=root) if versions is None else versions:
        if str(ref) == row.version or str(ref) in row.aliases:
            return row.version
    raise RegistryError(f"registered model {params.registry.model_name!r} has no version or alias {ref!r}")


@dataclass(frozen=True)
class StoredModel:
    """One version as the SQLite store records it: its number, where its model folder is
    (``storage_location``, else ``source``: MLflow's own download URI, ``SqlAlchemyStore.get_model_version_download_uri``)
    and its tags."""

    version: str
    location: str
    tags: dict[str, str]


@contextlib.contextmanager
def _sqlite_registry(uri: str, *, name: str) -> Iterator[sqlite3.Connection | None]:
    """A read-only sqlite3 connection to the SQLite MLflow store ``uri`` holding registered model ``name``,
    or None when ``uri`` is no SQLite file, or has no registry tables or no such model (the caller then has
    nothing to read here). Raises RegistryError naming the file for any other database error, in the
    opening check or in the caller's queries."""
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]) if uri.startswith("sqlite:///") else None
    if path is None or not path.is_file():
        yield None
        return
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise RegistryError(f"registry database {path}: {exc}") from exc
    try:
        try:
            known = connection.execute("SELECT 1 FROM registered_models WHERE name = ?", (name,)).fetchone() is not None
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            known = False  # a tracking store in which nothing was ever registered
        yield connection if known else None
    except sqlite3.DatabaseError as exc:
        raise RegistryError(f"registry database {path}: {exc}") from exc
    finally:
        connection.close()


def read_sqlite_version(uri: str, *, name: str, ref: str) -> StoredModel | None:
    """The version of ``name`` behind ``ref`` (a number, or an alias such as champion) in the SQLite store ``uri``,
    read with sqlite3 (no MLflow: ``predict`` and ``registry fetch`` with the champion start in about a second).

    Returns None when ``uri`` is not a SQLite file holding a model registry (the caller asks MLflow). Raises
    RegistryError when the model has no such version or alias; for a missing ``champion``, the gate's refusal line.
    """
    with _sqlite_registry(uri, name=name) as connection:
        if connection is None:
            return None
        if str(ref).isdigit():
            version = str(ref)
        else:
            row = connection.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                                     (name, str(ref))).fetchone()
            version = str(row[0]) if row else None
        found = connection.execute(
            "SELECT storage_location, source FROM model_versions WHERE name = ? AND version = ? AND current_stage != 'Deleted_Internal'",
            (name, int(version)),
        ).fetchone() if version else None
        refusal = connection.execute("SELECT value FROM registered_model_tags WHERE name = ? AND key = ?",
                                     (name, TAG_REFUSAL)).fetchone()
        tags = dict(connection.execute("SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?",
                                       (name, int(version))).fetchall()) if found else {}
    if found is None:
        if str(ref) == CHAMPION and refusal and refusal[0]:
            raise RegistryError(f"registered model {name!r} serves no champion: {refusal[0]}")
        raise RegistryError(f"registered model {name!r} has no version or alias {ref!r} (registry database {uri})")
    return StoredModel(version=version, location=found[0] or found[1] or "", tags={k: v or "" for k, v in tags.items()})


def _read_sqlite_registry(uri: str, *, name: str) -> tuple[dict[str, str], list[_StoredVersion]] | None:
    """(alias -> version, versions) of ``name`` in a SQLite MLflow store; None when the file, its
    registry tables or the model do not exist. Versions MLflow deleted (stage ``Deleted_Internal``) are left out."""
    with _sqlite_registry(uri, name=name) as connection:
        if connection is None:
            return None
        aliases = dict(connection.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?", (name,)).fetchall())
        tags: dict[str, dict[str, str]] = {}
        for version, key, value in connection.execute("SELECT version, key, value FROM model_version_tags WHERE name = ?", (name,)):
            tags.setdefault(str(version), {})[key] = value or ""
        rows = connection.execute(
            "SELECT version, creation_time, run_id FROM model_versions WHERE name = ? AND current_stage != 'Deleted_Internal'",
            (name,),
        ).fetchall()
    return ({alias: str(version) for alias, version in aliases.items()},
            [(str(version), int(created or 0), run_id, tags.get(str(version), {})) for version, created, run_id in rows])


def _read_client_registry(params: Params, *, root: Path, name: str) -> tuple[dict[str, str], list[_StoredVersion]] | None:
    """The same as :func:`_read_sqlite_registry` through MlflowClient (a tracking server)."""
    client = open_client(params, root=root)
    try:
        aliases = {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    except mlflow_error():
        return None
    return aliases, [(str(v.version), int(v.creation_timestamp), v.run_id, dict(v.tags)) for v in all_versions(client, name=name)]
