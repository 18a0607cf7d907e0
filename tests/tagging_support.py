"""Helpers of the scoring and catalog tests: tiny ONNX models with a real contract, test roots, odd files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from tests.conftest import REPO_ROOT, tone, write_audio

from genretag.config import load_params, preprocessing_spec
from genretag.contract import ModelContract, write_contract

MODEL_NAME = "genretag-cnn"


def make_onnx_model(path: Path, *, version: str, seed: int = 0, params_file: Path | None = None) -> Path:
    """A tiny Keras CNN (Conv -> GAP -> Dense softmax) exported to ONNX with genretag's contract."""
    import keras
    import onnx

    params = load_params(params_file or REPO_ROOT / "params.yaml")
    spec = preprocessing_spec(params)
    height, width = spec.image_size
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((height, width, 3)),
        keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(params.genres), activation="softmax"),
    ])
    from genretag.export import convert_to_onnx

    proto = convert_to_onnx(model, image_size=(height, width), opset=params.export.opset)
    contract = ModelContract(labels=tuple(params.genres), preprocessing=spec, model_name=MODEL_NAME, model_version=version)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(write_contract(proto, contract), str(path))
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
        "text.wav": "cannot decode",
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
