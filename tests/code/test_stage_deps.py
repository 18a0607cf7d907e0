"""Every hand-written stage of dvc.yaml declares the code it runs: each project file its flow imports, is a
dependency or lies under a folder that is. "Imports" is the union of what reading the code finds
(:func:`genretag.training.stages.source_closure`: top level, lazy and relative imports) and what running
it loads (the flow module imported and params.yaml loaded in a fresh interpreter: the family registry
imports its modules by entry point). A missing file lets ``dvc repro`` skip a stage whose code changed
and keep stale metrics or models. The candidate stages are written by the generator from the same
closure (tests/pipeline/test_candidate_stages.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genretag.training.stages import module_file, source_closure
from tests.conftest import REPO_ROOT

STAGES = {name: stage for name, stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"].items()
          if not name.startswith("candidate-")}
LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
from genretag.core.config import load_params
load_params(sys.argv[2])
files = {getattr(m, "__file__", None) for name, m in list(sys.modules.items()) if name.split(".")[0] in ("genretag", "flows")}
print(json.dumps(sorted(f for f in files if f)))
"""


def entry_module(stage: dict) -> str:
    """The module every ``python -m <module>`` of the stage's ``cmd`` runs (one per stage here)."""
    modules = re.findall(r"python -m ([\w.]+)", stage["cmd"])
    assert len(modules) == 1, f"cannot tell which one module {stage['cmd']!r} runs"
    return modules[0]


def loaded_files(module: str, *, root: Path) -> set[str]:
    """The project files a fresh interpreter holds after importing ``module`` and loading params.yaml (relative, POSIX)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", LOADED, module, str(root / "params.yaml")], cwd=root, env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return {Path(f).resolve().relative_to(root.resolve()).as_posix() for f in json.loads(out.strip().splitlines()[-1])
            if Path(f).resolve().is_relative_to(root.resolve())}


def undeclared(stage: dict, *, root: Path, loaded: set[str] = frozenset()) -> list[str]:
    """The project files the stage's module imports, and ``loaded`` (project files, relative) with what they import, read from
    the code (:func:`genretag.training.stages.source_closure`), that none of the stage's deps covers."""
    entry = module_file(entry_module(stage), root=root)
    assert entry is not None, f"{stage['cmd']!r} runs no module of the project"
    deps = [next(iter(dep)) if isinstance(dep, dict) else str(dep) for dep in stage.get("deps", [])]
    imported = source_closure([entry, *(root / path for path in loaded)], root=root)  # what the loaded modules import lazily too
    return [path for path in imported if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_stage_declares_every_file_its_flow_imports(name: str) -> None:
    loaded = loaded_files(entry_module(STAGES[name]), root=REPO_ROOT)
    assert "src/genretag/families/mfcc_logreg.py" in loaded  # the registry's entry point ran: dynamic imports are seen
    assert undeclared(STAGES[name], root=REPO_ROOT, loaded=loaded) == []


def test_a_file_the_flow_imports_but_the_stage_omits_is_found() -> None:
    stage = {"cmd": "python -m flows.evaluate", "deps": ["flows/evaluate.py"]}
    missing = undeclared(stage, root=REPO_ROOT)
    assert "src/genretag/evaluation/evaluate.py" in missing and "flows/evaluate.py" not in missing


def test_the_closure_follows_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "src" / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "main.py").write_text("from . import helper\nfrom .sub import deep\nfrom .. import outside\n", encoding="utf-8")
    for name in ("__init__.py", "helper.py", "sub/__init__.py", "sub/deep.py", "unused.py"):
        (package / name).touch()
    assert source_closure([package / "main.py"], root=tmp_path) == [
        "src/pkg/__init__.py", "src/pkg/helper.py", "src/pkg/main.py", "src/pkg/sub/__init__.py", "src/pkg/sub/deep.py"]
