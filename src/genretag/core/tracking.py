"""Where MLflow keeps runs and the model registry: a SQLite file in the project by default."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from genretag.core.config import Params, resolve_sqlite_url
from genretag.core.errors import RegistryError

EXPERIMENT_NAME = "genretag"
# MLflow 3 opens an experiment by its kind: "custom_model_development" is the classic ML view (runs, metrics,
# models), "genai_development" the GenAI overview (traces) that an untagged experiment may be inferred as
# (the tag and its values: mlflow/server/js's ExperimentKind, mlflow/assistant/skills/mlflow-onboarding/SKILL.md).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri(params: Params, *, root: Path) -> str:
    """$MLFLOW_TRACKING_URI when set (a tracking server), else params' SQLite file under ``root``.

    Raises RegistryError when that is a SQLite file that is corrupt (see check_sqlite_store).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or resolve_sqlite_url(params.registry.tracking_uri, root)
    check_sqlite_store(uri)
    return uri


def check_sqlite_store(uri: str) -> None:
    """Raise RegistryError("registry database PATH is corrupt: ...") for a damaged SQLite store.

    MLflow reads a damaged file as an empty registry ("no registered versions") or fails deep
    inside SQLAlchemy naming no file. SQLite's own ``PRAGMA quick_check`` (read-only, O(size))
    finds a non-database file, a truncated one and damaged pages. A missing file is not checked:
    MLflow creates it.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    path = Path(uri[len(prefix):].split("?", 1)[0])
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise RegistryError(f"registry database {path} is corrupt: {exc}") from exc
    if problems != ["ok"]:
        raise RegistryError(f"registry database {path} is corrupt: {'; '.join(problems[:3])}")


def point_mlflow(uri: str) -> None:
    """Point this process's MLflow client (tracking and registry) at ``uri``, and at nothing else.

    ``mlflow.set_tracking_uri`` / ``set_registry_uri`` also export MLFLOW_TRACKING_URI /
    MLFLOW_REGISTRY_URI (MLflow 3), and :func:`tracking_uri` reads MLFLOW_TRACKING_URI as the
    operator's tracking server: left exported, the first store a process touched would win over
    every later project's. Both variables are put back as they were.
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def use_tracking(params: Params, *, root: Path) -> str:
    """Point MLflow at the project's store and experiment; return the experiment id.

    With the SQLite default, artifacts go to ``<root>/mlartifacts`` (never ./mlruns of
    whatever directory the process happens to run in). The experiment is a classic ML one
    (:data:`EXPERIMENT_KIND_TAG`), also when an older version of genretag created it untagged.
    """
    import mlflow

    uri = tracking_uri(params, root=root)
    point_mlflow(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        mlflow.set_experiment(EXPERIMENT_NAME)
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    artifact_location = (root / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
    experiment_id = mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location,
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
