"""int8 export (genretag.export.export_int8) on real onnxruntime.quantization: contract-v2 IO kept,
metadata says int8, the front end stays float, top-1 agreement with float32, and the registry gate
registers the int8 model as its own version and candidate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests.clips_support import real_looking_clips
from tests.gate_support import FEATURE_TONES, GENRES, PERFECT, tone, tone_model, tone_project, track_tone, votes

from genretag.onnx import graph
from genretag.registry.listing import list_versions
from genretag.registry.register import register_candidates
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, INT8, OUTPUT_NAME, ModelContract, read_contract, write_contract
from genretag.data.demo import synthesize_track
from genretag.core.errors import ExportError
from genretag.evaluation.evaluate import find_candidates
from genretag.training.int8 import Int8Refused, export_int8
from genretag.core.config import INT8_DIR
from genretag.training.parity import TestClips, synthetic_clips
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.dsp.spectrogram import PreprocessingSpec

SPEC = PreprocessingSpec(image_size=(64, 64))
LABELS = ("blues", "jazz", "metal", "rock")
MIN_AGREEMENT = 11 / 12  # of the 12 clips below (7 synthetic + 5 real-looking), at most one may change its top-1 class


@pytest.fixture(autouse=True)
def _project_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _cnn(*, logits_scale: float = 1.0, bias: np.ndarray | None = None) -> onnx.ModelProto:
    """mel_image [N,64,64,3] -> Conv/Relu/MaxPool x2 -> GlobalAveragePool -> embedding [N,16] -> MatMul + bias -> Softmax."""
    rng = np.random.default_rng(11)
    weights = {
        "w1": rng.standard_normal((8, 3, 3, 3)) * 0.5, "b1": rng.standard_normal(8) * 0.1,
        "w2": rng.standard_normal((16, 8, 3, 3)) * 0.3, "b2": rng.standard_normal(16) * 0.1,
        "dense": rng.standard_normal((16, len(LABELS))) * logits_scale,
        "bias": np.zeros(len(LABELS)) if bias is None else bias,
        "flat": np.array([-1, 16], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Transpose", ["mel_image"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Reshape", ["gap", "flat"], [EMBEDDING_NAME], name="flatten"),
        helper.make_node("MatMul", [EMBEDDING_NAME, "dense"], ["scores"], name="dense"),
        helper.make_node("Add", ["scores", "bias"], ["logits"], name="add_bias"),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1, name="softmax"),
    ]
    net = helper.make_graph(
        nodes, "toy-cnn", [helper.make_tensor_value_info("mel_image", TensorProto.FLOAT, ["N", *SPEC.image_size, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(LABELS)]),
         helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", 16])],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.int64 if k == "flat" else np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(net, opset_imports=[helper.make_opsetid("", graph.OPSET)])
    model.ir_version = graph.IR_VERSION
    return model


def _float32_cnn(path: Path, clips: np.ndarray) -> Path:
    """A contract-v2 paper-image CNN whose logits are centred on ``clips`` and spread ~10 apart, so the top-1 class is decisive."""
    probe = graph.compose(graph.paper_image_frontend(SPEC), _cnn())
    embedding = predict_waveforms(cpu_session(probe.SerializeToString()), clips).embedding
    spread = float((embedding - embedding.mean(0)).std()) or 1.0
    dense = np.asarray(numpy_helper.to_array(next(i for i in _cnn().graph.initializer if i.name == "dense")))
    scale = 10.0 / spread
    model = graph.compose(graph.paper_image_frontend(SPEC), _cnn(logits_scale=scale, bias=-(embedding.mean(0) @ dense) * scale))
    write_contract(model, ModelContract(labels=LABELS, model_name="toy", model_version="toy-0001", sample_rate=SPEC.sample_rate,
                                        clip_samples=SPEC.clip_samples, family="toy-cnn", preprocessing={"frontend": "paper mel image"}))
    onnx.save(model, str(path))
    return path


def _clips() -> tuple[np.ndarray, np.ndarray]:
    """(calibration: 12 synthetic music clips, checked: 7 synthetic parity clips + 5 real-looking clips)."""
    calibration = np.stack([synthesize_track(g, index=i, seed=9, sample_rate=SPEC.sample_rate, duration_s=3.0)[: SPEC.clip_samples]
                            for g in ("blues", "metal", "jazz", "rock") for i in range(3)]).astype(np.float32)
    checked = np.concatenate([synthetic_clips(sample_rate=SPEC.sample_rate, clip_samples=SPEC.clip_samples),
                              real_looking_clips(sample_rate=SPEC.sample_rate, samples=SPEC.clip_samples)])
    return calibration, checked


def _io(model: onnx.ModelProto) -> list[tuple[str, list]]:
    return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in (*model.graph.input, *model.graph.output)]


def test_int8_keeps_contract_v2_says_int8_and_agrees_with_float32(tmp_path: Path) -> None:
    calibration, checked = _clips()
    source = _float32_cnn(tmp_path / "float32.onnx", np.concatenate([calibration, checked]))
    test = TestClips(waveforms=checked, genres=("blues",) * len(checked), clip_ids=tuple(map(str, range(len(checked)))),
                     sample_rate=SPEC.sample_rate)
    result = export_int8(source, calibration=calibration, onnx_path=tmp_path / "int8" / "model.onnx", test=test,
                         min_agreement=MIN_AGREEMENT)

    float32, int8 = onnx.load(str(source)), onnx.load(str(result.onnx_path))
    assert _io(int8) == _io(float32) == [(INPUT_NAME, ["N", SPEC.clip_samples]), (OUTPUT_NAME, ["N", 4]), (EMBEDDING_NAME, ["N", 16])]
    contract = read_contract(result.onnx_path)
    assert contract.quantization == INT8 and contract.derived_from == "toy-0001" and contract.model_version == "toy-0001-int8"
    assert contract.labels == LABELS and contract.contract_version == 2 and read_contract(source).quantization == "float32"
    network_ops = {n.op_type for n in int8.graph.node if not n.name.startswith("frontend/")}
    assert {"QLinearConv", "QLinearMatMul"} <= network_ops and "Conv" not in network_ops and "Softmax" in network_ops
    front = sorted((n.op_type, list(n.input), list(n.output)) for n in float32.graph.node if n.name.startswith("frontend/"))
    assert sorted((n.op_type, list(n.input), list(n.output)) for n in int8.graph.node if n.name.startswith("frontend/")) == front

    reference = predict_waveforms(cpu_session(str(source)), checked).probabilities
    for batch in (1, 7):  # the batch dimension stays dynamic
        quantised = predict_waveforms(cpu_session(str(result.onnx_path)), checked, batch_size=batch).probabilities
        agreement = np.mean(quantised.argmax(1) == reference.argmax(1))
        assert agreement >= MIN_AGREEMENT, f"top-1 agreement {agreement:.3f} at batch {batch}"
        np.testing.assert_allclose(quantised.sum(1), 1.0, atol=1e-5)
    assert min(result.agreement_test, result.agreement_synthetic) >= MIN_AGREEMENT and result.calibration_clips == 12


def test_int8_keeps_the_float32_unknown_decisions(tmp_path: Path) -> None:
    """Issue 21: a float32 model with the track kNN unknown score (bank: the calibration clips as 6 tracks;
    threshold: the checked clips as validation tracks, half accepted) keeps its float32 bank and threshold in
    int8, and decides unknown like float32 on the test tracks and synthetic clips (each one a track)."""
    from genretag.evaluation.open_set import track_embeddings
    from genretag.training.open_set import attach_open_set

    calibration, checked = _clips()
    source = _float32_cnn(tmp_path / "float32.onnx", np.concatenate([calibration, checked]))
    tracks = tuple(f"track-{i // 2}" for i in range(len(checked)))
    clips = TestClips(waveforms=checked, genres=("blues",) * len(checked), clip_ids=tuple(map(str, range(len(checked)))),
                      sample_rate=SPEC.sample_rate, track_ids=tracks)
    train = TestClips(waveforms=calibration, genres=("blues", "metal", "jazz", "rock") * 3, clip_ids=tuple(map(str, range(12))),
                      sample_rate=SPEC.sample_rate, track_ids=tuple(f"train-{i // 2}" for i in range(12)))
    sealed, _, open_set = attach_open_set(source.read_bytes(), read_contract(source), train=train, validation=clips, accept=0.5,
                                          k=2, max_tracks=6, seed=1)
    source.write_bytes(sealed)
    result = export_int8(source, calibration=calibration, onnx_path=tmp_path / "int8.onnx", test=clips, min_agreement=0.8)
    assert read_contract(result.onnx_path).open_set == open_set and open_set.available
    synthetic = synthetic_clips(sample_rate=SPEC.sample_rate, clip_samples=SPEC.clip_samples)
    decided = {}
    for name, path in (("float32", source), ("int8", result.onnx_path)):
        session = cpu_session(str(path))
        per_track = track_embeddings(predict_waveforms(session, checked).embedding, tracks)[1]
        per_clip = predict_waveforms(session, synthetic).embedding
        decided[name] = np.array([open_set.is_unknown(open_set.track_score(v)) for v in [*per_track, *per_clip]])
    assert decided["float32"].any() and not decided["float32"].all()  # the threshold splits them: a real comparison
    assert result.unknown_agreement == pytest.approx(np.mean(decided["float32"] == decided["int8"]))
    assert result.unknown_agreement >= 0.8
    if result.unknown_agreement < 1.0:  # this toy's int8 embedding moves some tracks across the threshold: a stricter floor refuses
        with pytest.raises(Int8Refused, match="unknown decision"):
            export_int8(source, calibration=calibration, onnx_path=tmp_path / "strict.onnx", test=clips,
                        min_agreement=(1.0 + result.unknown_agreement) / 2)
        assert not (tmp_path / "strict.onnx").exists()
    assert [o.name for o in onnx.load(str(result.onnx_path)).graph.output] == ["probabilities", "embedding"]


def test_int8_below_the_agreement_rate_is_refused_and_nothing_written(tmp_path: Path) -> None:
    calibration, checked = _clips()
    tied = tmp_path / "tied.onnx"  # logits 1e-4 apart: every top-1 class is a near-tie that int8 steps can flip
    model = graph.compose(graph.paper_image_frontend(SPEC), _cnn(logits_scale=1e-4))
    onnx.save(write_contract(model, ModelContract(labels=LABELS, model_name="tied", model_version="tied-1", sample_rate=SPEC.sample_rate,
                                                  clip_samples=SPEC.clip_samples)), str(tied))
    test = TestClips(waveforms=checked, genres=("blues",) * len(checked), clip_ids=tuple(map(str, range(len(checked)))),
                     sample_rate=SPEC.sample_rate)
    with pytest.raises(Int8Refused, match="below export.int8_min_agreement 100.0 %. Nothing written"):
        export_int8(tied, calibration=calibration, onnx_path=tmp_path / "int8.onnx", test=test, min_agreement=1.0)
    assert not (tmp_path / "int8.onnx").exists()


def test_a_graph_without_network_nodes_is_refused_and_nothing_written(tmp_path: Path) -> None:
    loose = tmp_path / "loose.onnx"
    onnx.save(tone_model(votes(PERFECT)), str(loose))  # not built with graph.compose: no network/ nodes
    calibration = np.zeros((2, 66150), np.float32)
    test = TestClips(waveforms=calibration, genres=("blues", "blues"), clip_ids=("a", "b"), sample_rate=22050)
    with pytest.raises(ExportError, match="no network/ nodes"):
        export_int8(loose, calibration=calibration, onnx_path=tmp_path / "out.onnx", test=test)
    assert not (tmp_path / "out.onnx").exists()


def _tone_frontend() -> onnx.ModelProto:
    """waveform -> log tone powers [N, 4] (tests.gate_support.tone_model's features) as a front end."""
    full = tone_model(votes(PERFECT))
    kept = [n for n in full.graph.node if n.output[0] != OUTPUT_NAME and n.op_type not in ("Add",) and n.output[0] not in ("scores",)]
    kept[-1].output[0] = "features"
    initializers = [i for i in full.graph.initializer if i.name in ("cos", "sin", "eps")]
    g = helper.make_graph(kept, "tones", list(full.graph.input), [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
                          initializer=initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.OPSET)])
    model.ir_version = graph.IR_VERSION
    return model


