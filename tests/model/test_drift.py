"""Drift against the training data: the reference travels in the ONNX metadata, every tagging run
measures input level, source rate, embedding shift and genre PSI against it (catalog_runs), and a
shifted input (40 dB quieter) raises the warnings while matching input does not."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from tests.conftest import tone, write_audio
from tests.gate_support import FEATURE_TONES, PERFECT, tone_model, votes

from genretag.tagging.run import tag_catalog

from genretag.tagging.store import Catalog
from genretag.core.config import ScoreParams
from genretag.onnx.contract import KEY_DRIFT_REFERENCE, ModelContract, read_contract, write_contract
from genretag.evaluation.drift import build_reference, embedding_shift, run_drift, training_reference
from genretag.families import ClipSet
from genretag.onnx.session import open_model

TRAINING = {"blues": 220.0, "jazz": 880.0, "rock": 3000.0}


class _OnnxFamily:
    """A family as training has it after fit: its predict is the exported graph's own forward pass."""

    def __init__(self, path: Path) -> None:
        self.model = open_model(path, prefer_gpu=False)

    def predict(self, waveforms: np.ndarray):
        return self.model.predict(waveforms)


def _training_set(root: Path) -> tuple[ClipSet, Path]:
    """The train split's clips (3 s at 22,050 Hz, 4 tracks per genre, a clip each) and the tracks.csv of every
    split: the validation and test tracks (another genre, rate and duration) must stay out of the reference."""
    tracks = [{"track_id": f"{g}.{j}", "genre": g, "original_sample_rate": 22050, "duration_s": 30.0} for g in TRAINING for j in range(4)]
    clips = ClipSet(
        waveforms=np.stack([tone(3.0, frequency=f, seed=10 * i + j)[:66150] for i, f in enumerate(TRAINING.values()) for j in range(4)]),
        labels=np.repeat(np.arange(len(TRAINING)), 4), track_ids=tuple(t["track_id"] for t in tracks),
        clip_ids=tuple(f"{t['track_id']}.0" for t in tracks), sample_rate=22050)
    held_out = [{"track_id": f"metal.{j}", "genre": "metal", "original_sample_rate": 44100, "duration_s": 5.0} for j in range(20)]
    path = root / "tracks.csv"
    pd.DataFrame(tracks + held_out).to_csv(path, index=False)
    return clips, path


def _model_with_reference(root: Path) -> Path:
    """The PERFECT tone model exported with the drift reference of its training clips in its metadata."""
    plain = root / "plain.onnx"
    proto = tone_model(votes(PERFECT), name="drift")
    onnx.save(proto, str(plain))
    clips, tracks = _training_set(root)
    reference = training_reference(_OnnxFamily(plain), train=clips, tracks_csv=tracks, max_clips=1000, seed=0)
    contract = dataclasses.replace(read_contract(plain), drift_reference=reference)
    path = root / "model.onnx"
    onnx.save(write_contract(proto, contract), str(path))
    return path


def test_the_reference_is_written_into_the_metadata_and_read_back(tmp_path) -> None:
    path = _model_with_reference(tmp_path)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    stored = json.loads(metadata[KEY_DRIFT_REFERENCE])
    assert stored["clips"] == 12 and len(stored["embedding_mean"]) == len(FEATURE_TONES)
    # the training split's tracks only (tracks.csv also lists 20 held-out metal tracks at 44.1 kHz, 5 s long)
    assert stored["genre_counts"] == {"blues": 4, "jazz": 4, "rock": 4}
    assert stored["source_sample_rate"] == {"mean": 22050.0, "sd": 0.0, "median": 22050.0}
    assert stored["duration_s"] == {"mean": 30.0, "sd": 0.0, "median": 30.0}
    assert -15 < stored["loudness_dbfs"]["mean"] < -10  # a 0.3 sine: 20 log10(0.3 / sqrt 2) = -13.5 dBFS
    assert read_contract(path).drift_reference == stored
    # an older model (no key) reads as "no reference"
    assert ModelContract.from_metadata({k: v for k, v in metadata.items() if k != KEY_DRIFT_REFERENCE}).drift_reference == {}


def test_embedding_shift_is_the_mean_standardised_difference() -> None:
    reference = build_reference(embeddings=np.array([[0.0, 10.0], [2.0, 14.0]]), clip_loudness_dbfs=[-20, -20],
                                genre_counts={"a": 1}, source_sample_rates=[22050], durations_s=[30.0])
    assert reference["embedding_sd"] == [1.0, 2.0]
    assert embedding_shift(reference, np.array([3.0, 12.0])) == 1.0  # (|3 - 1| / 1 + |12 - 12| / 2) / 2


