"""Issue 19: a family defined outside genretag (tests/toy_family.py), named only by the project's params
(``train.family_modules``), goes through train -> export -> evaluate -> gate -> tag like the built-in ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.conftest import tone, write_audio
from tests.gate_support import GENRES, TONES, tone_project

from genretag.core.config import load_params, layout
from genretag.core.errors import ConfigError
from genretag.core.tracking import tracking_uri
from genretag.evaluation.evaluate import evaluate_candidate, read_test_audio
from genretag.families import create, from_params
from genretag.onnx.contract import read_contract
from genretag.onnx.session import open_model
from genretag.registry.client import open_client
from genretag.registry.register import register_candidates
from genretag.tagging.store import Catalog
from genretag.tagging.run import tag_catalog
from genretag.registry.fetch import resolve_model
from genretag.training.train import export_trained_candidate, prepare_candidate, train_candidate

TOY = "toy-bands"


def toy_project(root: Path, **section: object):
    tone_project(root, train_tracks=2, test_tracks=3)
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    raw["train"].update({"candidates": [TOY], "family_modules": ["tests.toy_family"]})
    raw["families"][TOY] = {"C": 1.0, **section}
    raw["register"]["baseline"] = TOY
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_params(root / "params.yaml"), layout(root)


def test_the_toy_family_is_known_only_where_params_name_its_module(tmp_path):
    with pytest.raises(ConfigError, match="unknown candidate 'toy-bands'"):
        load_params(_write(tmp_path / "a.yaml", {"train": {"candidates": [TOY]}}))
    with pytest.raises(ConfigError, match=r"families\.toy-bands\.floor = -1"):
        load_params(_write(tmp_path / "b.yaml", {"train": {"candidates": [TOY], "family_modules": ["tests.toy_family"]},
                                                 "register": {"baseline": TOY}, "families": {TOY: {"floor": -1}}}))
    with pytest.raises(ConfigError, match="cannot import family module 'tests.no_such_family'"):
        load_params(_write(tmp_path / "c.yaml", {"train": {"family_modules": ["tests.no_such_family"]}}))
    params = load_params(_write(tmp_path / "d.yaml", {"train": {"candidates": [TOY], "family_modules": ["tests.toy_family"]},
                                                      "register": {"baseline": TOY}, "families": {TOY: {"floor": 1e-6, "C": 2.0}}}))
    family = from_params(TOY, params)
    assert (family.floor, family.head.C, family.opset) == (1e-6, 2.0, params.export.opset)


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_the_heads_cross_validation_curve_is_logged_by_step(tmp_path, monkeypatch):
    """Issue 22: MLflow draws a family's curves: the heads' inner CV log loss, one step per C of the grid."""
    from genretag.families.heads import C_GRID

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, paths = toy_project(tmp_path / "project", C=None)
    training = train_candidate(params, paths, prepare_candidate(params, paths, TOY), log=lambda message: None)
    history = open_client(params, root=paths.root).get_metric_history(training["mlflow_run_id"], "cv_log_loss")
    assert [point.step for point in history] == list(range(len(C_GRID)))
    assert [point.value for point in history] == [row["log_loss"] for row in training["cv_curve"]]
    chosen = min(training["cv_curve"], key=lambda row: row["log_loss"])["C"]
    assert training["head_C"] == chosen

    import mlflow

    from genretag.training.train import log_curves

    keras_history = [{"epoch": epoch, "loss": 2.0 / epoch, "val_accuracy": 0.1 * epoch, "learning_rate": 1e-3} for epoch in (1, 2, 3)]
    with mlflow.start_run(run_name="keras-like") as run:  # the Keras families' facts["history"]: one step per epoch
        log_curves({"history": keras_history})
    loss = open_client(params, root=paths.root).get_metric_history(run.info.run_id, "loss")
    assert [(point.step, point.value) for point in loss] == [(1, 2.0), (2, 1.0), (3, 2.0 / 3)]


def test_the_numpy_reference_and_the_graph_agree():
    family = create(TOY, modules=["tests.toy_family"])
    waves = np.stack([tone(3.0, frequency=f, seed=i)[: family.clip_samples] for i, f in enumerate((220.0, 880.0, 5000.0))])
    import onnxruntime as ort

    session = ort.InferenceSession(family.frontend().SerializeToString(), providers=["CPUExecutionProvider"])
    (graph,) = session.run(["features"], {"waveform": waves.astype(np.float32)})
    np.testing.assert_allclose(graph, family.embed(waves), rtol=1e-4, atol=1e-3)
    assert len({int(row[: family.embedding_size // 2].argmax()) for row in graph}) == 3  # three tones, three loudest bands


def test_a_toy_family_goes_through_train_export_gate_and_tag(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, paths = toy_project(tmp_path / "project")
    stage = prepare_candidate(params, paths, TOY)
    training = train_candidate(params, paths, stage, log=lambda message: None)
    assert training["candidate"] == TOY and training["describe"]["family"] == TOY and training["head_C"] == 1.0
    client = open_client(params, root=paths.root)
    ended = client.get_run(training["mlflow_run_id"]).info.end_time
    result = export_trained_candidate(params, paths, stage)
    contract = read_contract(result.onnx_path)
    assert (contract.contract_version, contract.family, contract.labels) == (2, TOY, GENRES)
    assert result.parity.onnx_test_accuracy == 1.0

    metrics = evaluate_candidate(TOY, paths.candidate_dir(TOY) / "model.onnx", read_test_audio(paths, genres=params.genres),
                                 metrics_path=paths.metrics_dir / "candidates" / f"{TOY}.json",
                                 plots_dir=paths.plots_dir / "candidates" / TOY, tsne_clips=5)
    assert metrics["test_accuracy"] == metrics["track_accuracy_mean_prob"] == 1.0
    outcome = register_candidates(params, paths)
    assert outcome.champion == TOY
    run = client.get_run(training["mlflow_run_id"])  # issue 22: calibration and registration never reopen the training run
    assert run.info.status == "FINISHED" and run.info.end_time == ended
    assert "temperature" in run.data.metrics and run.data.metrics["test_accuracy"] == 1.0

    music = tmp_path / "music"
    expected = {}
    for number, genre in enumerate(GENRES):
        write_audio(music / f"{genre}.wav", tone(6.0, frequency=TONES[genre][-1], seed=100 + number))
        expected[f"{genre}.wav"] = genre
    model = open_model(resolve_model("champion", tracking_uri=tracking_uri(params, root=paths.root),
                                     model_name=params.registry.model_name), prefer_gpu=False)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    summary = tag_catalog(music, model=model, database_url=url, workers=1)
    assert summary.tagged == 3 and summary.failed == 0
    with Catalog(url) as catalog:
        tags = catalog.read()
    assert {Path(p).name: g for p, g in zip(tags["path"], tags["genre"], strict=True)} == expected
