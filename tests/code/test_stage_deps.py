"""Every hand-written stage of dvc.yaml declares the code it runs: each file its flow imports, transitively
(:func:`genretag.training.stages.source_closure`, lazy imports too), is a dependency or lies under a folder
that is. A missing one lets ``dvc repro`` skip a stage whose code changed and keep stale metrics or models.
The candidate stages are written by the generator from the same closure (tests/pipeline/test_candidate_stages.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from genretag.training.stages import source_closure
from tests.conftest import REPO_ROOT

STAGES = {name: stage for name, stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"].items()
          if not name.startswith("candidate-")}


def undeclared(stage: dict, *, root: Path) -> list[str]:
    """The project files the stage's ``python -m <module>`` imports that none of its deps covers."""
    module = re.search(r"python -m ([\w.]+)", stage["cmd"])
    assert module, f"cannot tell which module {stage['cmd']!r} runs"
    entry = next(path for path in (root / (module[1].replace(".", "/") + ".py"), root / "src" / (module[1].replace(".", "/") + ".py"))
                 if path.is_file())
    deps = [next(iter(dep)) if isinstance(dep, dict) else str(dep) for dep in stage.get("deps", [])]
    return [path for path in source_closure([entry], root=root)
            if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_stage_declares_every_file_its_flow_imports(name: str) -> None:
    assert undeclared(STAGES[name], root=REPO_ROOT) == []


def test_a_file_the_flow_imports_but_the_stage_omits_is_found(tmp_path: Path) -> None:
    stage = {"cmd": "python -m flows.evaluate", "deps": ["flows/evaluate.py"]}
    missing = undeclared(stage, root=REPO_ROOT)
    assert "src/genretag/evaluation/evaluate.py" in missing and "flows/evaluate.py" not in missing
