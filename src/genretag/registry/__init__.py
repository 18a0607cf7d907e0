"""The MLflow model registry: versions, the gate's record, the champion alias, promotion, rollback, fetch.

Imports: everything below it (core ... training); never tagging or cli."""
