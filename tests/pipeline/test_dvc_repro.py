"""`dvc repro` end to end on a tiny demo corpus: every output written, nothing reruns unchanged,
a parameter change reruns only the stages it affects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.pipeline.conftest import TINY_CANDIDATES, repro, set_params, stages_run

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.dvc, pytest.mark.keras]


def test_every_stage_writes_its_outputs(pipeline_project):
    from genretag.onnx.contract import read_contract

    root = pipeline_project
    manifest = pd.read_csv(root / "data/raw/manifest.csv")
    assert len(manifest) == 12 and set(manifest["genre"]) == {"blues", "classical", "metal", "reggae"}
    for path in manifest["path"]:
        info = sf.info(root / path)
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    clips = pd.read_csv(root / "data/clips.csv")
    assert len(clips) == 120 and set(clips["split"]) == {"train", "validation", "test"}
    assert (clips.groupby("track_id")["split"].nunique() == 1).all()
    assert (root / "reports/validation/index.html").is_file() and (root / "metrics/validation.json").is_file()
    test_clips = int((clips["split"] == "test").sum())

    for candidate in TINY_CANDIDATES:
        folder = root / "models/candidates" / candidate
        contract = read_contract(folder / "model.onnx")
        assert contract.contract_version == 2 and contract.family == candidate and contract.labels == ("blues", "classical", "metal", "reggae")
        training = json.loads((folder / "training.json").read_text())
        assert training["candidate"] == candidate and contract.model_version == f"{candidate}-{training['mlflow_run_id'][:12]}"
        assert "Model card" in (folder / "MODEL_CARD.md").read_text()
        metrics = json.loads((root / "metrics/candidates" / f"{candidate}.json").read_text())
        assert metrics["n_test_clips"] == test_clips and 0.0 <= metrics["track_accuracy_mean_prob"] <= 1.0
        plots = root / "plots/candidates" / candidate
        assert len(pd.read_csv(plots / "confusion_matrix.csv")) == test_clips
        assert (plots / "tsne.png").read_bytes()[:4] == b"\x89PNG" and not (plots / "confusion_matrix.png").exists()
    assert (root / "models/candidates/compact/training_curves.png").is_file()  # a family that learns by epochs

    registry = json.loads((root / "models/registry.json").read_text())
    assert {row["model"] for row in registry["candidates"]} >= set(TINY_CANDIDATES)
    assert registry["decision"] and registry["reason"]
    assert registry["decision"] in (root / "models/GATE.md").read_text()
    for stale in ("models/model.keras", "models/model.onnx", "data/images", "metrics/eval.json", "plots/history.csv"):
        assert not (root / stale).exists(), stale  # the single-model stages are gone


def test_nothing_reruns_when_nothing_changed(pipeline_project):
    assert stages_run(repro(pipeline_project).stdout) == set()


def test_a_param_change_reruns_only_the_stages_it_affects(pipeline_project):
    root = pipeline_project
    set_params(root, {"evaluate": {"tsne_clips": 30}})
    assert stages_run(repro(root).stdout) == {"evaluate"}  # same metrics: the gate has nothing new to see

    onnx = {c: (root / "models/candidates" / c / "model.onnx").read_bytes() for c in TINY_CANDIDATES}
    set_params(root, {"train": {"candidates": TINY_CANDIDATES[:1]}})  # drop a candidate: no model is retrained
    assert stages_run(repro(root).stdout) == {"evaluate", "register"}
    assert sorted(p.name for p in (root / "metrics/candidates").iterdir()) == [f"{TINY_CANDIDATES[0]}.json"]
    gate = json.loads((root / "models/registry.json").read_text())
    assert TINY_CANDIDATES[1] not in {row["model"] for row in gate["candidates"]}

    set_params(root, {"train": {"candidates": TINY_CANDIDATES}})  # back: the kept model and its outputs come back unchanged
    assert stages_run(repro(root).stdout) == {"evaluate", "register"}
    assert {c: (root / "models/candidates" / c / "model.onnx").read_bytes() for c in TINY_CANDIDATES} == onnx

    set_params(root, {"register": {"alpha": 0.01}})
    assert stages_run(repro(root).stdout) == {"register"}


def test_catalog_scoring_of_the_audio_equals_the_evaluate_stage(pipeline_project):
    """The tagger (WAV -> windows -> ONNX) and the evaluate stage (clips.csv windows -> ONNX) agree on every test track."""
    from genretag.evaluation.evaluate import read_test_audio, score_on_audio
    from genretag.core.config import layout
    from genretag.onnx.session import open_model
    from genretag.tagging.scoring import score_file

    root = pipeline_project
    paths = layout(root)
    test = read_test_audio(paths, genres=("blues", "classical", "metal", "reggae"))
    for candidate in TINY_CANDIDATES:
        onnx_path = root / "models/candidates" / candidate / "model.onnx"
        scores = score_on_audio(onnx_path, test)
        model = open_model(onnx_path)
        assert model.provider == "CPUExecutionProvider"
        for track_id, rows in test.clips.groupby("track_id", sort=False):
            expected = scores.probabilities[rows.index].mean(axis=0)
            tagged = score_file(model, rows["path"].iloc[0], max_windows=len(rows))
            assert tagged.windows_scored == len(rows)
            np.testing.assert_allclose([tagged.probabilities[g] for g in test.genres], expected, atol=1e-4)
