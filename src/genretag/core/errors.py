"""The project's own exception hierarchy: every message names the file and the reason."""

from pathlib import Path


class GenretagError(Exception):
    """Base class of every error genretag raises on purpose."""


class ConfigError(GenretagError):
    """params.yaml (or an override) is missing a key or holds a bad value."""


class AudioError(GenretagError):
    """An audio file cannot be used: unreadable, empty, silent, too short, not finite."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TrainingDataError(GenretagError):
    """clips.csv or its images cannot be used for training or evaluation."""


class ValidationFailed(GenretagError):
    """Too much of a batch failed validation for the pipeline to go on."""


class ExportError(GenretagError):
    """The ONNX export failed or did not match the Keras model."""


class RegistryError(GenretagError):
    """The model registry holds no such model, version or alias."""


class ScoringError(GenretagError):
    """The catalog could not be scored as asked (no GPU under --require-gpu, bad model)."""


class CatalogError(GenretagError):
    """The catalog database cannot be reached, opened or written (its URL is named, password redacted)."""


class ReviewError(GenretagError):
    """A review file cannot be read or written as a whole (its rows' own problems are reported one line each)."""
