"""Issue 19: each candidate-<id> stage depends on its family's module, the modules it imports and its own params
section, so editing one family reruns only that family (real DVC, no training: the stages' outputs are committed as they are)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from tests.conftest import REPO_ROOT
from tests.pipeline.conftest import TINY_CANDIDATES, run, set_params

from genretag.training.stages import main


def test_the_committed_dvc_yaml_has_the_candidate_stages_of_params_yaml():
    assert main(["--root", str(REPO_ROOT), "--check"]) == 0


def stale(root: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    out = run(root, sys.executable, "-m", "dvc", "status", "--json").stdout
    return set(yaml.safe_load(out) or {})


def test_editing_one_family_makes_only_its_candidate_stale(make_project):
    root = make_project("stages")
    stages = [f"candidate-{c}" for c in TINY_CANDIDATES]
    assert set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"]) >= set(stages)
    for relative in ("data/raw/blues/x.wav", "data/clips.csv", "data/tracks.csv", *(f"models/candidates/{c}/model.onnx" for c in TINY_CANDIDATES)):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("placeholder")  # the stages' deps and outs, as if they had run
    run(root, sys.executable, "-m", "dvc", "commit", "-f", *stages)
    assert not stale(root) & set(stages)

    compact = root / "src/genretag/families/compact.py"
    compact.write_text(compact.read_text() + "\n# an edit\n")
    assert stale(root) & set(stages) == {"candidate-compact"}
    run(root, sys.executable, "-m", "dvc", "commit", "-f", *stages)

    set_params(root, {"families": {"mfcc-logreg": {"C": 0.5}}})  # its own section
    assert stale(root) & set(stages) == {"candidate-mfcc-logreg"}
    run(root, sys.executable, "-m", "dvc", "commit", "-f", *stages)

    set_params(root, {"spectrogram": {"n_mels": 64}})  # the Keras image families' front end only
    assert stale(root) & set(stages) == {"candidate-compact"}
    run(root, sys.executable, "-m", "dvc", "commit", "-f", *stages)

    shared = root / "src/genretag/families/heads.py"  # imported by mfcc-logreg (and musicnn-msd), not by compact
    shared.write_text(shared.read_text() + "\n# an edit\n")
    assert stale(root) & set(stages) == {"candidate-mfcc-logreg"}
