"""Temperature scaling in the export path (genretag.training.temperature.calibrate_sealed via export_candidate), on real
onnxruntime: T fitted on the validation clips, the graph's output equals numpy's softmax(log p / T), top-1 and
embedding unchanged, the record in the metadata and the model card, the int8 derivative carrying the same T."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tests.export_support import GENRES, GraphFamily, audio_project
from tests.tagging_support import make_onnx_model

from genretag.training import export
from genretag.training.card import render_model_card
from genretag.training.int8 import NETWORK_PREFIX, export_int8
from genretag.training.temperature import CALIBRATION_PREFIX
from genretag.evaluation.calibration import METHOD_NONE, METHOD_TEMPERATURE, expected_calibration_error, temperature_scaled
from genretag.onnx.contract import ModelContract, read_contract
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.train import parity_clips

SEED = 10  # this graph gets 1 of the 3 tones right, already over-confident (its own T would be ~2)
SHARPEN = 2.0  # logits x 2: the same top-1 classes, more over-confident: T ~ 4, which lowers the 15-bin ECE


class Overconfident(GraphFamily):
    """A test family: the onnx.helper energies graph (tests.tagging_support) with its logits sharpened and its
    nodes named ``network/...``; its own forward pass is onnxruntime on that graph."""

    def __init__(self, folder: Path, *, seed: int = SEED, sharpen: float = SHARPEN) -> None:
        proto = onnx.load(make_onnx_model(folder / f"plain-{seed}.onnx", version="plain", seed=seed, labels=GENRES))
        for initializer in proto.graph.initializer:
            if initializer.name == "w2":
                initializer.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializer) * sharpen, "w2"))
        for index, node in enumerate(proto.graph.node):
            node.name = f"{NETWORK_PREFIX}{index}"
        self.proto = proto


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("calibration")
    params, paths = audio_project(root / "project", tracks={"train": 2, "validation": 4, "test": 3}, clips_per_track=3)
    family = Overconfident(root)
    contract = ModelContract(labels=GENRES, model_name="genretag-cnn", model_version="test-0001", sample_rate=family.sample_rate,
                             clip_samples=family.clip_samples, family=family.name)
    test, validation = parity_clips(params, paths, family), parity_clips(params, paths, family, "validation")
    result = export.export_candidate(
        family, contract=contract, onnx_path=root / "out" / "model.onnx", test=test, validation=validation, temperature_min_clips=30,
        card=lambda parity, calibration, track, _open_set: render_model_card(params, contract, parity=parity, test=test, calibration=calibration,
                                                                 track_calibration=track))
    return params, paths, family, test, validation, result


def test_an_over_confident_model_gets_t_above_one_in_its_graph(exported) -> None:
    _, _, family, test, validation, result = exported
    calibration = result.calibration
    print(f"\nT {calibration.temperature:.3f} on {calibration.fitted_on} clips; validation ECE {calibration.ece_before:.4f} -> "
          f"{calibration.ece_after:.4f}, test ECE {calibration.test_ece_before:.4f} -> {calibration.test_ece_after:.4f}")
    assert calibration.method == METHOD_TEMPERATURE and calibration.fitted_on == len(validation) == 36
    assert 1.5 < calibration.temperature < 5

    raw = family.predict(test.waveforms)
    got = predict_waveforms(cpu_session(result.onnx_path), test.waveforms)
    expected = temperature_scaled(probabilities=raw.probabilities, temperature=calibration.temperature)
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-6, rtol=0)
    assert (got.probabilities.argmax(axis=1) == raw.probabilities.argmax(axis=1)).all()
    np.testing.assert_array_equal(got.embedding, raw.embedding)
    # Three tones give three probability vectors, too few for 15 bins; one bin (|accuracy - mean confidence|) shows the fix.
    truth = np.array([GENRES.index(genre) for genre in test.genres])
    gap_before, gap_after = (expected_calibration_error(probabilities=p, labels=truth, bins=1) for p in (raw.probabilities, got.probabilities))
    assert gap_after < gap_before / 2  # measured: 0.507 -> 0.160
    assert calibration.test_ece_after == pytest.approx(expected_calibration_error(probabilities=got.probabilities, labels=truth), abs=1e-6)

    nodes = [n for n in onnx.load(result.onnx_path).graph.node if n.name.startswith(CALIBRATION_PREFIX)]
    assert [n.op_type for n in nodes] == ["Max", "Log", "Div", "Softmax"]


def test_the_record_is_in_the_metadata_and_the_card(exported) -> None:
    _, _, _, _, _, result = exported
    calibration = result.calibration
    contract = read_contract(result.onnx_path)
    assert contract == result.contract and contract.calibration == calibration.as_dict()
    assert contract.calibration["temperature"] == pytest.approx(calibration.temperature) and contract.calibration["fitted_on"] == 36
    meta = cpu_session(result.onnx_path).get_modelmeta().custom_metadata_map
    assert json.loads(meta["genretag.calibration"])["ece_before"] == pytest.approx(calibration.ece_before)

    card = result.card_path.read_text()
    for needle in ("## Calibration", f"T = {calibration.temperature:.4g}", "36 validation clips",
                   f"| validation | {calibration.ece_before:.4f} | {calibration.ece_after:.4f} |",
                   f"| test | {calibration.test_ece_before:.4f} | {calibration.test_ece_after:.4f} |",
                   "Guo et al. 2017", "temperature-scaled", "`genretag.calibration`"):
        assert needle in card, needle
    assert "Probabilities are not calibrated" not in card


def test_the_int8_derivative_carries_the_same_temperature(exported) -> None:
    params, paths, family, test, _, result = exported
    train = parity_clips(params, paths, family, "train")
    int8 = export_int8(result.onnx_path, calibration=train.waveforms, onnx_path=result.onnx_path.parent / "int8" / "model.onnx",
                              test=test, min_agreement=0.5)
    contract = read_contract(int8.onnx_path)
    assert contract.quantization == "int8" and contract.calibration == result.contract.calibration
    proto = onnx.load(int8.onnx_path)
    kept = {n.name: n.op_type for n in proto.graph.node if n.name.startswith(CALIBRATION_PREFIX)}
    assert sorted(kept.values()) == ["Div", "Log", "Max", "Softmax"]  # not quantised: float32 scaling
    temperature = next(numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == f"{CALIBRATION_PREFIX}temperature")
    assert float(temperature) == pytest.approx(result.calibration.temperature, rel=1e-6)
    assert any(n.op_type.startswith("QLinear") or n.op_type == "QuantizeLinear" for n in proto.graph.node)


def test_too_few_validation_clips_leave_t_at_one_with_the_reason(exported, tmp_path) -> None:
    _, _, family, test, validation, _ = exported
    contract = ModelContract(labels=GENRES, model_name="genretag-cnn", model_version="test-0002", sample_rate=family.sample_rate,
                             clip_samples=family.clip_samples, family=family.name)
    for clips, count in ((None, 0), (validation, 36)):
        result = export.export_candidate(family, contract=contract, onnx_path=tmp_path / f"{count}.onnx", test=test, validation=clips,
                                         temperature_min_clips=40)
        assert (result.calibration.method, result.calibration.temperature) == (METHOD_NONE, 1.0)
        assert f"holds {count} clip(s), fewer than export.temperature_min_clips 40" in result.calibration.reason
        assert read_contract(result.onnx_path).calibration["method"] == METHOD_NONE
        assert not [n for n in onnx.load(result.onnx_path).graph.node if n.name.startswith(CALIBRATION_PREFIX)]
        np.testing.assert_array_equal(predict_waveforms(cpu_session(result.onnx_path), test.waveforms).probabilities,
                                      family.predict(test.waveforms).probabilities)


def test_a_fitted_t_that_would_raise_the_ece_is_not_applied(exported, tmp_path) -> None:
    """Seed 2 x 4 gets 2 of the 3 tones right, its wrong tone the surest: the NLL asks for T ~ 2, which would
    raise the 15-bin ECE (0.32 -> 0.36), so the export keeps T = 1, says why, and appends no scaling."""
    _, _, _, test, validation, _ = exported
    family = Overconfident(tmp_path, seed=2, sharpen=4.0)
    contract = ModelContract(labels=GENRES, model_name="genretag-cnn", model_version="test-0003", sample_rate=family.sample_rate,
                             clip_samples=family.clip_samples, family=family.name)
    result = export.export_candidate(family, contract=contract, onnx_path=tmp_path / "kept.onnx", test=test, validation=validation,
                                     temperature_min_clips=30)
    calibration = result.calibration
    assert (calibration.method, calibration.temperature, calibration.fitted_on) == (METHOD_NONE, 1.0, 0)
    assert "fitted on the 36 validation clips would not lower their ECE" in calibration.reason
    assert read_contract(result.onnx_path).calibration["reason"] == calibration.reason
    assert not [n for n in onnx.load(result.onnx_path).graph.node if n.name.startswith(CALIBRATION_PREFIX)]


def test_the_track_record_travels_in_the_metadata_and_the_card(exported) -> None:
    """12 validation tracks < export.track_temperature_min_tracks and no out-of-fold predictor: T_track = 1, saying why;
    the record is in genretag.track_calibration (its own key) and the card reports the track ECE before and after."""
    _, _, _, _, _, result = exported
    record = result.track_calibration
    contract = read_contract(result.onnx_path)
    assert contract.track_calibration == record.as_dict() and contract.track_temperature == 1.0
    assert record.method == "none" and "12 validation track(s), fewer than export.track_temperature_min_tracks 20" in record.reason
    assert record.ece_before is not None and record.test_ece_before is not None
    card = result.card_path.read_text()
    assert "## Track confidence" in card and f"| test | {record.test_ece_before:.4f} | {record.test_ece_after:.4f} |" in card


def test_enough_validation_tracks_fit_the_track_temperature(exported, tmp_path) -> None:
    params, paths, family, test, validation, _ = exported
    contract = ModelContract(labels=GENRES, model_name="genretag-cnn", model_version="test-0003", sample_rate=family.sample_rate,
                             clip_samples=family.clip_samples, family=family.name)
    result = export.export_candidate(family, contract=contract, onnx_path=tmp_path / "m.onnx", test=test, validation=validation,
                                     temperature_min_clips=30, track_min_tracks=2)
    record = result.track_calibration
    assert record.source == "validation" and record.ece_after <= record.ece_before
    assert read_contract(result.onnx_path).track_temperature == pytest.approx(record.temperature)
def test_the_export_states_the_embedding_dimension_and_dtype(exported) -> None:
    """genretag.embedding (issue 20.4): D read from the graph, dtype float32 unless the contract asks for float16."""
    _, _, _, test, _, result = exported
    stored = read_contract(result.onnx_path)
    assert (stored.embedding_dim, stored.embedding_dtype) == (16, "float32") == (result.contract.embedding_dim, result.contract.embedding_dtype)
    assert predict_waveforms(cpu_session(result.onnx_path), test.waveforms[:1]).embedding.shape == (1, stored.embedding_dim)
