"""The MLflow client and the registry's names: aliases, tag keys, version look-ups.

Every module of genretag.registry reaches MLflow through :func:`open_client`; MLflow itself is
imported inside the functions that use it, so that ``genretag registry list|history`` (which reads a
SQLite store without MLflow, :mod:`genretag.registry.listing`) starts in about a second (issue 13:
<= 3 s as a whole process on 2 cores).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genretag.core.config import Params
from genretag.core.errors import RegistryError
from genretag.core.tracking import use_tracking

CHAMPION = "champion"
CHALLENGER = "challenger"

TAG_DECISION = "genretag.decision"  # champion | challenger | refused (the last gate that saw the version)
TAG_REASON = "genretag.reason"
TAG_CANDIDATE = "genretag.candidate"
TAG_ACCURACY = "genretag.track_accuracy"
TAG_SERVABLE = "genretag.gate.servable"
TAG_FLOOR = "genretag.gate.floor"
TAG_EVIDENCE = "genretag.gate.evidence"
TAG_GATE_RULE = "genretag.gate.rule"
TAG_GATE_REASON = "genretag.gate.reason"
TAG_REFUSAL = "genretag.gate.refusal"
TAG_GATE_RUN = "genretag.gate.run_id"  # the MLflow run holding the gate's figures as metrics (register._gate_run)
TAG_ONNX_SHA = "genretag.onnx_sha256"
TAG_HISTORY = "genretag.champion_history"
TAG_STACK = "genretag.champion_stack"
TAG_SHADOW = "genretag.shadow_report"  # path (from the project root) of the version's shadow report
TAG_LIMIT = 5000  # MLflow's longest tag value (mlflow/utils/validation.py, MAX_TAG_VAL_LENGTH)


def now() -> str:
    """The current UTC time, ISO 8601 to the second (every time stamp the registry records)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_client(params: Params, *, root: Path) -> Any:
    """An MlflowClient on the project's tracking store (:func:`genretag.core.tracking.use_tracking`)."""
    from mlflow import MlflowClient

    use_tracking(params, root=root)
    return MlflowClient()


def mlflow_error() -> type[Exception]:
    """MLflow's exception class (imported on demand)."""
    from mlflow.exceptions import MlflowException

    return MlflowException


def missing_store(uri: str) -> Path | None:
    """The project's default SQLite registry file when it does not exist, else None (a
    $MLFLOW_TRACKING_URI that the user set is always used as given). Callers refuse instead of
    letting MLflow create an empty store wherever a command runs."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    return store if store is not None and not store.is_file() else None


def alias_version(client: Any, *, name: str, alias: str) -> Any:
    """The ModelVersion behind ``alias``, or None when the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow_error():
        return None


def model_tags(client: Any, *, name: str) -> dict[str, str]:
    """The registered model's tags ({} when the model does not exist)."""
    try:
        return dict(client.get_registered_model(name).tags)
    except mlflow_error():
        return {}


def resolve_version(client: Any, *, name: str, ref: str) -> Any:
    """The ModelVersion behind ``ref``: an alias (champion, challenger) or a version number.

    Raises RegistryError; for a missing ``champion`` after a gate that found nothing servable, its
    message is the gate's one line naming the failed candidates and why.
    """
    try:
        if str(ref).isdigit():
            return client.get_model_version(name, str(ref))
        return client.get_model_version_by_alias(name, str(ref))
    except mlflow_error() as exc:
        refusal = model_tags(client, name=name).get(TAG_REFUSAL) if str(ref) == CHAMPION else None
        if refusal:
            raise RegistryError(f"registered model {name!r} serves no champion: {refusal}") from None
        raise RegistryError(f"registered model {name!r} has no version or alias {ref!r} ({exc.message})") from None


def all_versions(client: Any, *, name: str) -> list[Any]:
    """Every ModelVersion of ``name``, oldest first (all pages of MLflow's search)."""
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=200, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    return sorted(versions, key=lambda v: int(v.version))

