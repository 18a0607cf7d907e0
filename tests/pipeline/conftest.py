"""A throw-away copy of the repository with a tiny demo configuration, run through real DVC."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

TINY_CANDIDATES = ["mfcc-logreg", "compact"]  # the gate's baseline and a Keras image family: quick on a CPU
TINY_PARAMS = {
    "genres": ["blues", "classical", "metal", "reggae"],
    "ingest": {"demo_tracks_per_genre": 3},
    "spectrogram": {"image_size": [32, 32]},
    "train": {"candidates": TINY_CANDIDATES},
    "families": {"compact": {"max_epochs": 2, "batch_size": 32}},
    "evaluate": {"tsne_clips": 40},
}
STAGES = {"ingest", "validate", "split", *(f"candidate-{c}" for c in TINY_CANDIDATES), "evaluate", "register"}


def set_params(root: Path, updates: dict) -> None:
    """Merge ``updates`` (nested dicts) into root/params.yaml, then write dvc.yaml's candidate stages for it
    (``python -m genretag.training.stages``: the stages follow train.candidates)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, value in updates.items():
        if isinstance(value, dict):
            params.setdefault(section, {}).update(value)
        else:
            params[section] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(root, sys.executable, "-m", "genretag.training.stages", "--root", str(root))


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, text=True,
                         capture_output=True, check=True).stdout
    outputs = ("data/", "models/", "metrics/", "plots/", "reports/")  # data/feedback/ is a source (review labels), not an output
    return [line for line in out.splitlines() if line and (line.startswith("data/feedback/") or not line.startswith(outputs))]


def project_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["GENRETAG_ROOT"] = str(root)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run(root: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=root, env=project_env(root), text=True, capture_output=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def repro(root: Path) -> subprocess.CompletedProcess:
    """`dvc repro` with one Prefect server for all its stages, as `make demo` runs it."""
    return run(root, sys.executable, "-m", "flows.server", "dvc", "repro")


def stages_run(repro_output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@.-]+)'", repro_output))


@pytest.fixture(scope="session")
def make_project(tmp_path_factory) -> Callable[[str], Path]:
    """Copy the working tree into a fresh git repository with TINY_PARAMS."""

    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        for rel in tracked_files():
            source = REPO_ROOT / rel
            if source.is_file():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, root / rel)
        (root / "dvc.lock").unlink(missing_ok=True)
        set_params(root, TINY_PARAMS)
        run(root, "git", "init", "-q")
        run(root, "git", "add", "-A")
        run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "test copy")
        return root

    return make


@pytest.fixture(scope="session")
def pipeline_project(make_project) -> Path:
    """The tiny project after one full `dvc repro` (shared by the pipeline tests)."""
    root = make_project("pipeline")
    result = repro(root)
    assert stages_run(result.stdout) == STAGES
    return root
