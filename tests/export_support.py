"""Helpers of the export, registry and handoff tests: pipeline-like projects and hand-made Keras models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import yaml
from tests.conftest import REPO_ROOT, tone, write_audio

from genretag.core.config import Layout, Params, layout, load_params
from genretag.dsp.spectrogram import clips_to_images, preprocessing_spec, to_model_input
from genretag.onnx.contract import Prediction
from genretag.onnx.session import cpu_session, predict_waveforms

GENRES = ("blues", "jazz", "rock")
FREQUENCIES = {"blues": 220.0, "jazz": 880.0, "rock": 3000.0}  # one tone per genre: learnable, not music
IMAGE_SIZE = (32, 32)
DVC_LOCK = """\
schema: '2.0'
stages:
  ingest:
    cmd: python -m flows.ingest
    outs:
    - path: data/raw
      hash: md5
      md5: 0123456789abcdef0123456789abcdef.dir
      size: 1000
      nfiles: 10
"""


class GraphFamily:
    """A test family whose network is a fixed contract-v2 ONNX graph ``proto`` (set by the subclass): ``to_onnx``
    hands out a copy, and its own forward pass is onnxruntime on that graph."""

    name = "test-energies"
    sample_rate = 22050
    clip_samples = 3 * 22050
    proto: onnx.ModelProto

    def to_onnx(self) -> onnx.ModelProto:
        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)
        return copy

    def predict(self, waveforms: np.ndarray) -> Prediction:
        return predict_waveforms(cpu_session(self.proto.SerializeToString()), waveforms)


def genre_audio(genre: str, seconds: float, *, seed: int) -> np.ndarray:
    return tone(seconds, frequency=FREQUENCIES[genre], seed=seed)


def audio_project(
    root: Path,
    *,
    genres: Sequence[str] = GENRES,
    tracks: dict[str, int] | None = None,
    clips_per_track: int = 2,
    with_dvc_lock: bool = True,
    **overrides: dict,
) -> tuple[Params, Layout]:
    """params.yaml, WAVs of per-genre tones with data/raw/manifest.csv, data/clips.csv (and a dvc.lock) under ``root``."""
    tracks = tracks or {"train": 1, "test": 2}
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["genres"] = list(genres)
    raw["spectrogram"]["image_size"] = list(IMAGE_SIZE)
    # paper-exp8 needs 64x64 images (its check refuses smaller ones when params load): tiny projects list the others
    raw["train"]["candidates"] = [c for c in raw["train"]["candidates"] if c != "paper-exp8"]
    for section, values in overrides.items():
        raw[section].update(values)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    params = load_params(root / "params.yaml")

    rows, tracks_rows, seed = [], [], 0
    for genre in genres:
        number = 0
        for split, count in tracks.items():
            for _ in range(count):
                seed += 1
                track_id = f"{genre}.{number:05d}"
                number += 1
                samples = genre_audio(genre, 3.0 * clips_per_track, seed=seed)
                wav = f"data/raw/{genre}/{track_id}.wav"
                write_audio(root / wav, samples)
                tracks_rows.append({"track_id": track_id, "genre": genre, "path": wav})
                for clip_index in range(clips_per_track):
                    rows.append({
                        "clip_id": f"{track_id}.{clip_index}", "track_id": track_id, "genre": genre, "split": split,
                        "clip_index": clip_index, "start_s": 3.0 * clip_index,
                    })
    pd.DataFrame(rows).to_csv(root / "data" / "clips.csv", index=False)
    pd.DataFrame(tracks_rows).to_csv(root / "data" / "raw" / "manifest.csv", index=False)
    if with_dvc_lock:
        (root / "dvc.lock").write_text(DVC_LOCK)
    return params, layout(root)


def keras_family(model, params: Params):
    """A paper-image Keras family around a given Keras ``model`` (already trained or hand-made), labels = params.genres."""
    from genretag.families.compact import Compact

    family = Compact(spec=preprocessing_spec(params))
    family.model = model
    family.labels = tuple(params.genres)
    return family


def load_test_inputs(params: Params, paths: Layout) -> tuple[np.ndarray, np.ndarray]:
    """(float32 model input [n, H, W, 3], genre per clip) of the test split, through the numpy reference."""
    from genretag.families.compact import Compact
    from genretag.training.train import parity_clips

    test = parity_clips(params, paths, Compact(spec=preprocessing_spec(params)))
    return to_model_input(clips_to_images(test.waveforms, preprocessing_spec(params))), np.asarray(test.genres)


def small_cnn(n_classes: int = len(GENRES), *, seed: int = 0, image_size: Sequence[int] = IMAGE_SIZE):
    """A random tiny Sequential CNN ending in softmax (never called before export)."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((*image_size, 3)),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(n_classes, activation="softmax"),
    ])


def linear_model(kernel: np.ndarray, bias: np.ndarray, *, activation: str | None = "softmax"):
    """Flatten -> Dense with the given weights (functional API)."""
    import keras

    inputs = keras.Input((*IMAGE_SIZE, 3), name="mel_image")
    outputs = keras.layers.Dense(len(bias), activation=activation, name="probabilities")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


def constant_model(winner: int, n_classes: int = len(GENRES)):
    """Always predicts class ``winner`` (accuracy = its share of the test clips)."""
    bias = np.zeros(n_classes)
    bias[winner] = 2.0
    return linear_model(np.zeros((int(np.prod(IMAGE_SIZE)) * 3, n_classes)), bias)


def centroid_model(params: Params, paths: Layout, *, genres: Sequence[str] = GENRES, classes: Sequence[int] | None = None, scale: float = 0.05):
    """Nearest class mean of the project's test images as one Dense layer (perfect on tone images).

    ``classes``: only these classes get their centroid; the others can never win (a worse model).
    """
    inputs, labels = load_test_inputs(params, paths)
    flat = inputs.reshape(len(inputs), -1).astype(np.float64)
    centroids = np.stack([flat[labels == genre].mean(axis=0) for genre in genres])
    kernel = scale * centroids.T
    bias = -0.5 * scale * (centroids**2).sum(axis=1)
    for index in set(range(len(genres))) - set(classes if classes is not None else range(len(genres))):
        kernel[:, index] = 0.0
        bias[index] = -1e3
    return linear_model(kernel, bias)
