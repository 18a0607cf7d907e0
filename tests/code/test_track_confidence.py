"""Issue 24: the calibrated track confidence (one aggregation, a track temperature fitted at track level) and the
cross-validated gate's statistics (corrected repeated k-fold t-test) on constructed per-track outcomes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from genretag.evaluation.calibration import (
    METHOD_NONE,
    METHOD_TEMPERATURE,
    TRACK_SOURCE_VALIDATION,
    calibrate_tracks,
    expected_calibration_error,
    negative_log_likelihood,
    temperature_scaled,
    track_means,
)
from genretag.evaluation.cv_gate import decide_cross_validated, fold_outcomes
from genretag.evaluation.gate import decide
from genretag.evaluation.paired_tests import Outcome, TestSet as TrackTruth, corrected_repeated_kfold_test
from genretag.families import track_folds
from genretag.handoff import genretag_reference
from genretag.onnx.contract import ModelContract, track_probabilities
from genretag.tagging.scoring import summarize

K = 10
LABELS = tuple(f"g{k}" for k in range(K))


def underconfident_tracks(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window probabilities [n, 8, K], labels [n], sure probabilities): right ~90 % of the time but averaging ~0.3."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    logits = rng.normal(0, 1, (n, 8, K))
    hit = rng.random(n) < 0.9
    winner = np.where(hit, labels, (labels + 1) % K)
    logits[np.arange(n), :, winner] += 2.5
    return softmax(logits / 3.0, axis=-1), labels, winner


def test_the_track_temperature_lowers_nll_and_ece_on_an_underconfident_set() -> None:
    windows, labels, _ = underconfident_tracks(300, seed=1)
    means = track_probabilities(windows)
    record = calibrate_tracks(fit_probabilities=means, fit_labels=labels, source=TRACK_SOURCE_VALIDATION, min_tracks=20)
    assert record.method == METHOD_TEMPERATURE and record.temperature < 1  # under-confident: sharpen
    assert record.nll_after < record.nll_before and record.ece_after < record.ece_before
    fresh, fresh_labels, _ = underconfident_tracks(300, seed=2)  # held-out tracks from the same model
    before = expected_calibration_error(probabilities=track_probabilities(fresh), labels=fresh_labels, bins=10)
    after = expected_calibration_error(probabilities=track_probabilities(fresh, temperature=record.temperature), labels=fresh_labels, bins=10)
    assert after < before / 2
    assert negative_log_likelihood(probabilities=track_probabilities(fresh, temperature=record.temperature), labels=fresh_labels) < \
        negative_log_likelihood(probabilities=track_probabilities(fresh), labels=fresh_labels)


@pytest.mark.parametrize("seed", range(8))
def test_the_track_temperature_never_raises_the_ece_it_was_fitted_on(seed: int) -> None:
    rng = np.random.default_rng(seed)
    means = softmax(rng.normal(0, rng.uniform(0.5, 4), (40, K)), axis=1)
    labels = rng.integers(0, K, 40)
    record = calibrate_tracks(fit_probabilities=means, fit_labels=labels, source=TRACK_SOURCE_VALIDATION, min_tracks=20)
    assert record.ece_after <= record.ece_before
    if record.method == METHOD_NONE:
        assert record.temperature == 1.0 and "T = 1" in record.reason


def test_too_few_tracks_keep_t_one_with_the_reason() -> None:
    windows, labels, _ = underconfident_tracks(10, seed=3)
    record = calibrate_tracks(fit_probabilities=track_probabilities(windows), fit_labels=labels, source=TRACK_SOURCE_VALIDATION, min_tracks=20)
    assert record.method == METHOD_NONE and record.temperature == 1.0
    assert "holds 10 track(s), fewer than export.track_temperature_min_tracks 20" in record.reason


def test_one_aggregation_keeps_the_top_genre_and_matches_the_grouped_fit() -> None:
    windows, labels, _ = underconfident_tracks(50, seed=4)
    for temperature in (0.3, 1.0, 2.0):
        assert (track_probabilities(windows, temperature=temperature).argmax(1) == windows.mean(1).argmax(1)).all()
    np.testing.assert_allclose(track_probabilities(windows), windows.mean(1), atol=1e-12)
    clips, tracks = windows.reshape(-1, K), np.repeat(np.arange(50), 8)
    means, truth = track_means(clips, clip_tracks=tracks, clip_labels=np.repeat(labels, 8))
    np.testing.assert_allclose(temperature_scaled(probabilities=means, temperature=0.4), track_probabilities(windows, temperature=0.4), atol=1e-12)
    assert (truth == labels).all()


def test_tagger_predict_and_handoff_report_the_same_track_confidence() -> None:
    windows, _, _ = underconfident_tracks(1, seed=5)
    contract = ModelContract(labels=LABELS, model_name="m", model_version="v", sample_rate=16000, clip_samples=48000,
                             track_calibration={"method": "temperature", "temperature": 0.45})
    restored = ModelContract.from_metadata(contract.to_metadata())
    assert restored.track_temperature == 0.45
    expected = restored.track_probabilities(windows[0])
    score = summarize(windows[0], LABELS, track_temperature=restored.track_temperature)  # tagger and `predict` (score_files)
    assert score.confidence == pytest.approx(expected.max(), abs=1e-12) and score.label == LABELS[int(expected.argmax())]
    assert score.confidence > windows[0].mean(0).max()  # sharpened: T < 1
    np.testing.assert_allclose(genretag_reference.track_probabilities(windows[0], temperature=0.45), expected, atol=1e-12)
    assert ModelContract.from_metadata(ModelContract(LABELS, "m", "v", 16000, 48000).to_metadata()).track_temperature == 1.0


# --------------------------------------------------------------------------- the cross-validated gate


def test_the_corrected_test_is_wider_than_the_naive_one() -> None:
    rng = np.random.default_rng(0)
    d = rng.normal(0.05, 0.1, 20)
    corrected = corrected_repeated_kfold_test(d, folds=5)
    from scipy.stats import ttest_1samp

    naive = ttest_1samp(d, 0.0, alternative="greater").pvalue
    assert corrected.p_greater > naive and corrected.dof == 19
    assert corrected.low < corrected.mean < corrected.high
    assert corrected_repeated_kfold_test(np.full(10, 0.1), folds=5).p_greater == 0.0
    with pytest.raises(ValueError):
        corrected_repeated_kfold_test(np.zeros(1), folds=5)


def small_corpus(tracks_per_genre: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip labels and track ids of a corpus with 4 clips per track."""
    labels = np.repeat(np.arange(K), tracks_per_genre * 4)
    tracks = np.array([f"t{i // 4}" for i in range(len(labels))])
    return labels, tracks


