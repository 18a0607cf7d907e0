"""Keras -> ONNX export: parity with Keras (test images and random input), the contract, the card, failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests.export_support import GENRES, audio_project, centroid_model, load_test_inputs, small_cnn

from genretag import export
from genretag.config import preprocessing_spec
from genretag.contract import INPUT_NAME, OUTPUT_NAME, read_contract
from genretag.errors import ExportError


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    return audio_project(tmp_path_factory.mktemp("export-project"))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def test_export_writes_a_parity_checked_onnx_model_with_its_contract(project) -> None:
    params, paths = project
    model = small_cnn(seed=1)
    paths.models_dir.mkdir(exist_ok=True)
    model.save(paths.keras_model)

    result = export.export_model(params, paths)  # loads models/model.keras, like the DVC stage

    assert result.onnx_path == paths.onnx_model and paths.onnx_model.is_file()
    assert (paths.models_dir / "MODEL_CARD.md").is_file() and not _leftovers(paths.models_dir)
    parity = result.parity
    print(f"\nparity: test {parity.max_abs_diff_test:.3g} on {parity.test_clips} clips, "
          f"random {parity.max_abs_diff_random:.3g} on {parity.random_inputs} inputs")
    assert parity.test_clips == 12 and parity.random_inputs == export.N_RANDOM + 2
    assert parity.max_abs_diff_test <= params.export.parity_tolerance
    assert parity.max_abs_diff_random <= params.export.parity_tolerance
    assert parity.argmax_mismatches == 0

    # Graph: one input mel_image [N,H,W,3] float32, one output probabilities [N, n_classes], opset from params.
    proto = onnx.load(str(paths.onnx_model))
    onnx.checker.check_model(proto)
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["N", 32, 32, 3]
    assert [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim] == ["N", len(GENRES)]
    assert {o.domain: o.version for o in proto.opset_import}[""] == params.export.opset

    # Independent check of the written file on the real test PNGs, any batch size.
    inputs, _ = load_test_inputs(paths)
    session = export.onnx_session(paths.onnx_model)
    expected = np.asarray(model(inputs, training=False))
    for batch in (inputs[:1], inputs[:5], inputs):
        got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        np.testing.assert_allclose(got, expected[: len(batch)], atol=params.export.parity_tolerance, rtol=0)
        assert (got.argmax(axis=1) == expected[: len(batch)].argmax(axis=1)).all()

    # Contract round trip.
    contract = read_contract(paths.onnx_model)
    assert contract == result.contract
    assert contract.labels == GENRES
    assert contract.preprocessing == preprocessing_spec(params)
    assert contract.model_name == params.registry.model_name == "genretag-cnn"
    assert contract.model_version == export.weights_version(model) and contract.model_version.startswith("weights-")
    assert contract.training_data_hash == "dvc-md5:fedcba9876543210fedcba9876543210.dir"
    assert contract.git_commit == "unknown"  # the tmp project is not a git repository
    assert contract.test_metrics == {"test_accuracy": 0.75, "macro_f1": 0.7, "n_test_clips": 12.0}
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["genretag.labels"]) == list(GENRES)

    card = (paths.models_dir / "MODEL_CARD.md").read_text()
    for needle in ("SYNTHETIC DEMO CORPUS", "say nothing about accuracy on real music", "Intended use",
                   "GTZAN's known faults", "Leaky clip split", "`mel_image`", "`probabilities`",
                   "genretag registry fetch champion", "import onnxruntime as ort", contract.model_version,
                   f"{parity.max_abs_diff_test:.3g}", "| test_accuracy | 0.7500 |", "| n_test_clips | 12 |"):
        assert needle in card, needle


def test_functional_model_from_genretag_models_exports_and_the_version_is_the_weights(project, tmp_path) -> None:
    from genretag.models import build_model

    params, paths = project
    model = build_model("exp1", input_shape=(32, 32, 3), n_classes=len(GENRES))
    first = export.export_model(params, paths, keras_model=model, onnx_path=tmp_path / "a" / "model.onnx")
    second = export.export_model(params, paths, keras_model=model, onnx_path=tmp_path / "b" / "model.onnx")
    assert first.parity.passed and first.parity.max_abs_diff <= params.export.parity_tolerance
    assert first.contract.model_version == second.contract.model_version
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    assert (tmp_path / "a" / "MODEL_CARD.md").is_file()


def test_parity_is_checked_on_random_input_too(project) -> None:
    params, paths = project
    model = centroid_model(paths)
    spec = preprocessing_spec(params)
    test = export.load_test_images(paths, image_size=spec.image_size)
    proto = export.convert_to_onnx(model, image_size=spec.image_size, opset=params.export.opset)
    report = export.check_parity(model, proto.SerializeToString(), test=test, labels=GENRES, tolerance=1e-4)
    assert report.random_inputs == export.N_RANDOM + 2 and report.max_abs_diff_random <= 1e-4
    assert report.onnx_test_accuracy == 1.0  # the tone images are separable: the hand-made model is perfect

    # A model that agrees on the test images but not elsewhere is caught by the random inputs.
    tampered = export.convert_to_onnx(model, image_size=spec.image_size, opset=params.export.opset)
    _shift_bias_when_input_is_bright(tampered, opset=params.export.opset)
    with pytest.raises(ExportError) as caught:
        export.check_parity(model, tampered.SerializeToString(), test=test, labels=GENRES, tolerance=1e-4)
    assert "on 18 random inputs" in str(caught.value) and "test clips" not in str(caught.value)


def _shift_bias_when_input_is_bright(proto: onnx.ModelProto, *, opset: int) -> None:
    """Add 50 * relu(mean(x) - 0.9) to the first logit: zero on viridis images (mean <= 0.68), not on all-ones input."""
    graph = proto.graph
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    logits = softmax.input[0]
    graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array([0.9], np.float32), "tamper_threshold"),
        onnx.numpy_helper.from_array(np.array([[50.0, 0.0, 0.0]], np.float32), "tamper_weight"),
    ])
    nodes = [
        onnx.helper.make_node("ReduceMean", [INPUT_NAME, "tamper_reduce"], ["tamper_mean"], keepdims=0)
        if opset >= 18
        else onnx.helper.make_node("ReduceMean", [INPUT_NAME], ["tamper_mean"], axes=[1, 2, 3], keepdims=0),
        onnx.helper.make_node("Sub", ["tamper_mean", "tamper_threshold"], ["tamper_excess"]),
        onnx.helper.make_node("Relu", ["tamper_excess"], ["tamper_relu"]),
        onnx.helper.make_node("Unsqueeze", ["tamper_relu", "tamper_axes"], ["tamper_column"]),
        onnx.helper.make_node("Mul", ["tamper_column", "tamper_weight"], ["tamper_shift"]),
        onnx.helper.make_node("Add", [logits, "tamper_shift"], ["tamper_logits"]),
    ]
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "tamper_axes"))
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 2, 3], np.int64), "tamper_reduce"))
    softmax.input[0] = "tamper_logits"
    index = list(graph.node).index(softmax)
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)


def _perturb_logits(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Tamper with the converted model: add 0.5 to the first logit, just before the softmax."""
    graph = proto.graph
    softmax = next(node for node in graph.node if node.op_type == "Softmax")
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([0.5, 0.0, 0.0], np.float32), "tamper_bias"))
    graph.node.insert(list(graph.node).index(softmax), onnx.helper.make_node("Add", [softmax.input[0], "tamper_bias"], ["tamper_logits"]))
    softmax.input[0] = "tamper_logits"
    return proto


