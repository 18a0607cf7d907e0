"""Temperature scaling and the expected calibration error (genretag.calibration), on sets made here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from genretag.evaluation.calibration import (
    METHOD_NONE,
    METHOD_TEMPERATURE,
    CalibrationError,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    temperature_scaled,
)


def _sampled(n: int, *, k: int = 5, sharpen: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), the model's probabilities softmax(sharpen * z): over-confident for sharpen > 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, k))
    truth = softmax(logits, axis=1)
    labels = np.array([rng.choice(k, p=row) for row in truth])
    return softmax(sharpen * logits, axis=1).astype(np.float32), labels


def test_an_over_confident_set_gets_t_above_one_and_its_ece_drops() -> None:
    probabilities, labels = _sampled(4000, sharpen=3.0, seed=1)
    temperature = fit_temperature(probabilities=probabilities, labels=labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(probabilities=probabilities, labels=labels)
    after = expected_calibration_error(probabilities=temperature_scaled(probabilities=probabilities, temperature=temperature), labels=labels)
    print(f"\nT {temperature:.3f}, ECE {before:.4f} -> {after:.4f}")
    assert before > 0.1 and after < 0.03 and after < before / 4


def test_a_calibrated_set_keeps_t_near_one() -> None:
    probabilities, labels = _sampled(4000, sharpen=1.0, seed=2)
    assert fit_temperature(probabilities=probabilities, labels=labels) == pytest.approx(1.0, abs=0.08)
    assert expected_calibration_error(probabilities=probabilities, labels=labels) < 0.03


def test_scaling_keeps_top1_and_inverts_with_one_over_t() -> None:
    probabilities, _ = _sampled(200, sharpen=2.0, seed=3)
    scaled = temperature_scaled(probabilities=probabilities, temperature=2.5)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-12)
    assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert scaled.max(axis=1).mean() < probabilities.max(axis=1).mean()  # softer
    back = temperature_scaled(probabilities=scaled, temperature=1 / 2.5)
    np.testing.assert_allclose(back, probabilities, atol=1e-6)
    with pytest.raises(CalibrationError, match="must be finite and > 0"):
        temperature_scaled(probabilities=probabilities, temperature=0.0)


def test_ece_by_hand() -> None:
    # Two bins used out of 10: confidence 0.95 (2 clips, 1 right) and 0.55 (2 clips, both right).
    probabilities = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 1])
    expected = 0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.55)
    assert expected_calibration_error(probabilities=probabilities, labels=labels, bins=10) == pytest.approx(expected)
    # A confidence of exactly 1.0 falls in the last bin, 0.1 in the first (bins are (lo, hi]).
    assert expected_calibration_error(probabilities=np.array([[1.0, 0.0]]), labels=np.array([0])) == 0.0


@pytest.mark.parametrize(("probabilities", "labels", "match"), [
    (np.zeros((3, 2)), np.zeros(2, dtype=int), "expected \\[n, K\\] and \\[n\\]"),
    (np.zeros((0, 2)), np.zeros(0, dtype=int), "no clips"),
    (np.full((2, 2), 0.5), np.array([0, 2]), "labels must be integer class indices in \\[0, 2\\)"),
    (np.array([[np.nan, 1.0]]), np.array([0]), "finite and >= 0"),
])
def test_bad_input_gets_one_line(probabilities, labels, match) -> None:
    with pytest.raises(CalibrationError, match=match):
        fit_temperature(probabilities=probabilities, labels=labels)
    with pytest.raises(CalibrationError, match=match):
        expected_calibration_error(probabilities=probabilities, labels=labels)


def test_calibrate_fits_or_says_why_not() -> None:
    probabilities, labels = _sampled(600, sharpen=3.0, seed=4)
    fitted = calibrate(validation_probabilities=probabilities[:300], validation_labels=labels[:300],
                       test_probabilities=probabilities[300:], test_labels=labels[300:], min_clips=30)
    assert fitted.method == METHOD_TEMPERATURE and fitted.applied and fitted.fitted_on == 300 and fitted.temperature > 1.5
    assert fitted.ece_after < fitted.ece_before and fitted.test_ece_after < fitted.test_ece_before
    assert set(fitted.metrics()) == {"temperature", "calibration_clips", "ece_before", "ece_after", "test_ece_before", "test_ece_after"}

    empty = calibrate(validation_probabilities=np.zeros((0, 5)), validation_labels=np.zeros(0, dtype=int),
                      test_probabilities=probabilities, test_labels=labels, min_clips=30)
    assert (empty.method, empty.temperature, empty.fitted_on, empty.ece_before) == (METHOD_NONE, 1.0, 0, None)
    assert "holds 0 clip(s), fewer than export.temperature_min_clips 30" in empty.reason
    assert empty.test_ece_before == pytest.approx(empty.test_ece_after)

    few = calibrate(validation_probabilities=probabilities[:10], validation_labels=labels[:10],
                    test_probabilities=probabilities[10:], test_labels=labels[10:], min_clips=30)
    assert few.method == METHOD_NONE and "holds 10 clip(s)" in few.reason and few.ece_before == few.ece_after


def test_calibrate_keeps_t_one_when_every_validation_clip_is_right() -> None:
    """All right: the NLL keeps falling as T -> 0, so nothing is fitted (the model is not sharpened to one-hot)."""
    probabilities, labels = _sampled(200, sharpen=3.0, seed=5)
    right = probabilities.argmax(axis=1)  # the model's own top-1 as the labels: every clip right
    kept = calibrate(validation_probabilities=probabilities, validation_labels=right,
                     test_probabilities=probabilities, test_labels=labels, min_clips=30)
    assert (kept.method, kept.temperature, kept.fitted_on) == (METHOD_NONE, 1.0, 0)
    assert "every one of the 200 validation clips is right" in kept.reason
    assert fit_temperature(probabilities=probabilities, labels=right) < 0.2  # what fitting would have done


def test_calibrate_keeps_t_one_when_the_fitted_t_would_raise_the_validation_ece() -> None:
    """A calibrated bulk (confidence 0.7, 70 % right) and a sure minority under-confident (0.95, all right):
    the NLL wants the whole set sharpened (T < 1), which helps the minority less than it hurts the bulk."""
    bulk = np.tile([0.7, 0.3], (700, 1))
    sure = np.tile([0.95, 0.05], (300, 1))
    probabilities = np.concatenate([bulk, sure])
    labels = np.concatenate([np.zeros(490, dtype=int), np.ones(210, dtype=int), np.zeros(300, dtype=int)])
    fitted = fit_temperature(probabilities=probabilities, labels=labels)
    before = expected_calibration_error(probabilities=probabilities, labels=labels)
    after = expected_calibration_error(probabilities=temperature_scaled(probabilities=probabilities, temperature=fitted), labels=labels)
    assert fitted < 0.9 and before == pytest.approx(0.015) and after > 2 * before  # the premise: the NLL fit makes ECE worse

    kept = calibrate(validation_probabilities=probabilities, validation_labels=labels,
                     test_probabilities=probabilities[::7], test_labels=labels[::7], min_clips=30)
    assert (kept.method, kept.temperature, kept.fitted_on, kept.applied) == (METHOD_NONE, 1.0, 0, False)
    assert kept.ece_before == kept.ece_after == pytest.approx(before)
    assert kept.test_ece_before == kept.test_ece_after
    assert f"T = {fitted:.2f} fitted on the 1000 validation clips would not lower their ECE ({before:.4f} -> {after:.4f})" in kept.reason
    assert kept.reason.endswith("probabilities left as the model gives them (T = 1)")
