"""`dvc repro` end to end on a tiny demo corpus; reruns only what a change affects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from tests.pipeline.conftest import repro, set_params, stages_run

pytestmark = pytest.mark.slow


def test_every_stage_writes_its_outputs(pipeline_project):
    root = pipeline_project
    manifest = pd.read_csv(root / "data/raw/manifest.csv")
    assert len(manifest) == 12 and set(manifest["genre"]) == {"blues", "classical", "metal", "reggae"}
    for path in manifest["path"]:
        info = sf.info(root / path)
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    clips = pd.read_csv(root / "data/clips.csv")
    assert len(clips) == 120 and set(clips["split"]) == {"train", "validation", "test"}
    assert (clips.groupby("track_id")["split"].nunique() == 1).all()
    image = Image.open(root / clips.iloc[0]["image"])
    assert image.size == (64, 64) and image.mode == "P"  # indexed viridis (genretag.images.png_bytes)
    assert (root / "reports/validation/index.html").is_file()
    for out in ("models/model.keras", "models/model.onnx", "models/MODEL_CARD.md", "models/registry.json",
                "metrics/train.json", "metrics/eval.json", "plots/history.csv", "plots/confusion_matrix.csv"):
        assert (root / out).is_file(), out
    registry = json.loads((root / "models/registry.json").read_text())
    assert registry["alias"] == "champion"
    assert "test_accuracy" in json.loads((root / "metrics/eval.json").read_text())


def test_nothing_reruns_when_nothing_changed(pipeline_project):
    result = repro(pipeline_project)
    assert stages_run(result.stdout) == set()


def test_a_param_change_reruns_only_the_stages_it_affects(pipeline_project):
    root = pipeline_project
    set_params(root, {"evaluate": {"tsne_clips": 30}})
    first = stages_run(repro(root).stdout)
    assert "evaluate" in first and not first & {"ingest", "validate", "split", "spectrograms", "train"}

    images = sorted((root / "data/images").rglob("*.png"))
    set_params(root, {"spectrogram": {"top_db": 70.0}})
    second = stages_run(repro(root).stdout)
    assert {"spectrograms", "train", "evaluate"} <= second
    assert not second & {"ingest", "validate", "split"}
    assert sorted((root / "data/images").rglob("*.png")) == images  # same clips, re-rendered in place


def test_catalog_scoring_of_the_audio_equals_the_evaluate_stage(pipeline_project):
    """The tagger (WAV -> ONNX) and the evaluate stage (PNG -> Keras) agree on every test track."""
    import keras

    from genretag.scoring import open_model, score_file
    from genretag.spectrogram import to_model_input

    root = pipeline_project
    clips = pd.read_csv(root / "data/clips.csv")
    test = clips[clips["split"] == "test"]
    keras_model = keras.models.load_model(root / "models/model.keras")
    onnx_model = open_model(root / "models/model.onnx")
    assert onnx_model.provider == "CPUExecutionProvider"
    manifest = pd.read_csv(root / "data/raw/manifest.csv").set_index("track_id")
    for track_id, track_clips in test.groupby("track_id"):
        images = np.stack([np.asarray(Image.open(root / image).convert("RGB")) for image in track_clips.sort_values("clip_index")["image"]])
        evaluate_mean = keras_model.predict(to_model_input(images), verbose=0).mean(axis=0)
        tagged = score_file(onnx_model, root / manifest.at[track_id, "path"], max_windows=10)
        assert tagged.windows_scored == len(images)
        np.testing.assert_allclose([tagged.probabilities[g] for g in onnx_model.labels], evaluate_mean, atol=1e-4)
        assert tagged.label == onnx_model.labels[int(np.argmax(evaluate_mean))]
