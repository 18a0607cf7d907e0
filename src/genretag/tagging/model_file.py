"""Which ONNX file a model name means: a path, or a registry alias or version fetched from MLflow."""

from __future__ import annotations

from pathlib import Path

from genretag.core.errors import RegistryError, ScoringError


def resolve_model(model: str, *, tracking_uri: str | None = None, model_name: str | None = None) -> Path:
    """``champion`` / ``challenger`` / a registry version number / a path -> a local .onnx file.

    Raises ScoringError for a path to a missing .onnx file, RegistryError when a registry reference is
    given where genretag.registry cannot be imported, or from genretag.registry.mlflow_registry.fetch_onnx.
    """
    candidate = Path(model).expanduser()
    if candidate.suffix == ".onnx" or candidate.is_file():
        if not candidate.is_file():
            raise ScoringError(f"{candidate}: no such ONNX file")
        return candidate.resolve()
    try:
        from genretag.registry import mlflow_registry as registry
    except ImportError as exc:
        raise RegistryError(
            f"model {model!r}: the model registry (genretag.registry) is not available; pass a path to an .onnx file"
        ) from exc
    return Path(registry.fetch_onnx(model, tracking_uri=tracking_uri, model_name=model_name))
