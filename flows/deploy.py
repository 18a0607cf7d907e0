"""The schedules: every deployment, its cron schedule and its parameters, in this one file.

``python -m flows.deploy`` (or ``genretag deploy``) registers both deployments with the Prefect
API ($PREFECT_API_URL) and serves them from this process until stopped:

| deployment | flow | schedule (default) | parameters |
| --- | --- | --- | --- |
| ``retrain/retrain`` | flows.retrain.retrain_flow | ``0 3 * * 1`` (Mondays 03:00) | workspace |
| ``tag-catalog/tag-catalog`` | flows.tag_catalog.tag_catalog_flow | ``0 * * * *`` (hourly) | source |

Each default can be overridden without editing code, by environment variable or by the
matching ``genretag deploy`` option: GENRETAG_RETRAIN_CRON, GENRETAG_TAG_CATALOG_CRON,
GENRETAG_SCHEDULE_TIMEZONE, GENRETAG_CATALOG_SOURCE (the folder or track_id,path CSV to tag;
relative paths are relative to the workspace), GENRETAG_ROOT (the workspace).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from genretag.core.config import project_root

RETRAIN_CRON = "0 3 * * 1"        # weekly, Monday 03:00
TAG_CATALOG_CRON = "0 * * * *"    # hourly, on the hour
TIMEZONE = "UTC"
CATALOG_SOURCE = "catalog/incoming"  # relative to the workspace


@dataclass(frozen=True)
class Schedules:
    """Everything the two deployments need; defaults above, overridable by environment."""

    workspace: Path
    retrain_cron: str = RETRAIN_CRON
    tag_catalog_cron: str = TAG_CATALOG_CRON
    timezone: str = TIMEZONE
    catalog_source: str = CATALOG_SOURCE

    @classmethod
    def from_env(cls, **overrides: str | Path | None) -> Schedules:
        values = {
            "workspace": Path(os.environ.get("GENRETAG_ROOT") or project_root()),
            "retrain_cron": os.environ.get("GENRETAG_RETRAIN_CRON", RETRAIN_CRON),
            "tag_catalog_cron": os.environ.get("GENRETAG_TAG_CATALOG_CRON", TAG_CATALOG_CRON),
            "timezone": os.environ.get("GENRETAG_SCHEDULE_TIMEZONE", TIMEZONE),
            "catalog_source": os.environ.get("GENRETAG_CATALOG_SOURCE", CATALOG_SOURCE),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["workspace"] = Path(values["workspace"]).expanduser().resolve()
        return cls(**values)

    def source_path(self) -> str:
        source = Path(self.catalog_source).expanduser()
        return str(source if source.is_absolute() else self.workspace / source)


def deployments(schedules: Schedules) -> list[RunnerDeployment]:
    """The `retrain` and `tag-catalog` deployments, with their schedules and parameters."""
    from flows.retrain import retrain_flow
    from flows.tag_catalog import tag_catalog_flow

    return [
        retrain_flow.to_deployment(
            name="retrain",
            schedule=Cron(schedules.retrain_cron, timezone=schedules.timezone),
            parameters={"workspace": str(schedules.workspace)},
            description="Pull, ingest new audio, dvc repro (stale stages; champion gate), push. One at a time.",
            tags=["genretag", "training"],
        ),
        tag_catalog_flow.to_deployment(
            name="tag-catalog",
            schedule=Cron(schedules.tag_catalog_cron, timezone=schedules.timezone),
            parameters={"source": schedules.source_path()},
            description="Tag new catalog tracks with the champion model (each file once per model version).",
            tags=["genretag", "tagging"],
        ),
    ]


def serve_deployments(schedules: Schedules | None = None, *, limit: int | None = None) -> None:
    """Register both deployments and run their flow runs from this process until stopped."""
    schedules = schedules or Schedules.from_env()
    os.environ["GENRETAG_ROOT"] = str(schedules.workspace)  # the flows' stage_context() reads it
    os.chdir(schedules.workspace)
    serve(*deployments(schedules), limit=limit)


if __name__ == "__main__":
    serve_deployments()