def test_a_clip_set_against_its_own_reference_scores_zero_and_constant_dimensions_do_not_count() -> None:
    """Embeddings as a model gives them (float32, means far from round numbers) with dimensions that never
    vary over the clips (dead units at 0, and a constant 0.1234567): measured against their own reference,
    through the JSON of the ONNX metadata and summed in batches as a tagging run sums them, the shift is 0."""
    rng = np.random.default_rng(7)
    spread = (1000.0 + 1e-3 * rng.standard_normal((40, 3))) * np.array([1.0, -1.0, 0.5])
    embeddings = np.concatenate([spread, np.zeros((40, 5)), np.full((40, 2), 0.1234567)], axis=1).astype(np.float32)
    reference = json.loads(json.dumps(build_reference(embeddings=embeddings, clip_loudness_dbfs=[-20.0] * 40,
                                                      genre_counts={"a": 40}, source_sample_rates=[22050], durations_s=[30.0])))
    batch_sums = sum(embeddings[start : start + 7].sum(axis=0, dtype=np.float64) for start in range(0, 40, 7))
    drift = run_drift(reference, audio=[], embedding_sum=batch_sums, embedding_windows=40, genre_counts={"a": 40})
    assert drift["embedding_shift"] == 0.0 and drift["reference"] == "model"

    # one training sd off in every dimension with spread: 1.0 (the constant dimensions are not averaged in)
    sd = embeddings.astype(np.float64).std(axis=0)
    moved = embeddings.astype(np.float64).mean(axis=0) + np.where(sd > 0, sd, 5.0)
    assert embedding_shift(reference, moved) == 1.0

    constant = build_reference(embeddings=np.ones((3, 2), np.float32), clip_loudness_dbfs=[-20.0] * 3, genre_counts={"a": 3},
                               source_sample_rates=[22050], durations_s=[30.0])
    with pytest.raises(ValueError, match="no embedding dimension varies over the 3 training clips"):
        embedding_shift(constant, np.ones(2))


def _run(root: Path, model: Path, *, amplitude: float, name: str, min_tracks: int = 1) -> tuple[dict, list[str], pd.Series, str]:
    folder = root / name
    for i, (genre, frequency) in enumerate(TRAINING.items()):
        for j in range(2):
            write_audio(folder / f"{genre}{j}.wav", tone(4.0, frequency=frequency, amplitude=amplitude, seed=50 + 10 * i + j))
    url = f"sqlite:///{root / (name + '.db')}"
    summary = tag_catalog(folder, model=open_model(model, prefer_gpu=False), database_url=url, drift_limits=ScoreParams(drift_min_tracks=min_tracks))
    with Catalog(url) as catalog:
        run = catalog.read("catalog_runs").iloc[-1]
        tags = catalog.read("catalog_tags")
    assert tags["source_sample_rate"].tolist() == [22050] * 6 and tags["duration_s"].tolist() == [4.0] * 6
    assert tags["loudness_dbfs"].notna().all()
    return summary.drift, summary.drift_warnings, run, summary.to_markdown()  # the markdown: the flow's Prefect artifact


def test_matching_input_raises_no_warning_and_a_quieter_one_does(tmp_path) -> None:
    model = _model_with_reference(tmp_path)
    drift, warnings, run, report = _run(tmp_path, model, amplitude=0.3, name="matching")
    assert warnings == [] and drift["reference"] == "model"
    assert drift["genre_psi"] < 0.01 and drift["embedding_shift"] < 0.5 and abs(drift["loudness_shift_db"]) < 1.0
    assert run["embedding_shift"] == drift["embedding_shift"] and json.loads(run["drift"]) == drift
    assert json.loads(run["drift_warnings"]) == [] and run["loudness_dbfs"] == drift["loudness_dbfs"]
    assert "No drift measure past its limit." in report

    drift, warnings, run, report = _run(tmp_path, model, amplitude=0.003, name="quiet")  # 40 dB quieter: the noise floor shows
    assert drift["loudness_shift_db"] < -20 and drift["embedding_shift"] > 0.5
    assert any("score.drift_loudness_warn_db" in line for line in warnings)
    assert any("score.drift_embedding_warn" in line for line in warnings)
    assert json.loads(run["drift_warnings"]) == warnings
    assert all(f"**Warning:** {line}" in report for line in warnings)

    drift, warnings, run, report = _run(tmp_path, model, amplitude=0.003, name="quiet-few", min_tracks=7)  # 6 tracks < 7
    assert drift["loudness_shift_db"] < -20 and drift["embedding_shift"] > 0.5  # measured and recorded all the same
    assert warnings == [] and json.loads(run["drift_warnings"]) == [] and json.loads(run["drift"]) == drift
    assert "6 track(s) tagged, fewer than score.drift_min_tracks 7: drift is recorded, not warned on" in report


def test_a_model_without_a_reference_reports_n_a(tmp_path) -> None:
    plain = tmp_path / "plain.onnx"
    onnx.save(tone_model(votes(PERFECT), name="old"), str(plain))
    drift, warnings, run, _ = _run(tmp_path, plain, amplitude=0.3, name="old")
    assert drift["reference"].startswith("n/a") and drift["embedding_shift"] is None and drift["loudness_shift_db"] is None
    assert drift["loudness_dbfs"] is not None and warnings == []
    assert pd.isna(run["embedding_shift"])
