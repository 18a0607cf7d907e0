"""Helpers of the scoring and catalog tests: small contract-v2 ONNX models built with onnx.helper, test roots, odd files."""

from __future__ import annotations

from collections import Counter

import json
from pathlib import Path

import numpy as np
import yaml
from tests.conftest import REPO_ROOT, tone, write_audio

from genretag.core.config import load_params
from genretag.onnx.contract import ModelContract, write_contract
from genretag.tagging.summary import TaggingSummary

MODEL_NAME = "genretag-cnn"


def make_onnx_model(
    path: Path,
    *,
    version: str,
    seed: int = 0,
    sample_rate: int = 22050,
    labels: tuple[str, ...] | None = None,
    contract_version: int = 2,
) -> Path:
    """A small but real contract-v2 graph, built with onnx.helper, its contract in metadata.

    ``waveform`` [N, S] -> 1/10-s frames -> log energies of the signal and of its first difference
    (a crude brightness) -> MatMul + Tanh = ``embedding`` [N, 16] -> MatMul + Softmax =
    ``probabilities`` [N, K]. Deterministic random weights (``seed``). ``contract_version=1`` writes
    v1 metadata instead, for the tests of what consumers do with an old image-contract model.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    labels = labels or tuple(load_params(REPO_ROOT / "params.yaml").genres)
    frame = sample_rate // 10
    clip_samples = 3 * sample_rate
    frames = clip_samples // frame
    rng = np.random.default_rng(seed)
    weights = {
        "frame_shape": np.array([0, frames, frame], dtype=np.int64),  # 0: keep the batch dimension (N may be 0)
        "head": np.array([0], dtype=np.int64),
        "tail": np.array([1], dtype=np.int64),
        "last": np.array([clip_samples - 1], dtype=np.int64),
        "end": np.array([clip_samples], dtype=np.int64),
        "axis": np.array([1], dtype=np.int64),
        "mean": np.full((frame, 1), 1.0 / frame, dtype=np.float32),
        "energy_shape": np.array([0, frames], dtype=np.int64),
        "eps": np.array(1e-8, dtype=np.float32),
        "w1": rng.normal(0.0, 0.3, (2 * frames, 16)).astype(np.float32),
        "b1": rng.normal(0.0, 0.1, 16).astype(np.float32),
        "w2": rng.normal(0.0, 1.0, (16, len(labels))).astype(np.float32),
    }
    nodes = [
        helper.make_node("Reshape", ["waveform", "frame_shape"], ["framed"]),
        helper.make_node("Slice", ["waveform", "tail", "end", "axis"], ["later"]),
        helper.make_node("Slice", ["waveform", "head", "last", "axis"], ["earlier"]),
        helper.make_node("Sub", ["later", "earlier"], ["diff"]),
        helper.make_node("Pad", ["diff", "pad_to_frames"], ["diff_padded"]),
        helper.make_node("Reshape", ["diff_padded", "frame_shape"], ["diff_framed"]),
        helper.make_node("Mul", ["framed", "framed"], ["power"]),
        helper.make_node("Mul", ["diff_framed", "diff_framed"], ["diff_power"]),
        helper.make_node("MatMul", ["power", "mean"], ["energy3"]),  # [N, F, 1]; ReduceMean mis-shapes N = 0
        helper.make_node("Reshape", ["energy3", "energy_shape"], ["energy"]),
        helper.make_node("MatMul", ["diff_power", "mean"], ["diff_energy3"]),
        helper.make_node("Reshape", ["diff_energy3", "energy_shape"], ["diff_energy"]),
        helper.make_node("Concat", ["energy", "diff_energy"], ["energies"], axis=1),
        helper.make_node("Add", ["energies", "eps"], ["floored"]),
        helper.make_node("Log", ["floored"], ["log_energies"]),
        helper.make_node("MatMul", ["log_energies", "w1"], ["hidden"]),
        helper.make_node("Add", ["hidden", "b1"], ["hidden_b"]),
        helper.make_node("Tanh", ["hidden_b"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    weights["pad_to_frames"] = np.array([0, 0, 0, 1], dtype=np.int64)  # [N, S-1] -> [N, S]
    graph = helper.make_graph(
        nodes,
        "genretag-test-v2",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["N", clip_samples])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(labels)]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 16]),
        ],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="genretag-tests")
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    contract = ModelContract(
        labels=labels, model_name=MODEL_NAME, model_version=version, sample_rate=sample_rate, clip_samples=clip_samples,
        family="test-energies", preprocessing={"frame_samples": frame}, contract_version=contract_version,
    )
    write_contract(proto, contract)
    if contract_version == 1:  # v1 metadata: no contract version; rate and clip length in the preprocessing spec
        for entry in list(proto.metadata_props):
            if entry.key in ("genretag.contract_version", "genretag.sample_rate", "genretag.clip_samples"):
                proto.metadata_props.remove(entry)
        for entry in proto.metadata_props:
            if entry.key == "genretag.preprocessing":
                entry.value = json.dumps({"sample_rate": sample_rate, "clip_seconds": 3.0})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def make_root(root: Path, **score: object) -> Path:
    """A project root holding the repo's params.yaml with ``score`` overrides."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["score"].update(score)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return root


