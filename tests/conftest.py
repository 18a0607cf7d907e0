"""Shared fixtures: a real Prefect API on a temporary SQLite database, audio made by the tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# Every process the tests start (dvc, flows) writes Prefect state here, never in ~/.prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="genretag-prefect-home-"))

import genretag  # noqa: E402,F401  - offline environment before Prefect or MLflow load

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 22050


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Run flows against a real, temporary Prefect API server (SQLite)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def tone(seconds: float, *, sample_rate: int = SAMPLE_RATE, frequency: float = 440.0, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """A sine with a little noise: decodable, not silent, deterministic."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (amplitude * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, *, sample_rate: int = SAMPLE_RATE, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sample_rate, subtype=subtype)
    return path
