"""Shared fixtures: a real Prefect API on a temporary SQLite database, audio made by the tests."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# Every process the tests start (dvc, flows) writes Prefect state here, never in ~/.prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="genretag-prefect-home-"))
# genretag's local Prefect server (python -m flows.server ...) stops soon after the last test that used it.
os.environ.setdefault("GENRETAG_SERVER_IDLE_S", "20")

import genretag  # noqa: E402,F401  - offline environment before Prefect or MLflow load

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 22050

# Test tiers (pyproject.toml's markers; `make test-fast` deselects them): the fixture a test uses says
# what it starts. Tests that start such things without a fixture carry the marker themselves.
FIXTURE_MARKERS: dict[str, tuple[str, ...]] = {
    "prefect_api": ("server",),  # a Prefect API server on a temporary SQLite database
    "postgres_server": ("postgres",),
    "prefect_server": ("server",),  # tests/pipeline/test_operations.py: `prefect server start` with a scheduler
    "make_project": ("dvc", "server"),  # tests/pipeline: a project copy for `python -m flows.server dvc repro`
    "pipeline_project": ("dvc", "server", "keras"),  # after a full `dvc repro` (the compact candidate trains Keras)
}


def markers_for(item: pytest.Item) -> set[str]:
    """The tier markers ``item`` gets from its fixtures; ``catalog_url[postgresql]`` needs PostgreSQL."""
    names = set(getattr(item, "fixturenames", ()))
    found = {marker for name in names & FIXTURE_MARKERS.keys() for marker in FIXTURE_MARKERS[name]}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("catalog_url") == "postgresql":
        found.add("postgres")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in sorted(markers_for(item) - {mark.name for mark in item.iter_markers()}):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Run flows against a real, temporary Prefect API server (SQLite)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _postgres_bin() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<major>/bin."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a Unix socket; yields a SQLAlchemy URL without a database name.

    Skipped where PostgreSQL is not installed, unless GENRETAG_REQUIRE_POSTGRES=1 (CI), which fails instead.
    """
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("GENRETAG_REQUIRE_POSTGRES") == "1":
            pytest.fail("GENRETAG_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries (initdb, pg_ctl) were found")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    base = Path(tempfile.mkdtemp(prefix="genretag-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", 5432  # the port only names the socket file: no TCP listener

    def pg(*args: object) -> None:
        subprocess.run([*as_owner, *map(str, args)], check=True, capture_output=True, timeout=120)

    pg(bindir / "initdb", "-D", data, "-A", "trust", "-U", "genretag", "--no-sync", "-E", "UTF8")
    pg(bindir / "pg_ctl", "-D", data, "-w", "-l", base / "server.log", "-o", f"-k {base} -p {port} -c listen_addresses=''", "start")
    try:
        yield f"postgresql+psycopg://genretag@/{{database}}?host={base}&port={port}"
    finally:
        pg(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty catalog database: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    import sqlalchemy as sa

    server = request.getfixturevalue("postgres_server")
    name = f"catalog_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server.format(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.format(database=name)


def tone(seconds: float, *, sample_rate: int = SAMPLE_RATE, frequency: float = 440.0, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """A sine with a little noise: decodable, not silent, deterministic."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (amplitude * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, *, sample_rate: int = SAMPLE_RATE, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sample_rate, subtype=subtype)
    return path