def make_bad_files(folder: Path) -> dict[str, str]:
    """Files no model can score -> a fragment of the reason each must get."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("this is not audio\n", encoding="utf-8")
    write_audio(folder / "whole.wav", tone(5.0, seed=9))
    truncated = (folder / "whole.wav").read_bytes()[:44 + 2000]  # header promises 5 s, 1000 samples remain
    (folder / "whole.wav").unlink()
    (folder / "truncated.wav").write_bytes(truncated)
    write_audio(folder / "silent.wav", np.zeros(22050 * 4, dtype=np.float32))
    write_audio(folder / "one_second.wav", tone(1.0, seed=3))
    nan = tone(4.0, seed=4)
    nan[1000:1010] = np.nan
    write_audio(folder / "nan.wav", nan, subtype="FLOAT")
    return {
        "empty.wav": "empty file",
        "text.wav": "not a decodable audio file",
        "truncated.wav": "too short",
        "silent.wav": "silent",
        "one_second.wav": "too short",
        "nan.wav": "non-finite",
    }


def make_good_files(folder: Path) -> dict[str, float]:
    """Scorable files (22.05 kHz mono WAV, 44.1 kHz stereo FLAC and OGG, a 70-s track) -> seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    write_audio(folder / "a" / "sine220.wav", tone(7.0, frequency=220.0, seed=1))
    write_audio(folder / "a" / "sine880.wav", tone(10.0, frequency=880.0, seed=2))
    stereo = np.stack([tone(6.5, sample_rate=44100, frequency=330.0, seed=5),
                       tone(6.5, sample_rate=44100, frequency=660.0, seed=6)], axis=1)
    write_audio(folder / "b" / "flac44k.flac", stereo, sample_rate=44100)
    write_audio(folder / "b" / "ogg44k.ogg", stereo * 0.9, sample_rate=44100)
    write_audio(folder / "long70.wav", tone(70.0, frequency=150.0, seed=7))
    return {"a/sine220": 7.0, "a/sine880": 10.0, "b/flac44k": 6.5, "b/ogg44k": 6.5, "long70": 70.0}


def sessions_here() -> list[str]:
    """On a Dask worker (``client.run``): the keys of the model sessions genretag.tagging.cluster opened in it."""
    from genretag.tagging import cluster

    return sorted(cluster._MODELS)


def example_summary() -> TaggingSummary:
    """A tagging run's summary with every section of its report filled (genres, confidences, drift, a failure)."""
    summary = TaggingSummary("/music", "sqlite:///catalog.db", "genretag-cnn", "3", "CPUExecutionProvider")
    summary.listed, summary.tagged, summary.failed, summary.windows_scored, summary.windows_silent = 6, 5, 1, 40, 3
    summary.genre_counts = Counter({"jazz": 3, "rock": 2})
    summary.confidences = [0.9, 0.8, 0.42, 0.7, 0.99]
    summary.drift = {"reference": "model", "tracks": 5, "genre_psi": 0.31, "embedding_shift": 0.12, "loudness_shift_db": -2.5}
    summary.failures = [{"path": "/music/bad <1>.mp3", "reason": "cannot decode"}]
    return summary