def test_a_tampered_export_raises_and_writes_nothing(project, tmp_path, monkeypatch) -> None:
    params, paths = project
    out = tmp_path / "models"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous model")
    convert = export.convert_to_onnx
    monkeypatch.setattr(export, "convert_to_onnx", lambda *a, **k: _perturb_logits(convert(*a, **k)))

    with pytest.raises(ExportError, match=r"does not match Keras .*on 12 test clips.*Nothing written"):
        export.export_model(params, paths, keras_model=small_cnn(seed=2), onnx_path=out / "model.onnx")

    assert (out / "model.onnx").read_bytes() == b"previous model"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # no card, no temporary file


def test_a_zero_tolerance_is_not_a_valid_setting(project) -> None:
    params, _ = project
    with pytest.raises(ValueError):
        params.export.model_validate({"opset": 17, "parity_tolerance": 0})
    with pytest.raises(ExportError, match="opsets 13..18"):
        export.convert_to_onnx(small_cnn(), image_size=(32, 32), opset=19)


def test_a_model_without_softmax_is_refused(project, tmp_path) -> None:
    from tests.export_support import linear_model

    params, paths = project
    rng = np.random.default_rng(0)
    logits_model = linear_model(rng.normal(size=(32 * 32 * 3, len(GENRES))), np.zeros(len(GENRES)), activation=None)
    with pytest.raises(ExportError, match="softmax"):
        export.export_model(params, paths, keras_model=logits_model, onnx_path=tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


def test_a_model_with_the_wrong_number_of_classes_is_refused(project, tmp_path) -> None:
    params, paths = project
    with pytest.raises(ExportError, match=r"expected \(N, 3\)"):
        export.export_model(params, paths, keras_model=small_cnn(n_classes=4), onnx_path=tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())


def test_a_missing_or_wrong_size_test_image_names_the_file(tmp_path) -> None:
    params, paths = audio_project(tmp_path / "p", tracks={"test": 1}, clips_per_track=1)
    image = next((paths.images_dir / "test").rglob("*.png"))
    image.unlink()
    with pytest.raises(ExportError, match=f"{image.name}: cannot read test image"):
        export.load_test_images(paths, image_size=(32, 32))
    from PIL import Image

    Image.new("RGB", (16, 32)).save(image)
    with pytest.raises(ExportError, match=f"{image.name}: image is 32x16"):
        export.load_test_images(paths, image_size=(32, 32))


def test_training_data_hash_comes_from_dvc_lock_else_from_clips_csv(tmp_path) -> None:
    import hashlib

    _, paths = audio_project(tmp_path / "p", tracks={"test": 1}, clips_per_track=1)
    assert export.training_data_hash(paths) == "dvc-md5:fedcba9876543210fedcba9876543210.dir"
    assert export.dvc_lock_md5(paths.root, stage="ingest", out="data/raw") == "0123456789abcdef0123456789abcdef.dir"
    (paths.root / "dvc.lock").unlink()
    assert export.training_data_hash(paths) == "sha256:" + hashlib.sha256(paths.clips.read_bytes()).hexdigest()
    assert export.dvc_lock_md5(paths.root, stage="ingest", out="data/raw") is None


def test_a_mixed_precision_model_exports_and_runs_on_onnxruntime_cpu(project, tmp_path) -> None:
    """float16 compute survives conversion; Keras's and onnxruntime's fp16 kernels differ by ~1e-4, so
    mixed precision needs a looser export.parity_tolerance than the float32 default (1e-4)."""
    from genretag.models import build_model

    params, paths = project
    loose = params.model_copy(update={"export": params.export.model_copy(update={"parity_tolerance": 1e-3})})
    model = build_model("exp1", input_shape=(32, 32, 3), n_classes=len(GENRES), mixed_precision=True)
    result = export.export_model(loose, paths, keras_model=model, onnx_path=tmp_path / "model.onnx")
    print(f"\nmixed precision parity: {result.parity.max_abs_diff:.3g}")
    assert result.parity.max_abs_diff <= 1e-3 and result.parity.argmax_mismatches == 0