def held_out(folds, labels, *, accuracy: float, seed: int) -> list[np.ndarray]:
    """Clip probabilities per held-out fold of a model right on about ``accuracy`` of the tracks."""
    rng = np.random.default_rng(seed)
    out = []
    for _, held in folds:
        guess = np.where(rng.random(len(held)) < accuracy, labels[held], rng.integers(0, K, len(held)))
        out.append(np.eye(K)[guess] * 0.8 + 0.02)
    return out


def test_the_cv_gate_uses_every_track_and_decides_by_the_corrected_test() -> None:
    labels, tracks = small_corpus(6, seed=0)  # 60 tracks, as ../shared/gtzan-sample
    folds = track_folds(tracks, labels, folds=5, repeats=4, seed=1)
    assert len(folds) == 20
    for r in range(4):  # every track held out exactly once per repetition
        held = np.concatenate([h for _, h in folds[5 * r : 5 * r + 5]])
        assert sorted(held) == list(range(len(labels)))
    cv = fold_outcomes(folds=folds, repeats=4, clip_labels=labels, clip_tracks=tracks, n_classes=K,
                       held_out={"strong": held_out(folds, labels, accuracy=0.9, seed=2),
                                 "baseline": held_out(folds, labels, accuracy=0.5, seed=3),
                                 "chance": held_out(folds, labels, accuracy=0.0, seed=4)})
    assert cv.n_tracks == 60 and len(cv.track) == 240
    decision = decide_cross_validated(cv=cv, candidates=["strong", "baseline", "chance"], champion=None, baseline="baseline",
                                      alpha=0.05, min_improvement=0.005)
    assert decision.action == "promote" and decision.champion == "strong"
    assert not decision.evidence["chance"].servable and "not significantly above chance" in decision.evidence["chance"].floor
    assert "cross-validated" in decision.reason and "60 tracks x 4 repetitions of 5-fold" in decision.reason
    kept = decide_cross_validated(cv=cv, candidates=["strong", "baseline"], champion="strong", baseline="baseline",
                                  alpha=0.05, min_improvement=0.005)
    assert kept.action == "keep" and kept.champion == "strong"


