"""Contract-v2 export: waveform -> ONNX parity with numpy + Pillow -> Keras, the contract, the card, failure modes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests.export_support import GENRES, audio_project, centroid_model, small_cnn

from genretag import export
from genretag.config import preprocessing_spec
from genretag.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, read_contract
from genretag.errors import ExportError
from genretag.spectrogram import clips_to_images, to_model_input


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    return audio_project(tmp_path_factory.mktemp("export-project"))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def test_export_writes_a_parity_checked_v2_model_with_its_contract(project) -> None:
    params, paths = project
    model = small_cnn(seed=1)
    paths.models_dir.mkdir(exist_ok=True)
    model.save(paths.keras_model)

    result = export.export_model(params, paths)  # loads models/model.keras, like the DVC stage

    assert result.onnx_path == paths.onnx_model and paths.onnx_model.is_file()
    assert (paths.models_dir / "MODEL_CARD.md").is_file() and not _leftovers(paths.models_dir)
    parity = result.parity
    print(f"\nparity: test {parity.max_abs_diff_test:.3g} on {parity.test_clips} clips, "
          f"synthetic {parity.max_abs_diff_synthetic:.3g} on {parity.synthetic_clips}")
    assert parity.test_clips == 12 and parity.synthetic_clips == len(export.SYNTHETIC_KINDS)
    assert parity.max_abs_diff <= params.export.parity_tolerance == 1e-3 and parity.top1_mismatches == 0

    # Graph: input waveform [N, 66150] float32, outputs probabilities [N, K] and embedding [N, D], opset from params.
    proto = onnx.load(str(paths.onnx_model))
    onnx.checker.check_model(proto)
    (graph_input,) = proto.graph.input
    assert graph_input.name == INPUT_NAME and graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["N", 66150]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME, EMBEDDING_NAME]
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == ["N", len(GENRES)]
    assert {o.domain: o.version for o in proto.opset_import}[""] == params.export.opset

    # Independent check of the written file: waveform -> ONNX vs numpy + Pillow images -> Keras, any batch size.
    spec = preprocessing_spec(params)
    test = export.load_test_clips(paths, sample_rate=spec.sample_rate, clip_samples=spec.clip_samples)
    images = to_model_input(clips_to_images(test.waveforms, spec))
    expected = np.asarray(model(images, training=False))
    session = export.onnx_session(paths.onnx_model)
    for batch in (0, 1, 5, len(test)):
        got, embedding = session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: test.waveforms[:batch]})
        assert got.shape == (batch, len(GENRES)) and embedding.shape == (batch, 4)  # small_cnn: 4 pooled filters
        np.testing.assert_allclose(got, expected[:batch], atol=1e-3, rtol=0)
        assert (got.argmax(axis=1) == expected[:batch].argmax(axis=1)).all()

    # Contract round trip.
    contract = read_contract(paths.onnx_model)
    assert contract == result.contract and contract.contract_version == 2 and contract.family == "paper"
    assert (contract.sample_rate, contract.clip_samples) == (22050, 66150)
    assert contract.labels == GENRES
    assert contract.preprocessing == json.loads(spec.to_json())
    assert contract.model_name == params.registry.model_name == "genretag-cnn"
    assert contract.model_version == export.weights_version(model) and contract.model_version.startswith("weights-")
    assert contract.training_data_hash == "dvc-md5:fedcba9876543210fedcba9876543210.dir"
    assert contract.git_commit == "unknown"  # the tmp project is not a git repository
    assert contract.test_metrics == {"test_accuracy": 0.75, "macro_f1": 0.7, "n_test_clips": 12.0}
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["genretag.labels"]) == list(GENRES) and meta["genretag.sample_rate"] == "22050"

    card = (paths.models_dir / "MODEL_CARD.md").read_text()
    for needle in ("SYNTHETIC DEMO CORPUS", "say nothing about accuracy on real music", "Intended use",
                   "GTZAN's known faults", "Leaky clip split", "`waveform`: float32 [N, 66150]", "22050 Hz",
                   "`probabilities`", "`embedding`", "contract_version", "import onnxruntime as ort", contract.model_version,
                   f"{parity.max_abs_diff_test:.3g}", "| test_accuracy | 0.7500 |", "| n_test_clips | 12 |"):
        assert needle in card, needle


def test_functional_model_from_genretag_models_exports_and_the_version_is_the_weights(project, tmp_path) -> None:
    from genretag.models import build_model

    params, paths = project
    model = build_model("exp1", input_shape=(32, 32, 3), n_classes=len(GENRES))
    first = export.export_model(params, paths, keras_model=model, onnx_path=tmp_path / "a" / "model.onnx")
    second = export.export_model(params, paths, keras_model=model, onnx_path=tmp_path / "b" / "model.onnx")
    assert first.parity.passed and first.parity.max_abs_diff <= params.export.parity_tolerance
    assert first.parity.max_abs_diff_embedding <= 1e-3  # the 128-unit dense layer
    assert first.contract.model_version == second.contract.model_version
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    assert (tmp_path / "a" / "MODEL_CARD.md").is_file()


@dataclass(frozen=True)
class ReversedColours(export.PaperCNN):
    """The paper CNN with its graph broken on purpose: the colour table upside down."""

    def to_onnx(self) -> onnx.ModelProto:
        proto = super().to_onnx()
        table = next(init for init in proto.graph.initializer if init.name == "frontend/colour_table")
        table.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(table)[::-1].copy(), table.name))
        return proto


def test_the_gate_passes_the_paper_graph_and_refuses_a_broken_one_writing_nothing(project, tmp_path) -> None:
    params, paths = project
    spec = preprocessing_spec(params)
    model = centroid_model(paths)
    test = export.load_test_clips(paths, sample_rate=spec.sample_rate, clip_samples=spec.clip_samples)
    contract = export.build_contract(params, paths, model_version="weights-test")
    good = export.export_candidate(export.PaperCNN(model=model, spec=spec), contract=contract, onnx_path=tmp_path / "good.onnx", test=test)
    assert good.parity.passed and good.parity.top1_mismatches == 0 and good.parity.max_abs_diff <= export.DEFAULT_TOLERANCE
    assert good.parity.onnx_test_accuracy == 1.0  # the tone clips are separable: the hand-made model is perfect
    assert good.card_path is None and sorted(p.name for p in tmp_path.iterdir()) == ["good.onnx"]

    out = tmp_path / "models"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous model")
    with pytest.raises(ExportError, match=r"does not match the framework .*on 12 test clips.*Nothing written"):
        export.export_candidate(
            ReversedColours(model=model, spec=spec), contract=contract, onnx_path=out / "model.onnx", test=test, card=lambda _: "card"
        )
    assert (out / "model.onnx").read_bytes() == b"previous model"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # no card, no temporary file


def test_a_graph_that_is_not_contract_v2_is_refused(project, tmp_path) -> None:
    params, paths = project
    spec = preprocessing_spec(params)

    @dataclass(frozen=True)
    class ImageInput(export.PaperCNN):
        def to_onnx(self) -> onnx.ModelProto:
            return export.convert_to_onnx(self.model, image_size=self.spec.image_size, opset=self.opset)

    test = export.load_test_clips(paths, sample_rate=spec.sample_rate, clip_samples=spec.clip_samples)
    contract = export.build_contract(params, paths, model_version="weights-test")
    with pytest.raises(ExportError, match="contract v2 needs waveform"):
        export.export_candidate(ImageInput(model=small_cnn(), spec=spec), contract=contract, onnx_path=tmp_path / "m.onnx", test=test)
    assert not list(tmp_path.iterdir())


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


def test_a_missing_test_track_names_the_file(tmp_path) -> None:
    params, paths = audio_project(tmp_path / "p", tracks={"test": 1}, clips_per_track=1)
    wav = next((paths.raw_dir).rglob("*.wav"))
    wav.unlink()
    with pytest.raises(ExportError, match=wav.name):
        export.load_test_clips(paths, sample_rate=22050, clip_samples=66150)


def test_training_data_hash_comes_from_dvc_lock_else_from_clips_csv(tmp_path) -> None:
    import hashlib

    _, paths = audio_project(tmp_path / "p", tracks={"test": 1}, clips_per_track=1)
    assert export.training_data_hash(paths) == "dvc-md5:fedcba9876543210fedcba9876543210.dir"
    assert export.dvc_lock_md5(paths.root, stage="ingest", out="data/raw") == "0123456789abcdef0123456789abcdef.dir"
    (paths.root / "dvc.lock").unlink()
    assert export.training_data_hash(paths) == "sha256:" + hashlib.sha256(paths.clips.read_bytes()).hexdigest()
    assert export.dvc_lock_md5(paths.root, stage="ingest", out="data/raw") is None


def test_a_mixed_precision_model_exports_and_runs_on_onnxruntime_cpu(project, tmp_path) -> None:
    """float16 compute survives conversion behind the waveform front end within the default tolerance (1e-3)."""
    from genretag.models import build_model

    params, paths = project
    model = build_model("exp1", input_shape=(32, 32, 3), n_classes=len(GENRES), mixed_precision=True)
    result = export.export_model(params, paths, keras_model=model, onnx_path=tmp_path / "model.onnx")
    print(f"\nmixed precision parity: {result.parity.max_abs_diff:.3g}")
    assert result.parity.max_abs_diff <= 1e-3 and result.parity.top1_mismatches == 0
