"""Calibration of clip probabilities: temperature scaling and the expected calibration error (ECE).

Temperature scaling (Guo, Pleiss, Sun and Weinberger 2017, "On Calibration of Modern Neural
Networks", ICML, section 4.2) divides a classifier's logits by one scalar ``T > 0`` fitted on held-out
data by minimising the negative log-likelihood: ``softmax(z / T)``. ``T > 1`` softens an
over-confident model, ``T < 1`` sharpens an under-confident one; the top-1 class never changes.
The NLL and the ECE weigh clips differently, so a fitted T is kept only when it lowers the validation
ECE (:func:`calibrate`); otherwise T = 1, with the reason.
Every genretag family ends in a softmax, so the logits are recovered up to a per-clip constant as
``log p`` (which softmax ignores): ``softmax(log p / T) == softmax(z / T)``. Probabilities are
floored at :data:`PROBABILITY_FLOOR` before the log, here and in the exported graph alike.

The expected calibration error (Guo et al. 2017, equation 3; Naeini et al. 2015) sorts clips into
equal-width bins of top-1 confidence and averages ``|accuracy - confidence|`` over the bins,
weighted by their share of the clips.

Pure numpy + scipy: no ONNX here (:mod:`genretag.export` appends the scaling to the graph).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from genretag.core.errors import GenretagError
from genretag.evaluation.tracks import TrackGroups
from genretag.onnx.contract import PROBABILITY_FLOOR

TEMPERATURE_BOUNDS = (0.05, 20.0)  # search range of T; a fit at a bound says the validation set is degenerate
ECE_BINS = 15  # Guo et al. 2017 use 15 equal-width bins
METHOD_TEMPERATURE = "temperature"  # T fitted on the validation split
METHOD_NONE = "none"  # T = 1: too few clips, none wrong, or a fit that would not lower the ECE (the reason says which)


class CalibrationError(GenretagError):
    """Probabilities or labels that cannot be calibrated (shape, range, empty set)."""


def _checked(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != (probabilities.shape[0],):
        raise CalibrationError(f"probabilities of shape {probabilities.shape} and labels of shape {labels.shape}: expected [n, K] and [n]")
    if not len(labels):
        raise CalibrationError("no clips: calibration needs at least one labelled clip")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise CalibrationError(f"labels must be integer class indices in [0, {probabilities.shape[1]})")
    if not np.isfinite(probabilities).all() or probabilities.min() < 0:
        raise CalibrationError("probabilities must be finite and >= 0")
    return probabilities, labels


def temperature_scaled(*, probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(max(p, PROBABILITY_FLOOR)) / temperature)`` per row: float64 [n, K] from [n, K].

    ``temperature_scaled(p, 1 / T)`` undoes ``temperature_scaled(p, T)`` (for entries above the floor).
    Raises CalibrationError for a temperature that is not finite and > 0.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise CalibrationError(f"temperature {temperature!r}: must be finite and > 0")
    logs = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR))
    return np.exp(log_softmax(logs / temperature, axis=1))


def fit_temperature(*, probabilities: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature ``T`` in ``bounds`` that minimises the mean negative log-likelihood of integer
    ``labels`` [n] under ``softmax(log p / T)`` (Guo et al. 2017, section 4.2).

    ``probabilities``: float [n, K] rows of a softmax (any float dtype; computed in float64). A bounded
    scalar search on ``log T`` (``scipy.optimize.minimize_scalar``, method "bounded"), so that
    halving and doubling ``T`` are equal steps. Raises CalibrationError for mismatched shapes, no
    clips, labels outside [0, K) or probabilities that are negative or not finite.
    """
    probabilities, labels = _checked(probabilities, labels)
    logs = np.log(np.maximum(probabilities, PROBABILITY_FLOOR))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(logs / np.exp(log_t), axis=1)[rows, labels]))

    found = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))