def test_the_cv_gate_agrees_with_the_holdout_gate_on_a_large_corpus() -> None:
    labels, tracks = small_corpus(40, seed=0)  # 400 tracks
    folds = track_folds(tracks, labels, folds=5, repeats=2, seed=1)
    models = {"a": 0.85, "b": 0.6, "baseline": 0.55}
    cv = fold_outcomes(folds=folds, repeats=2, clip_labels=labels, clip_tracks=tracks, n_classes=K,
                       held_out={name: held_out(folds, labels, accuracy=acc, seed=i) for i, (name, acc) in enumerate(models.items())})
    by_cv = decide_cross_validated(cv=cv, candidates=list(models), champion="b", baseline="baseline", alpha=0.05, min_improvement=0.005)
    rng = np.random.default_rng(9)  # holdout: one test split of 100 tracks
    truth = np.repeat(np.arange(K), 10)
    test = TrackTruth(truth, np.arange(100), truth, K)
    outcomes = {name: Outcome(clip=p, track=p) for name, p in
                ((n, np.where(rng.random(100) < acc, truth, (truth + 1) % K)) for n, acc in models.items())}
    by_holdout = decide(test=test, outcomes=outcomes, candidates=list(models), champion="b", baseline="baseline", alpha=0.05,
                        min_improvement=0.005)
    assert (by_cv.action, by_cv.champion) == (by_holdout.action, by_holdout.champion) == ("promote", "a")


def test_the_cv_gate_compares_a_model_it_cannot_refit_on_the_test_split() -> None:
    """A Keras-like model has test-split outcomes only: its floor and its comparison with a cross-validated champion
    are exact McNemar on the test tracks; Decision.protocols says which protocol scored each model."""
    labels, tracks = small_corpus(6, seed=0)
    folds = track_folds(tracks, labels, folds=5, repeats=2, seed=1)
    cv = fold_outcomes(folds=folds, repeats=2, clip_labels=labels, clip_tracks=tracks, n_classes=K,
                       held_out={"head": held_out(folds, labels, accuracy=0.6, seed=2),
                                 "baseline": held_out(folds, labels, accuracy=0.5, seed=3)})
    truth = np.repeat(np.arange(K), 4)  # 40 test tracks
    test = TrackTruth(truth, np.arange(40), truth, K)
    outcomes = {"head": Outcome(clip=np.where(np.arange(40) < 24, truth, (truth + 1) % K), track=np.where(np.arange(40) < 24, truth, (truth + 1) % K)),
                "baseline": Outcome(clip=np.where(np.arange(40) < 20, truth, (truth + 1) % K), track=np.where(np.arange(40) < 20, truth, (truth + 1) % K)),
                "keras": Outcome(clip=truth, track=truth)}  # right on every test track
    decision = decide_cross_validated(cv=cv, test=test, outcomes=outcomes, candidates=["head", "baseline", "keras"], champion="head",
                                      baseline="baseline", alpha=0.05, min_improvement=0.005)
    assert decision.protocols == {"head": "cross-validated", "baseline": "cross-validated", "keras": "holdout"}
    assert decision.evidence["keras"].n_tracks == 40 and decision.evidence["head"].n_tracks == 60
    assert decision.comparisons["keras"].method == "exact McNemar" and decision.comparisons["keras"].test.only_a == 16
    assert (decision.action, decision.champion) == ("promote", "keras")
    assert "holdout on 40 test tracks for keras" in decision.reason
    with pytest.raises(ValueError, match="no cross-validated or test-split outcome for missing"):
        decide_cross_validated(cv=cv, candidates=["missing"], champion=None, baseline=None, alpha=0.05, min_improvement=0.0)
