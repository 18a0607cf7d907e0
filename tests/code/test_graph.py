"""ONNX front ends (genretag.graph) against their numpy references, on onnxruntime's CPU provider."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from genretag.dsp import features
from genretag.onnx import graph
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, cuda_batch_limit
from genretag.core.errors import ExportError
from genretag.dsp.spectrogram import COLORMAPS, PreprocessingSpec, db_to_image, mel_db, resize_unit, to_model_input
from tests.clips_support import KINDS, real_looking_clips

SPEC = PreprocessingSpec(image_size=(128, 128))
@pytest.fixture(scope="module")
def clips_22k() -> np.ndarray:
    return real_looking_clips(sample_rate=SPEC.sample_rate, samples=SPEC.clip_samples)


def run(model: onnx.ModelProto, waveforms: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {INPUT_NAME: waveforms})


def toy_network(*, height: int, width: int, n_classes: int = 4) -> onnx.ModelProto:
    """mel_image [N,H,W,3] -> mean colour (embedding [N,3]) -> Dense + softmax (probabilities [N,K])."""
    weights = np.random.default_rng(0).standard_normal((3, n_classes)).astype(np.float32) * 5
    nodes = [
        helper.make_node("ReduceMean", ["mel_image"], ["embedding"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["embedding", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    net = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("mel_image", TensorProto.FLOAT, ["unk", height, width, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["unk", n_classes]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["unk", 3])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(net, opset_imports=[helper.make_opsetid("", graph.OPSET)])
    model.ir_version = graph.IR_VERSION
    return model


@pytest.mark.parametrize("image_size", [(128, 128), (64, 48), (96, 200)])
def test_paper_frontend_matches_numpy_images(clips_22k, image_size) -> None:
    spec = PreprocessingSpec(image_size=image_size)
    (images,) = run(graph.paper_image_frontend(spec), clips_22k)
    expected = to_model_input(db_to_image(mel_db(clips_22k, spec), spec))
    assert images.shape == expected.shape == (len(KINDS), *image_size, 3) and images.dtype == np.float32
    levels_apart = np.abs(images - expected) * 255
    assert levels_apart.max() <= 2.0 + 1e-4  # a float32 FFT rounding moves a level now and then
    assert np.mean(levels_apart > 0.5) < 1e-3, "almost every value must be exactly equal"


def test_resize_matrix_is_pillow_exact() -> None:
    rng = np.random.default_rng(7)
    unit = rng.random((3, 128, 130), dtype=np.float32)
    for size in [(128, 128), (64, 64), (64, 65), (96, 200), (100, 129), (200, 200), (32, 17)]:  # both pass orders
        ours = resize_unit(unit, image_size=size)
        for index, matrix in enumerate(unit):
            pillow = np.asarray(Image.fromarray(np.ascontiguousarray(matrix[::-1]), mode="F").resize(size[::-1], Image.Resampling.BILINEAR))
            np.testing.assert_array_equal(ours[index], pillow)


def test_images_are_todays_pillow_images(clips_22k) -> None:
    """The batched numpy path against the per-image Pillow computation it replaced: byte-identical."""
    for size in [(128, 128), (64, 64)]:
        spec = PreprocessingSpec(image_size=size)
        db = mel_db(clips_22k, spec)
        ours = db_to_image(db, spec)
        for index, matrix in enumerate((db + spec.top_db) / spec.top_db):
            resized = np.asarray(Image.fromarray(np.ascontiguousarray(matrix[::-1]), mode="F").resize(size[::-1], Image.Resampling.BILINEAR))
            expected = COLORMAPS["viridis"][np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)]
            np.testing.assert_array_equal(ours[index], expected)


def test_mfcc_stats_frontend_matches_numpy(clips_22k) -> None:
    (stats,) = run(graph.mfcc_stats_frontend(sample_rate=22050, clip_samples=SPEC.clip_samples), clips_22k)
    expected = features.mfcc_stats(clips_22k, sample_rate=22050)
    assert stats.shape == (len(KINDS), 3 * features.N_MFCC)
    np.testing.assert_allclose(stats, expected, atol=5e-3, rtol=1e-4)


def test_musicnn_frontend_matches_numpy() -> None:
    clips = real_looking_clips(sample_rate=features.MUSICNN_SAMPLE_RATE, samples=features.MUSICNN_CLIP_SAMPLES)
    (log_mel,) = run(graph.musicnn_log_mel_frontend(), clips)
    expected = features.musicnn_log_mel(clips)
    assert log_mel.shape == expected.shape == (len(KINDS), 187, 96)
    np.testing.assert_allclose(log_mel, expected, atol=1e-4, rtol=1e-5)


def test_log_mel_frontend_db_with_clip_max_matches_mel_db(clips_22k) -> None:
    model = graph.log_mel_frontend(
        sample_rate=22050, clip_samples=SPEC.clip_samples, n_fft=2048, hop_length=512, n_mels=128, ref_max=True, top_db=80.0
    )
    (log_mel,) = run(model, clips_22k)
    np.testing.assert_allclose(log_mel, mel_db(clips_22k, SPEC).transpose(0, 2, 1), atol=1e-2)  # dB; float32 FFT noise 80 dB down


def test_unknown_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="scale"):
        graph.log_mel_frontend(sample_rate=16000, clip_samples=16000, n_fft=512, hop_length=256, n_mels=40, scale="cubic")


@pytest.mark.parametrize("batch", [0, 1, 7, 300])
def test_composed_graph_takes_any_batch(batch) -> None:
    spec = PreprocessingSpec(image_size=(32, 32))
    composed = graph.compose(graph.paper_image_frontend(spec), toy_network(height=32, width=32))
    assert [v.name for v in composed.graph.input] == [INPUT_NAME]
    assert [v.name for v in composed.graph.output] == [OUTPUT_NAME, EMBEDDING_NAME]
    for value in (*composed.graph.input, *composed.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == graph.BATCH_DIM
    waveforms = (np.random.default_rng(batch).standard_normal((batch, spec.clip_samples)) * 0.1).astype(np.float32)
    probabilities, embedding = run(composed, waveforms, [OUTPUT_NAME, EMBEDDING_NAME])
    assert probabilities.shape == (batch, 4) and embedding.shape == (batch, 3)
    assert probabilities.dtype == embedding.dtype == np.float32
    if batch:
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        images = to_model_input(db_to_image(mel_db(waveforms[:3], spec), spec))
        np.testing.assert_allclose(embedding[:3], images.mean(axis=(1, 2)), atol=2e-3)


def test_compose_refuses_a_network_without_an_embedding() -> None:
    network = toy_network(height=32, width=32)
    del network.graph.output[1]
    with pytest.raises(ExportError, match="embedding"):
        graph.compose(graph.paper_image_frontend(PreprocessingSpec(image_size=(32, 32))), network)


def test_cuda_batch_limit_sees_through_the_front_end() -> None:
    composed = graph.compose(graph.paper_image_frontend(SPEC), toy_network(height=128, width=128))
    step1_elements = 130 * 66 * 32  # the largest tensor per clip: the DFT's step 1, 130 frames x 33 complex x 32
    assert cuda_batch_limit(composed) == (2**31 - 1) // step1_elements
