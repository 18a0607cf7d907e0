"""Prefect flows: thin orchestration over genretag's functions (one flow per DVC stage)."""

import genretag  # noqa: F401  - sets the offline/telemetry environment before Prefect loads
