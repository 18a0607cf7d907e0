"""The committed dvc.lock records the code the pipeline last ran with (issue 19): every code dependency
(a file or folder under src/ or flows/) it names must match the tree, as real DVC sees it (``dvc status``
through DVC's Python API). A stale lock makes every model record ``git_commit ... +dirty`` and makes
``dvc repro`` rerun stages nobody changed. Data dependencies (data/raw ...) are not in a clone: they never count.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT

CODE_PREFIXES = ("src/", "flows/")


def is_code(path: str) -> bool:
    return path.startswith(CODE_PREFIXES)


def stale_code_deps(root: Path) -> dict[str, dict[str, str]]:
    """Stage -> {code path: why} where ``root``'s dvc.lock disagrees with the tree and dvc.yaml.

    ``why`` is DVC's own status word (``modified``, ``deleted``, ``new``) for a dependency dvc.yaml
    declares, or ``not in dvc.yaml`` for one the lock records that the stage no longer depends on.
    Raises dvc's errors (e.g. ``NotDvcRepoError``) unchanged.
    """
    from dvc.repo import Repo

    stale: dict[str, dict[str, str]] = {}
    with contextlib.chdir(root), Repo(".") as repo:  # DVC names stages relative to the working directory
        for stage, changes in repo.status().items():
            for change in changes:
                if isinstance(change, dict):
                    for path, why in change.get("changed deps", {}).items():
                        if isinstance(why, str) and is_code(path):
                            stale.setdefault(stage, {})[path] = why
        declared = {stage.addressing: {os.fspath(Path(dep.def_path)) for dep in stage.deps} for stage in repo.index.stages}
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) or {}
    for stage, entry in (lock.get("stages") or {}).items():
        for dep in entry.get("deps") or ():
            if is_code(dep["path"]) and dep["path"] not in declared.get(stage, set()):
                stale.setdefault(stage, {})[dep["path"]] = "not in dvc.yaml"
    return stale


def dvc(root: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=root, check=True, capture_output=True, text=True, timeout=120)


def test_the_committed_lock_matches_the_code():
    stale = stale_code_deps(REPO_ROOT)
    assert not stale, "dvc.lock is stale (run `dvc repro` and commit dvc.lock):\n" + "\n".join(
        f"{stage}: {path} {why}" for stage, paths in sorted(stale.items()) for path, why in sorted(paths.items()))


def test_the_check_sees_changed_and_dropped_code_but_not_missing_data(tmp_path):
    """A real DVC project: a stage on src/ code, flows/ code and data/raw, locked by `dvc commit`."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc(tmp_path, "init", "-q")
    for name, text in {"src/pkg/a.py": "A = 1\n", "flows/stage.py": "print()\n", "data/raw/x.wav": "audio\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    dvc(tmp_path, "stage", "add", "-q", "-n", "stage", "-d", "src/pkg/a.py", "-d", "flows/stage.py", "-d", "data/raw", "python flows/stage.py")
    dvc(tmp_path, "commit", "-q", "-f", "stage")
    assert stale_code_deps(tmp_path) == {}

    (tmp_path / "data" / "raw" / "x.wav").unlink()  # a clone: the data is not there
    assert stale_code_deps(tmp_path) == {}

    (tmp_path / "src" / "pkg" / "a.py").write_text("A = 2\n")
    assert stale_code_deps(tmp_path) == {"stage": {"src/pkg/a.py": "modified"}}

    (tmp_path / "src" / "pkg" / "a.py").write_text("A = 1\n")  # back as locked; the stage drops flows/stage.py
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    stages["stages"]["stage"]["deps"].remove("flows/stage.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages))
    assert stale_code_deps(tmp_path) == {"stage": {"flows/stage.py": "not in dvc.yaml"}}
