"""Issue 24: when the test split is small the register stage cross-validates the candidates over every labelled track,
refits the chosen one on all of them and serves that refit; with a large enough test split the holdout gate decides."""

from __future__ import annotations

import json

import pytest
import yaml
from tests.model.test_toy_family import TOY, toy_project

from genretag.core.config import layout, load_params
from genretag.onnx.contract import read_contract
from genretag.registry.client import open_client
from genretag.registry.register import FITTED_ON_ALL_TAG, TAG_FITTED_ON, register_candidates
from genretag.training.cross_validation import FITTED_ON_ALL
from genretag.training.train import export_trained_candidate, prepare_candidate, train_candidate

TRACKS = 15  # 3 genres x (2 train + 3 test) tracks, one clip each
TEST_TRACKS = 9


def _trained_toy_project(root, *, cv_below_tracks: int):
    params, paths = toy_project(root)
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    raw["register"].update({"cv_below_tracks": cv_below_tracks, "cv_folds": 5, "cv_repeats": 2})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    params, paths = load_params(root / "params.yaml"), layout(root)
    stage = prepare_candidate(params, paths, TOY)
    train_candidate(params, paths, stage, log=lambda message: None)
    export_trained_candidate(params, paths, stage)
    return params, paths


def test_a_small_test_split_is_cross_validated_over_every_track_and_the_refit_on_all_of_them_serves(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, paths = _trained_toy_project(tmp_path / "project", cv_below_tracks=50)
    outcome = register_candidates(params, paths)

    assert (outcome.protocol, outcome.test_tracks, outcome.cv_tracks, outcome.cv_clips) == ("cross-validated", TEST_TRACKS, TRACKS, TRACKS)
    assert (outcome.decision, outcome.rule, outcome.champion) == ("promote", "first-champion", f"{TOY} (all tracks)")
    row = next(r for r in outcome.candidates if r["model"] == TOY)
    assert (row["protocol"], row["tracks"], row["servable"]) == ("cross-validated", TRACKS, True)
    assert "cross-validated track accuracy" in row["floor"] and f"{TRACKS} tracks x 2 repetitions of 5-fold" in outcome.reason
    assert 0.0 <= row["track_accuracy"]["low"] <= row["track_accuracy"]["estimate"] <= row["track_accuracy"]["high"] <= 1.0
    refit = next(r for r in outcome.candidates if r["model"] == f"{TOY} (all tracks)")
    assert (refit["protocol"], refit["tracks"]) == ("cross-validated", TRACKS)  # it stands on its family's cross-validation

    served = json.loads((paths.served_dir(TOY) / "training.json").read_text(encoding="utf-8"))
    assert (served["n_train"], served["train_tracks"], served["n_validation"], served["fitted_on"]) == (TRACKS, TRACKS, 0, FITTED_ON_ALL)
    client = open_client(params, root=paths.root)
    version = client.get_model_version_by_alias(params.registry.model_name, "champion")
    assert str(version.version) == outcome.champion_version
    assert version.tags[TAG_FITTED_ON] == FITTED_ON_ALL_TAG and version.tags["genretag.candidate"] == TOY
    candidate_version = next(r["version"] for r in outcome.candidates if r["model"] == TOY)
    assert version.tags["genretag.refit_of"] == candidate_version != outcome.champion_version
    served_open_set = read_contract(paths.served_dir(TOY) / "model.onnx").open_set  # no validation split: fitted leave-one-out
    assert served_open_set.available and (served_open_set.fitted_on, served_open_set.validation_tracks) == ("leave-one-out", TRACKS)

    gate = (paths.models_dir / "GATE.md").read_text(encoding="utf-8")
    assert "Protocol: **cross-validated**" in gate and f"over all {TRACKS} labelled tracks" in gate
    assert f"the test split holds {TEST_TRACKS} tracks, fewer than register.cv_below_tracks 50" in gate
    assert f"| cross-validated ({TRACKS}) |" in gate

    again = register_candidates(params, paths)  # the champion is a refit of a cross-validated candidate: its cross-validation stands for it
    assert (again.decision, again.champion_version) == ("keep", outcome.champion_version)
    assert f"champion {TOY} kept" in again.reason

    # a changed candidate (a new file, so a new registry version) no longer stands for the refit of the old one:
    # the champion is scored on the test split and compared with the candidate there
    import onnx

    changed = paths.candidate_dir(TOY) / "model.onnx"
    proto = onnx.load(str(changed))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, "test.changed": "yes"})
    onnx.save(proto, str(changed))
    third = register_candidates(params, paths)
    champion_row = next(r for r in third.candidates if r["model"] == f"champion v{outcome.champion_version}")
    assert (champion_row["protocol"], champion_row["tracks"]) == ("holdout", TEST_TRACKS)
    assert next(r for r in third.candidates if r["model"] == TOY)["version"] != candidate_version


def test_a_large_enough_test_split_keeps_the_holdout_gate_with_the_same_decision(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, paths = _trained_toy_project(tmp_path / "project", cv_below_tracks=TEST_TRACKS)  # 9 test tracks: not fewer than 9
    outcome = register_candidates(params, paths)

    assert (outcome.protocol, outcome.cv_tracks, outcome.decision, outcome.rule, outcome.champion) == (
        "holdout", 0, "promote", "first-champion", TOY)
    assert not paths.served_dir(TOY).exists()
    row = next(r for r in outcome.candidates if r["model"] == TOY)
    assert (row["protocol"], row["tracks"]) == ("holdout", TEST_TRACKS)
    gate = (paths.models_dir / "GATE.md").read_text(encoding="utf-8")
    assert f"Protocol: **holdout** on the {TEST_TRACKS} test tracks (register.cv_below_tracks {TEST_TRACKS}" in gate


@pytest.mark.parametrize("cv_below_tracks", [0])
def test_cv_below_tracks_0_never_cross_validates(tmp_path, monkeypatch, cv_below_tracks):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params, paths = _trained_toy_project(tmp_path / "project", cv_below_tracks=cv_below_tracks)
    outcome = register_candidates(params, paths)
    assert (outcome.protocol, outcome.champion) == ("holdout", TOY)
    assert "register.cv_below_tracks 0: never cross-validated" in (paths.models_dir / "GATE.md").read_text(encoding="utf-8")