def expected_calibration_error(*, probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE in [0, 1]: ``sum_m |B_m| / n * |accuracy(B_m) - confidence(B_m)|`` over ``bins`` equal-width
    bins of top-1 confidence, bin m holding confidences in ``((m - 1) / bins, m / bins]`` (Guo et al.
    2017, equation 3). ``probabilities`` float [n, K], ``labels`` int [n].

    Raises CalibrationError for ``bins < 1`` and as :func:`fit_temperature` for bad inputs.
    """
    if bins < 1:
        raise CalibrationError(f"bins {bins}: must be >= 1")
    probabilities, labels = _checked(probabilities, labels)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=correct, minlength=bins) - np.bincount(index, weights=confidence, minlength=bins))
    return float(gap.sum() / count.sum())


@dataclass(frozen=True)
class Calibration:
    """How a model's probabilities were calibrated: the ``genretag.calibration`` metadata record.

    ``temperature`` divides ``log p`` (1.0 with method ``none``); ``fitted_on`` counts the validation
    clips; ``ece_before``/``ece_after`` on those clips and ``test_ece_before``/``test_ece_after`` on the
    test clips (None where there were none); ``reason`` says why the method was chosen.
    """

    method: str
    temperature: float
    fitted_on: int
    reason: str
    ece_before: float | None = None
    ece_after: float | None = None
    test_ece_before: float | None = None
    test_ece_after: float | None = None
    bins: int = ECE_BINS

    @property
    def applied(self) -> bool:
        """Whether T was fitted (method ``temperature``): only then does the exported graph carry the scaling."""
        return self.method == METHOD_TEMPERATURE

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready fields (the ``genretag.calibration`` ONNX metadata, ModelContract.calibration)."""
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The numeric facts for MLflow and the metrics file: temperature, clip count and the ECEs that exist."""
        facts = {"temperature": self.temperature, "calibration_clips": float(self.fitted_on), "ece_before": self.ece_before,
                 "ece_after": self.ece_after, "test_ece_before": self.test_ece_before, "test_ece_after": self.test_ece_after}
        return {key: float(value) for key, value in facts.items() if value is not None}


def _choose_temperature(
    probabilities: np.ndarray, labels: np.ndarray, *, needed: int, unit: str, where: str, setting: str, bins: int,
) -> tuple[float, str, str]:
    """(T, method, reason): T fitted by :func:`fit_temperature` on ``probabilities``/``labels`` and kept only when it
    lowers their ECE; T = 1 (method ``none``) with the reason when there are fewer than ``needed`` items
    (``unit`` s of ``where``, the param ``setting``), every item is right, or the fit would not lower the ECE."""
    n = len(labels)
    left = "probabilities left as the model gives them (T = 1)"
    if n < max(needed, 1):
        return 1.0, METHOD_NONE, f"the {where} holds {n} {unit}(s), fewer than {setting} {needed}: {left}"
    if bool(np.all(np.argmax(probabilities, axis=1) == np.asarray(labels))):
        return 1.0, METHOD_NONE, (f"every one of the {n} {where} {unit}s is right: the negative log-likelihood falls without bound "
                                  f"as T -> 0, so there is no temperature to fit; {left}")
    fitted = fit_temperature(probabilities=probabilities, labels=labels)
    before = expected_calibration_error(probabilities=probabilities, labels=labels, bins=bins)
    after = expected_calibration_error(probabilities=temperature_scaled(probabilities=probabilities, temperature=fitted),
                                       labels=labels, bins=bins)
    if after >= before:
        return 1.0, METHOD_NONE, (f"T = {fitted:.2f} fitted on the {n} {where} {unit}s would not lower their ECE "
                                  f"({before:.4f} -> {after:.4f}): {left}")
    reason = f"T fitted by minimising the negative log-likelihood on {n} {where} {unit}s"
    if np.isclose(fitted, TEMPERATURE_BOUNDS, rtol=1e-3).any():
        reason += f" (at the bound of {TEMPERATURE_BOUNDS}: the {where} {unit}s are degenerate, e.g. all right and sure)"
    return fitted, METHOD_TEMPERATURE, reason


def calibrate(
    *,
    validation_probabilities: np.ndarray,
    validation_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
    min_clips: int,
    bins: int = ECE_BINS,
) -> Calibration:
    """Decide and fit: with at least ``min_clips`` validation clips, T from :func:`fit_temperature` on them,
    kept only when it lowers their ECE (:func:`expected_calibration_error`). T = 1 (method ``none``), with the
    reason, when there are fewer clips, when every validation clip is right (no finite minimum), or when the
    fitted T does not lower the validation ECE: the NLL and the ECE weigh clips differently, and T is kept for
    calibration, which the ECE measures. ECE before and after on validation and test (a split without clips
    gets None). Shapes as :func:`fit_temperature`; raises as it does.
    """

    def ece(probabilities: np.ndarray, labels: np.ndarray, scale: float) -> float | None:
        if not len(labels):
            return None
        scaled = temperature_scaled(probabilities=probabilities, temperature=scale)
        return expected_calibration_error(probabilities=scaled, labels=labels, bins=bins)

    n = len(validation_labels)
    temperature, method, reason = _choose_temperature(validation_probabilities, validation_labels, needed=min_clips, unit="clip",
                                                      where="validation split" if n < max(min_clips, 1) else "validation",
                                                      setting="export.temperature_min_clips", bins=bins)
    return Calibration(
        method=method, temperature=temperature, fitted_on=n if method == METHOD_TEMPERATURE else 0, reason=reason,
        ece_before=ece(validation_probabilities, validation_labels, 1.0),
        ece_after=ece(validation_probabilities, validation_labels, temperature),
        test_ece_before=ece(test_probabilities, test_labels, 1.0),
        test_ece_after=ece(test_probabilities, test_labels, temperature), bins=bins,
    )


# --------------------------------------------------------------------------- track level

TRACK_ECE_BINS = 10  # issue 24 measured the catalog's track confidence over 10 equal-width bins
TRACK_SOURCE_VALIDATION = "validation"  # T fitted on the validation tracks (enough of them)
TRACK_SOURCE_OUT_OF_FOLD = "out-of-fold"  # T fitted on out-of-fold predictions over the training tracks


def track_means(clip_probabilities: np.ndarray, *, clip_tracks: np.ndarray, clip_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group clips by track: (float64 [T, K] mean clip probability per track, int64 [T] track label), tracks in
    first-seen order. The mean is the track aggregation's (:func:`genretag.onnx.contract.track_probabilities`
    at T = 1). ``clip_tracks``: [n] track id per clip; ``clip_labels``: int [n]. Raises CalibrationError for
    mismatched lengths or a track whose clips carry two labels."""
    probabilities, labels = _checked(clip_probabilities, np.asarray(clip_labels))
    tracks = np.asarray(clip_tracks)
    if tracks.shape != labels.shape:
        raise CalibrationError(f"{len(tracks)} track ids for {len(labels)} clips")
    groups = TrackGroups.of(tracks)
    track_labels = labels[groups.first]
    if np.any(labels != track_labels[groups.codes]):
        raise CalibrationError("a track's clips carry more than one label")
    return groups.means(probabilities), track_labels.astype(np.int64)


@dataclass(frozen=True)
class TrackCalibration:
    """How a model's *track* confidence is calibrated: the ``genretag.track_calibration`` metadata record.

    The track confidence is the top value of :func:`genretag.onnx.contract.track_probabilities`
    (``softmax(log(mean window p) / temperature)``); ``temperature`` is 1.0 with method ``none``.
    ``source``: the tracks it was fitted on (:data:`TRACK_SOURCE_VALIDATION` or :data:`TRACK_SOURCE_OUT_OF_FOLD`;
    "" when none); ``fitted_on`` counts them; ``ece_before``/``ece_after`` and ``nll_before``/``nll_after`` on
    those tracks, ``test_ece_before``/``test_ece_after`` on the test tracks (None where there were none), at
    ``bins`` equal-width bins; ``reason`` says why.
    """

    method: str
    temperature: float
    source: str
    fitted_on: int
    reason: str
    ece_before: float | None = None
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None
    test_ece_before: float | None = None
    test_ece_after: float | None = None
    bins: int = TRACK_ECE_BINS

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready fields (the ``genretag.track_calibration`` ONNX metadata)."""
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The numeric facts for MLflow: ``track_temperature``, ``track_calibration_tracks`` and the track ECEs that exist."""
        facts = {"track_temperature": self.temperature, "track_calibration_tracks": float(self.fitted_on),
                 "track_ece_before": self.ece_before, "track_ece_after": self.ece_after,
                 "test_track_ece_before": self.test_ece_before, "test_track_ece_after": self.test_ece_after}
        return {key: float(value) for key, value in facts.items() if value is not None}


def negative_log_likelihood(*, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log max(p[label], PROBABILITY_FLOOR)`` over rows of float [n, K] with int labels [n] (nats)."""
    probabilities, labels = _checked(probabilities, labels)
    return float(-np.mean(np.log(np.maximum(probabilities[np.arange(len(labels)), labels], PROBABILITY_FLOOR))))


def calibrate_tracks(
    *,
    fit_probabilities: np.ndarray,
    fit_labels: np.ndarray,
    source: str,
    min_tracks: int,
    test_probabilities: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    bins: int = TRACK_ECE_BINS,
) -> TrackCalibration:
    """The track temperature (Guo et al. 2017, section 4.2, on the averaged window probabilities): fitted by
    NLL on ``fit_probabilities`` float [T, K] (mean window probabilities of tracks the model did not train on,
    :func:`track_means`) with int labels [T], kept only when it lowers their ECE at ``bins`` bins; T = 1 with
    the reason when there are fewer than ``min_tracks`` (``export.track_temperature_min_tracks``), every
    track is right, or the fit would not lower the ECE. ``source`` names the tracks (validation, out-of-fold).
    ECE before/after also on the ``test`` tracks when given. Raises CalibrationError for bad inputs.
    """
    fit_probabilities = np.asarray(fit_probabilities, dtype=np.float64)
    fit_labels = np.asarray(fit_labels, dtype=np.int64)
    where = "out-of-fold training" if source == TRACK_SOURCE_OUT_OF_FOLD else source
    temperature, method, reason = _choose_temperature(fit_probabilities, fit_labels, needed=min_tracks, unit="track", where=where,
                                                      setting="export.track_temperature_min_tracks", bins=bins)

    def measured(probabilities: np.ndarray | None, labels: np.ndarray | None, scale: float, measure) -> float | None:
        if probabilities is None or labels is None or not len(labels):
            return None
        return measure(probabilities=temperature_scaled(probabilities=probabilities, temperature=scale), labels=np.asarray(labels))

    def ece(*, probabilities, labels):
        return expected_calibration_error(probabilities=probabilities, labels=labels, bins=bins)

    return TrackCalibration(
        method=method, temperature=temperature, source=source if len(fit_labels) else "",
        fitted_on=len(fit_labels) if method == METHOD_TEMPERATURE else 0, reason=reason,
        ece_before=measured(fit_probabilities, fit_labels, 1.0, ece), ece_after=measured(fit_probabilities, fit_labels, temperature, ece),
        nll_before=measured(fit_probabilities, fit_labels, 1.0, negative_log_likelihood),
        nll_after=measured(fit_probabilities, fit_labels, temperature, negative_log_likelihood),
        test_ece_before=measured(test_probabilities, test_labels, 1.0, ece),
        test_ece_after=measured(test_probabilities, test_labels, temperature, ece), bins=bins,
    )
