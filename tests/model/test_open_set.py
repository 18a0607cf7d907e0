"""The out-of-taxonomy score (issue 21) on real onnxruntime: the export appends ``unknown_score`` (the squared
Mahalanobis distance of the embedding to the nearest train class mean) and fits its threshold on the validation
tracks only; the tagger records a track past it as genre ``unknown`` with its top 3 kept and needs_review set;
a model exported before it tags as before, with one notice."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests.export_support import GENRES, audio_project
from tests.tagging_support import make_onnx_model

from genretag.evaluation.open_set import fit_threshold, mahalanobis_scores, track_scores
from genretag.onnx.contract import KEY_OPEN_SET, UNKNOWN, UNKNOWN_SCORE_NAME, ModelContract, Prediction, read_contract
from genretag.onnx.session import cpu_session, open_model, predict_waveforms
from genretag.tagging.rows import is_unknown
from genretag.training import export
from genretag.training.open_set import fit_open_set
from genretag.training.parity import TestClips
from genretag.training.train import parity_clips


class Toy:
    """A test family: tests.tagging_support's onnx.helper graph (log energies -> embedding [N, 16] -> softmax)."""

    name = "test-energies"
    sample_rate = 22050
    clip_samples = 3 * 22050

    def __init__(self, folder: Path) -> None:
        self.proto = onnx.load(make_onnx_model(folder / "toy.onnx", version="toy", seed=3, labels=GENRES))

    def to_onnx(self) -> onnx.ModelProto:
        copy = onnx.ModelProto()
        copy.CopyFrom(self.proto)
        return copy

    def predict(self, waveforms: np.ndarray) -> Prediction:
        return predict_waveforms(cpu_session(self.proto.SerializeToString()), waveforms)


def _export(root: Path, family: Toy, *, train: TestClips, validation: TestClips, test: TestClips, name: str = "model.onnx") -> export.ExportResult:
    contract = ModelContract(labels=GENRES, model_name="genretag-cnn", model_version="open-0001", sample_rate=family.sample_rate,
                             clip_samples=family.clip_samples, family=family.name)
    return export.export_candidate(family, contract=contract, onnx_path=root / "out" / name, test=test, validation=validation,
                                   train=train, unknown_accept=0.75)


def _first(clips: TestClips, n: int) -> TestClips:
    """The first ``n`` clips of ``clips``."""
    return TestClips(waveforms=clips.waveforms[:n], genres=clips.genres[:n], clip_ids=clips.clip_ids[:n],
                     sample_rate=clips.sample_rate, track_ids=clips.track_ids[:n])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("open-set")
    params, paths = audio_project(root / "project", tracks={"train": 3, "validation": 4, "test": 2}, clips_per_track=2)
    family = Toy(root)
    splits = {split: parity_clips(params, paths, family, split) for split in ("train", "validation", "test")}
    return root, params, paths, family, splits, _export(root, family, **splits)


def test_the_graph_scores_windows_as_numpy_and_the_threshold_is_the_validation_quantile(project) -> None:
    root, params, paths, family, splits, result = project
    contract = read_contract(result.onnx_path)
    assert contract.open_set.available and contract.open_set.output == UNKNOWN_SCORE_NAME
    session = cpu_session(result.onnx_path)
    assert [o.name for o in session.get_outputs()] == ["probabilities", "embedding", UNKNOWN_SCORE_NAME]
    validation = parity_clips(params, paths, family, "validation")
    got = predict_waveforms(session, validation.waveforms)
    train = parity_clips(params, paths, family, "train")
    fit = fit_open_set(train_embeddings=predict_waveforms(session, train.waveforms).embedding,
                       train_labels=np.array([GENRES.index(g) for g in train.genres]), n_classes=len(GENRES),
                       validation_embeddings=got.embedding, validation_tracks=validation.track_ids, accept=0.75)
    np.testing.assert_allclose(got.unknown_score, mahalanobis_scores(got.embedding, fit.classes), rtol=1e-3)
    per_track = track_scores(got.unknown_score, validation.track_ids)
    assert len(per_track) == 12 and contract.open_set.validation_tracks == 12
    assert contract.open_set.threshold == pytest.approx(fit_threshold(list(per_track.values()), accept=0.75), rel=1e-5)
    assert contract.open_set.validation_accepted >= 0.75
    assert json.loads({p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}[KEY_OPEN_SET])["method"] == "mahalanobis"


def test_the_threshold_moves_with_the_validation_split_only(project) -> None:
    root, params, paths, family, splits, result = project
    other_test = _export(root, family, **{**splits, "test": splits["validation"]}, name="other-test.onnx")
    assert other_test.open_set.threshold == result.open_set.threshold
    fewer = _export(root, family, **{**splits, "validation": _first(splits["validation"], 12)}, name="other-validation.onnx")
    assert fewer.open_set.validation_tracks == 6 and fewer.open_set.threshold != result.open_set.threshold
