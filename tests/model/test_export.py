"""Contract-v2 export: waveform -> ONNX parity with numpy + Pillow -> Keras, the contract, the card, failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from tests.export_support import GENRES, audio_project, centroid_model, keras_family, small_cnn

from genretag.training import export, provenance
from genretag.training.parity import DEFAULT_TOLERANCE, SYNTHETIC_KINDS
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, ModelContract, read_contract
from genretag.onnx.session import cpu_session
from genretag.core.errors import ExportError, TrainingDataError
from genretag.families.compact import Compact
from genretag.families.keras_images import network_to_onnx
from genretag.dsp.spectrogram import clips_to_images, preprocessing_spec, to_model_input
from genretag.training.train import export_trained_candidate, load_candidate, parity_clips


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    return audio_project(tmp_path_factory.mktemp("export-project"))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def _contract(params, family) -> ModelContract:
    return ModelContract(labels=tuple(params.genres), model_name="genretag-cnn", model_version="test", sample_rate=family.sample_rate,
                         clip_samples=family.clip_samples, family=family.name, preprocessing=family.preprocessing())


def test_export_writes_a_parity_checked_v2_model_with_its_contract(project) -> None:
    params, paths = project
    model = small_cnn(seed=1)
    folder = paths.candidate_dir("compact")
    keras_family(model, params).save(folder)

    manifest = pd.read_csv(paths.raw_dir / "manifest.csv").assign(original_sample_rate=44100, duration_s=6.0)
    manifest.to_csv(paths.tracks, index=False)  # what validate writes: the drift reference's track statistics
    result = export_trained_candidate(params, paths, load_candidate(params, paths, "compact"))  # a family trained earlier
    onnx_path = folder / "model.onnx"

    assert result.onnx_path == onnx_path and onnx_path.is_file()
    assert (folder / "MODEL_CARD.md").is_file() and not _leftovers(folder)
    parity = result.parity
    print(f"\nparity: test {parity.max_abs_diff_test:.3g} on {parity.test_clips} clips, "
          f"synthetic {parity.max_abs_diff_synthetic:.3g} on {parity.synthetic_clips}")
    assert parity.test_clips == 12 and parity.synthetic_clips == len(SYNTHETIC_KINDS)
    assert parity.max_abs_diff <= params.export.parity_tolerance == 1e-3 and parity.top1_mismatches == 0

    # Graph: input waveform [N, 66150] float32, outputs probabilities [N, K] and embedding [N, D], opset from params.
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)
    (graph_input,) = proto.graph.input
    assert graph_input.name == INPUT_NAME and graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["N", 66150]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME, EMBEDDING_NAME]
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == ["N", len(GENRES)]
    assert {o.domain: o.version for o in proto.opset_import}[""] == params.export.opset

    # Independent check of the written file: waveform -> ONNX vs numpy + Pillow images -> Keras, any batch size.
    spec = preprocessing_spec(params)
    test = parity_clips(params, paths, Compact(spec=spec))
    images = to_model_input(clips_to_images(test.waveforms, spec))
    expected = np.asarray(model(images, training=False))
    session = cpu_session(onnx_path)
    for batch in (0, 1, 5, len(test)):
        got, embedding = session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: test.waveforms[:batch]})
        assert got.shape == (batch, len(GENRES)) and embedding.shape == (batch, 4)  # small_cnn: 4 pooled filters
        np.testing.assert_allclose(got, expected[:batch], atol=1e-3, rtol=0)
        assert (got.argmax(axis=1) == expected[:batch].argmax(axis=1)).all()

    # Contract round trip.
    contract = read_contract(onnx_path)
    assert contract == result.contract and contract.contract_version == 2 and contract.family == "compact"
    assert (contract.sample_rate, contract.clip_samples) == (22050, 66150)
    assert contract.labels == GENRES
    # The drift reference: the family's embedding over the train clips, their level, the tracks' statistics.
    reference = contract.drift_reference
    assert reference["clips"] == len(GENRES) * 2 and len(reference["embedding_mean"]) == len(reference["embedding_sd"]) == 4
    assert reference["source_sample_rate"]["median"] == 44100 and reference["genre_counts"] == dict.fromkeys(sorted(GENRES), 1)  # the 1 train track of each genre, not the 2 test ones
    assert contract.preprocessing == {"frontend": "paper mel image", **json.loads(spec.to_json())}
    assert contract.model_name == params.registry.model_name == "genretag-cnn"
    assert contract.model_version == "compact-"  # no training.json: no MLflow run id
    assert contract.training_data_hash.startswith("dvc-md5:0123456789abcdef0123456789abcdef.dir+clips-sha256:")
    assert contract.git_commit == "unknown"  # the tmp project is not a git repository
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["genretag.labels"]) == list(GENRES) and meta["genretag.sample_rate"] == "22050"

    card = (folder / "MODEL_CARD.md").read_text()
    for needle in ("SYNTHETIC DEMO CORPUS", "say nothing about accuracy on real music", "Intended use",
                   "GTZAN's known faults", "Leaky clip split", "`waveform`: float32 [N, 66150]", "22050 Hz",
                   "`probabilities`", "`embedding`", "contract_version", "import onnxruntime as ort", contract.model_version,
                   f"{parity.max_abs_diff_test:.3g}", "| family | `compact`: 4 x (conv 3x3", "3 tracks / 6 clips",
                   f"ONNX clip accuracy at export: {parity.onnx_test_accuracy:.4f} on 12 test clips",
                   "## Calibration", "Not calibrated (T = 1): the validation split holds 0 clip(s)",
                   "Probabilities are not calibrated"):
        assert needle in card, needle
    assert contract.calibration["method"] == "none" and result.calibration.temperature == 1.0  # this project has no validation split


def test_a_paper_network_exports_to_byte_identical_files(project, tmp_path) -> None:
    from genretag.families.paper_models import build_model

    params, paths = project
    family = keras_family(build_model("exp1", input_shape=(32, 32, 3), n_classes=len(GENRES)), params)
    test = parity_clips(params, paths, family)
    first, second = (export.export_candidate(family, contract=_contract(params, family), onnx_path=tmp_path / name / "model.onnx",
                                             test=test, card=lambda *_: "card") for name in ("a", "b"))
    assert first.parity.passed and first.parity.max_abs_diff <= params.export.parity_tolerance
    assert first.parity.max_abs_diff_embedding <= 1e-3  # the 128-unit dense layer
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    assert (tmp_path / "a" / "MODEL_CARD.md").read_text() == "card"


class ReversedColours(Compact):
    """The paper CNN with its graph broken on purpose: the colour table upside down."""

    def to_onnx(self) -> onnx.ModelProto:
        proto = super().to_onnx()
        table = next(init for init in proto.graph.initializer if init.name == "frontend/colour_table")
        table.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(table)[::-1].copy(), table.name))
        return proto


def test_the_gate_passes_the_paper_graph_and_refuses_a_broken_one_writing_nothing(project, tmp_path) -> None:
    params, paths = project
    good_family = keras_family(centroid_model(params, paths), params)
    test = parity_clips(params, paths, good_family)
    contract = _contract(params, good_family)
    good = export.export_candidate(good_family, contract=contract, onnx_path=tmp_path / "good.onnx", test=test)
    assert good.parity.passed and good.parity.top1_mismatches == 0 and good.parity.max_abs_diff <= DEFAULT_TOLERANCE
    assert good.parity.onnx_test_accuracy == 1.0  # the tone clips are separable: the hand-made model is perfect
    assert good.card_path is None and sorted(p.name for p in tmp_path.iterdir()) == ["good.onnx"]

    out = tmp_path / "models"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"previous model")
    with pytest.raises(ExportError, match=r"does not match the framework .*on 12 test clips.*Nothing written"):
        broken = ReversedColours(spec=good_family.spec)
        broken.model, broken.labels = good_family.model, good_family.labels
        export.export_candidate(broken, contract=contract, onnx_path=out / "model.onnx", test=test, card=lambda *_: "card")
    assert (out / "model.onnx").read_bytes() == b"previous model"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # no card, no temporary file


def test_a_graph_that_is_not_contract_v2_is_refused(project, tmp_path) -> None:
    params, paths = project

    class ImageInput(Compact):
        def to_onnx(self) -> onnx.ModelProto:
            return network_to_onnx(self.model, image_size=self.spec.image_size, opset=self.opset)

    family = ImageInput(spec=preprocessing_spec(params))
    family.model = small_cnn()
    with pytest.raises(ExportError, match="contract v2 needs waveform"):
        export.export_candidate(family, contract=_contract(params, family), onnx_path=tmp_path / "m.onnx",
                                test=parity_clips(params, paths, family))
    assert not list(tmp_path.iterdir())


def test_a_zero_tolerance_is_not_a_valid_setting(project) -> None:
    params, _ = project
    with pytest.raises(ValueError):
        params.export.model_validate({"opset": 17, "parity_tolerance": 0})
    with pytest.raises(ExportError, match="opsets 13..18"):
        network_to_onnx(small_cnn(), image_size=(32, 32), opset=19)


def test_a_model_without_softmax_is_refused(project, tmp_path) -> None:
    from tests.export_support import linear_model

    params, paths = project
    rng = np.random.default_rng(0)
    logits_model = linear_model(rng.normal(size=(32 * 32 * 3, len(GENRES))), np.zeros(len(GENRES)), activation=None)
    family = keras_family(logits_model, params)
    with pytest.raises(ExportError, match="softmax"):
        export.export_candidate(family, contract=_contract(params, family), onnx_path=tmp_path / "model.onnx",
                                test=parity_clips(params, paths, family))
    assert not list(tmp_path.iterdir())


def test_a_model_with_the_wrong_number_of_classes_is_refused(project, tmp_path) -> None:
    params, paths = project
    family = keras_family(small_cnn(n_classes=4), params)
    with pytest.raises(ExportError, match=r"expected \(N, 3\)"):
        export.export_candidate(family, contract=_contract(params, family), onnx_path=tmp_path / "model.onnx",
                                test=parity_clips(params, paths, family))
    assert not list(tmp_path.iterdir())


def test_a_missing_test_track_names_the_file(tmp_path) -> None:
    params, paths = audio_project(tmp_path / "p", tracks={"test": 1}, clips_per_track=1)
    wav = next((paths.raw_dir).rglob("*.wav"))
    wav.unlink()
    with pytest.raises(TrainingDataError, match=wav.name):
        parity_clips(params, paths, Compact(spec=preprocessing_spec(params)))


def test_training_data_hash_names_the_ingested_audio_and_the_clips(tmp_path) -> None:
    import hashlib

    _, paths = audio_project(tmp_path / "p", tracks={"test": 1}, clips_per_track=1)
    clips = "clips-sha256:" + hashlib.sha256(paths.clips.read_bytes()).hexdigest()[:16]
    assert provenance.training_data_hash(paths) == "dvc-md5:0123456789abcdef0123456789abcdef.dir+" + clips
    assert provenance.dvc_lock_md5(paths.root, stage="ingest", out="data/raw") == "0123456789abcdef0123456789abcdef.dir"
    (paths.root / "dvc.lock").unlink()
    assert provenance.training_data_hash(paths) == clips
    assert provenance.dvc_lock_md5(paths.root, stage="ingest", out="data/raw") is None


def test_a_mixed_precision_model_exports_and_runs_on_onnxruntime_cpu(project, tmp_path) -> None:
    """float16 compute survives conversion behind the waveform front end within the default tolerance (1e-3)."""
    from genretag.families.paper_models import build_model

    params, paths = project
    model = build_model("exp1", input_shape=(32, 32, 3), n_classes=len(GENRES), mixed_precision=True)
    family = keras_family(model, params)
    result = export.export_candidate(family, contract=_contract(params, family), onnx_path=tmp_path / "model.onnx",
                                     test=parity_clips(params, paths, family))
    print(f"\nmixed precision parity: {result.parity.max_abs_diff:.3g}")
    assert result.parity.max_abs_diff <= 1e-3 and result.parity.top1_mismatches == 0