def _tone_head(weights: np.ndarray) -> onnx.ModelProto:
    """features [N, 4] -> embedding (the features) and Softmax(features @ weights * 3)."""
    nodes = [
        helper.make_node("Identity", ["features"], [EMBEDDING_NAME], name="embed"),
        helper.make_node("MatMul", ["features", "weights"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1, name="softmax"),
    ]
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(GENRES)]),
                           helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", 4])],
                          initializer=[numpy_helper.from_array((weights * 3).astype(np.float32), "weights")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.OPSET)])
    model.ir_version = graph.IR_VERSION
    return model


def test_the_gate_registers_the_int8_model_as_its_own_candidate_and_version(tmp_path: Path) -> None:
    params, paths = tone_project(tmp_path / "project", baseline=None)  # no mfcc-logreg here: the floor checks chance only
    model = graph.compose(_tone_frontend(), _tone_head(votes(PERFECT)))
    write_contract(model, ModelContract(labels=GENRES, model_name="tones", model_version="tones-0001", sample_rate=22050,
                                        clip_samples=66150, family="test-tones", preprocessing={"tones": list(FEATURE_TONES)}))
    float32_path = paths.models_dir / "candidates" / "tones" / "model.onnx"
    float32_path.parent.mkdir(parents=True)
    onnx.save(model, str(float32_path))
    calibration = np.stack([tone(3.0, frequency=track_tone(g, n), seed=n)[:66150] for g in GENRES for n in range(2)]).astype(np.float32)
    test = TestClips(waveforms=calibration, genres=tuple(g for g in GENRES for _ in range(2)), clip_ids=tuple(map(str, range(6))),
                     sample_rate=22050)
    export_int8(float32_path, calibration=calibration, onnx_path=float32_path.parent / INT8_DIR / "model.onnx", test=test,
                synthetic=calibration)  # the tone model means nothing on music or silence: checked on tones only

    found = find_candidates(paths, candidates=["tones"])
    assert found == {"tones": float32_path, "tones-int8": float32_path.parent / INT8_DIR / "model.onnx"}
    registration = register_candidates(params, paths, candidates=found)
    rows = {row["model"]: row for row in registration.candidates}
    assert set(rows) == {"tones", "tones-int8"} and rows["tones"]["version"] != rows["tones-int8"]["version"]
    assert rows["tones-int8"]["servable"] and "not below its source tones" in rows["tones-int8"]["floor"]
    versions = {v.version: v for v in list_versions(params, root=paths.root)}
    assert versions[rows["tones-int8"]["version"]].model_version == "tones-0001-int8"
    assert registration.champion in ("tones", "tones-int8")
