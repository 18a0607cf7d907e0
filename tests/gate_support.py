"""Helpers of the gate tests: a project of per-genre tones on disk and real contract-v2 ONNX graphs
(waveform -> tone power features -> MatMul -> Softmax, plus the features as embedding) that are
right or wrong by construction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import yaml
from onnx import TensorProto, helper, numpy_helper
from tests.conftest import REPO_ROOT, tone, write_audio

from genretag.core.config import Layout, Params, layout, load_params
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, ModelContract, write_contract

GENRES = ("blues", "jazz", "rock")
# Rock tracks alternate between two tones, so that a model can know one rock tone and not the other.
TONES = {"blues": (220.0,), "jazz": (880.0,), "rock": (3000.0, 5000.0)}
FEATURE_TONES = (220.0, 880.0, 3000.0, 5000.0)  # the graph's features: power at each of these
CLIP_SECONDS = 3.0


def track_tone(genre: str, number: int) -> float:
    tones = TONES[genre]
    return tones[number % len(tones)]


def tone_project(root: Path, *, test_tracks: int = 6, train_tracks: int = 1, **register: object) -> tuple[Params, Layout]:
    """params.yaml, data/raw WAVs (22,050 Hz, one 3-s clip each), data/tracks.csv and data/clips.csv under ``root``.

    ``test_tracks`` per genre in the test split (rock alternates 3,000 Hz / 5,000 Hz tones).
    """
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["genres"] = list(GENRES)
    raw["register"].update({"model_name": "gate-test", "cv_below_tracks": 0, **register})  # the holdout gate unless a test asks
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    tracks, clips, seed = [], [], 0
    for genre in GENRES:
        for number in range(train_tracks + test_tracks):
            seed += 1
            track_id = f"{genre}.{number:05d}"
            relative = f"data/raw/{genre}/{track_id}.wav"
            write_audio(root / relative, tone(CLIP_SECONDS + 0.2, frequency=track_tone(genre, number), seed=seed))
            tracks.append({"track_id": track_id, "genre": genre, "path": relative})
            split = "train" if number < train_tracks else "test"
            clips.append({"clip_id": f"{track_id}.0", "track_id": track_id, "genre": genre, "split": split,
                          "clip_index": 0, "start_s": 0.0, "image": ""})
    pd.DataFrame(tracks).to_csv(root / "data" / "tracks.csv", index=False)
    pd.DataFrame(clips).to_csv(root / "data" / "clips.csv", index=False)
    return load_params(root / "params.yaml"), layout(root)


def tone_model(
    weights: np.ndarray,
    *,
    bias: Sequence[float] | None = None,
    sample_rate: int = 22050,
    family: str = "test-tones",
    name: str = "tones",
    labels: Sequence[str] = GENRES,
) -> onnx.ModelProto:
    """A contract-v2 graph: log(power / 1e-6) of the waveform at :data:`FEATURE_TONES` (DFT rows as
    MatMuls), the embedding; then ``embedding @ weights + bias`` -> Softmax, the probabilities.

    ``weights``: float [len(FEATURE_TONES), len(labels)]; row i votes for the labels of tone i.
    """
    clip_samples = int(round(CLIP_SECONDS * sample_rate))
    t = np.arange(clip_samples) / sample_rate
    phase = 2 * np.pi * np.outer(t, FEATURE_TONES)
    scale = 2.0 / clip_samples
    inits = [
        numpy_helper.from_array((np.cos(phase) * scale).astype(np.float32), "cos"),
        numpy_helper.from_array((np.sin(phase) * scale).astype(np.float32), "sin"),
        numpy_helper.from_array(np.float32(1e-6).reshape(()), "eps"),
        numpy_helper.from_array(np.asarray(weights, dtype=np.float32), "weights"),
        numpy_helper.from_array(np.asarray(bias if bias is not None else np.zeros(len(labels)), dtype=np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("MatMul", [INPUT_NAME, "cos"], ["re"]),
        helper.make_node("MatMul", [INPUT_NAME, "sin"], ["im"]),
        helper.make_node("Mul", ["re", "re"], ["re2"]),
        helper.make_node("Mul", ["im", "im"], ["im2"]),
        helper.make_node("Sum", ["re2", "im2", "eps"], ["power"]),
        helper.make_node("Div", ["power", "eps"], ["relative"]),  # >= 1, so the log features are >= 0
        helper.make_node("Log", ["relative"], [EMBEDDING_NAME]),
        helper.make_node("MatMul", [EMBEDDING_NAME, "weights"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", clip_samples])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(labels)]),
         helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", len(FEATURE_TONES)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    digest = abs(hash((np.asarray(weights).tobytes(), sample_rate))) % 10**12
    return write_contract(model, ModelContract(
        labels=tuple(labels), model_name=name, model_version=f"{name}-{digest}", sample_rate=sample_rate,
        clip_samples=clip_samples, family=family, preprocessing={"features": "tone power", "tones": list(FEATURE_TONES)},
    ))


def votes(mapping: dict[float, str]) -> np.ndarray:
    """Weights that send each feature tone to a genre (a tone missing from ``mapping`` votes for nothing)."""
    weights = np.zeros((len(FEATURE_TONES), len(GENRES)))
    for frequency, genre in mapping.items():
        weights[FEATURE_TONES.index(frequency), GENRES.index(genre)] = 1.0
    return weights


PERFECT = {220.0: "blues", 880.0: "jazz", 3000.0: "rock", 5000.0: "rock"}
PARTIAL = {220.0: "blues", 880.0: "jazz", 3000.0: "rock", 5000.0: "blues"}  # half the rock tracks become blues
MEDIOCRE = {220.0: "blues", 880.0: "jazz", 3000.0: "blues", 5000.0: "blues"}  # every rock track becomes blues


def save_candidate(paths: Layout, candidate: str, model: onnx.ModelProto) -> Path:
    target = paths.models_dir / "candidates" / candidate / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target
