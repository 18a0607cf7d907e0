"""Where MLflow keeps runs and the model registry: a SQLite file in the project by default."""

from __future__ import annotations

import os
from pathlib import Path

from genretag.config import Params, resolve_sqlite_url

EXPERIMENT_NAME = "genretag"


def tracking_uri(params: Params, *, root: Path) -> str:
    """$MLFLOW_TRACKING_URI when set (a tracking server), else params' SQLite file under ``root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or resolve_sqlite_url(params.registry.tracking_uri, root)


def use_tracking(params: Params, *, root: Path) -> str:
    """Point MLflow at the project's store and experiment; return the experiment id.

    With the SQLite default, artifacts go to ``<root>/mlartifacts`` (never ./mlruns of
    whatever directory the process happens to run in).
    """
    import mlflow

    uri = tracking_uri(params, root=root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        mlflow.set_experiment(EXPERIMENT_NAME)
        return experiment.experiment_id
    artifact_location = (root / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
    experiment_id = mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
