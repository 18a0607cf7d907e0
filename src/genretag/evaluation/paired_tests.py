"""Paired tests of models scored on the same test tracks: the statistics behind the champion gate.

Every candidate and the champion are scored on the same test tracks (their audio, through their
own ONNX graphs), so their outcomes are *paired*: they are compared track by track.

- Metrics: accuracy and macro-F1 at track level (a track's genre is the argmax of its clips' mean
  probability) and at clip level, each with a percentile confidence interval from a paired
  bootstrap that resamples test *tracks* (clips of a track stay together, so clip-level intervals
  are not made narrower by the clips' dependence). Efron & Tibshirani (1993), *An Introduction to
  the Bootstrap*, ch. 13 (percentile interval) and ch. 6 (resampling the independent units).
- Comparisons: the exact McNemar test on paired track outcomes, i.e. a binomial test of the
  discordant pairs against 1/2. McNemar (1947), "Note on the sampling error of the difference
  between correlated proportions or percentages", Psychometrika 12(2); recommended for comparing
  two classifiers on one test set by Dietterich (1998), "Approximate statistical tests for
  comparing supervised classification learning algorithms", Neural Computation 10(7).
- Chance: a one-sided exact binomial test of the correct tracks against the chance rate
  ``max(1/K, majority share of the test tracks)`` (a constant answer reaches the majority share).
- Small data: the corrected repeated k-fold t-test of per-fold differences of two models on the
  same folds. Nadeau & Bengio (2003), "Inference for the Generalization Error", Machine Learning
  52(3); Bouckaert & Frank (2004), "Evaluating the Replicability of Significance Tests for
  Comparing Learning Algorithms", PAKDD.

The decisions built on them: :mod:`genretag.evaluation.gate` (the holdout protocol's rules) and
:mod:`genretag.evaluation.cv_gate` (the cross-validated protocol).

Pure functions of numpy arrays; no file or network access.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

METRICS: tuple[str, ...] = ("track_accuracy", "track_macro_f1", "clip_accuracy", "clip_macro_f1")
DEFAULT_RESAMPLES = 2000


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TestSet:
    """The truth of a test split, shared by every model scored on it.

    ``clip_truth``: int64 [n_clips] label indices; ``clip_track``: int64 [n_clips], each clip's
    index into ``track_truth`` (int64 [n_tracks]); ``n_classes``: K, the number of labels.
    """

    clip_truth: np.ndarray
    clip_track: np.ndarray
    track_truth: np.ndarray
    n_classes: int

    @property
    def n_tracks(self) -> int:
        return len(self.track_truth)

    @property
    def n_clips(self) -> int:
        return len(self.clip_truth)


@dataclass(frozen=True)
class Outcome:
    """One model's predicted label indices on a :class:`TestSet`: ``clip`` int64 [n_clips], ``track`` int64 [n_tracks]."""

    clip: np.ndarray
    track: np.ndarray


def outcome_from_probabilities(clip_probabilities: np.ndarray, *, test: TestSet) -> Outcome:
    """Clip argmax and track argmax of the mean clip probability (float [n_clips, K] in label order)."""
    probabilities = np.asarray(clip_probabilities, dtype=np.float64)
    sums = np.zeros((test.n_tracks, probabilities.shape[1]))
    np.add.at(sums, test.clip_track, probabilities)
    return Outcome(clip=probabilities.argmax(axis=1), track=sums.argmax(axis=1))


# --------------------------------------------------------------------------- metrics and intervals


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval at ``confidence`` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    confidence: float

    def text(self, *, percent: bool = True) -> str:
        scale, unit = (100.0, "%") if percent else (1.0, "")
        return f"{scale * self.estimate:.1f}{unit} [{scale * self.low:.1f}, {scale * self.high:.1f}]"


def _weighted_scores(weights: np.ndarray, truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 for each row of ``weights`` (float [B, n]: how often each item is drawn).

    Macro-F1 averages the per-class F1 over the classes present (weight > 0) in that row's truth;
    a class never predicted has F1 0 (scikit-learn's ``zero_division=0``).
    """
    eye = np.eye(n_classes)
    truth_hot, predicted_hot = eye[truth], eye[predicted]
    total = weights.sum(axis=1)
    accuracy = weights @ (truth == predicted).astype(np.float64) / total
    true_positive = weights @ (truth_hot * predicted_hot)
    support = weights @ truth_hot
    denominator = support + weights @ predicted_hot
    f1 = np.divide(2.0 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    present = support > 0
    macro_f1 = (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return accuracy, macro_f1


def _scores(test: TestSet, outcome: Outcome, track_weights: np.ndarray) -> dict[str, np.ndarray]:
    """The four :data:`METRICS` for each row of ``track_weights`` (float [B, n_tracks])."""
    track_accuracy, track_f1 = _weighted_scores(track_weights, test.track_truth, outcome.track, test.n_classes)
    clip_accuracy, clip_f1 = _weighted_scores(track_weights[:, test.clip_track], test.clip_truth, outcome.clip, test.n_classes)
    return {"track_accuracy": track_accuracy, "track_macro_f1": track_f1, "clip_accuracy": clip_accuracy, "clip_macro_f1": clip_f1}


def track_resample_weights(n_tracks: int, *, n_resamples: int, seed: int) -> np.ndarray:
    """float [n_resamples, n_tracks]: how often each track is drawn in each bootstrap resample (with replacement)."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_tracks, size=(n_resamples, n_tracks))
    offsets = (np.arange(n_resamples) * n_tracks)[:, None]
    return np.bincount((drawn + offsets).ravel(), minlength=n_resamples * n_tracks).reshape(n_resamples, n_tracks).astype(np.float64)


def interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(float(estimate), float(low), float(high), confidence)


def paired_bootstrap(
    *, test: TestSet, outcomes: Mapping[str, Outcome], n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0
) -> tuple[dict[str, dict[str, Interval]], dict[str, np.ndarray]]:
    """Intervals of :data:`METRICS` for every model, all from the same resamples of test tracks.

    Returns (``{model: {metric: Interval}}``, ``{model: float [n_resamples] track-accuracy draws}``);
    the draws are paired across models, so a difference of two models' draws is the bootstrap
    distribution of their difference (Efron & Tibshirani 1993, ch. 13).
    """
    weights = track_resample_weights(test.n_tracks, n_resamples=n_resamples, seed=seed)
    ones = np.ones((1, test.n_tracks))
    intervals, draws = {}, {}
    for name, outcome in outcomes.items():
        point = _scores(test, outcome, ones)
        resampled = _scores(test, outcome, weights)
        intervals[name] = {m: interval(point[m][0], resampled[m], confidence) for m in METRICS}
        draws[name] = resampled["track_accuracy"]
    return intervals, draws


# --------------------------------------------------------------------------- tests


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of paired outcomes of ``a`` (challenger) against ``b`` (reference).

    ``only_b``: items ``b`` got right and ``a`` wrong; ``only_a``: the reverse.
    ``p_greater``/``p_less``: one-sided p that ``a`` is more/less accurate; ``p_two_sided``: either direction.
    """

    only_a: int
    only_b: int
    p_greater: float
    p_less: float
    p_two_sided: float


def mcnemar_exact(*, correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact McNemar test on bool [n] paired outcomes (McNemar 1947; Dietterich 1998).

    Under H0 the discordant pairs split 1/2 : 1/2, so ``only_a ~ Binomial(only_a + only_b, 1/2)``;
    the p-values are scipy's exact binomial tests. No discordant pair: both p-values are 1.
    Raises ValueError when the arrays differ in length.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have one shape, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(only_a, only_b, 1.0, 1.0, 1.0)
    return McNemar(
        only_a,
        only_b,
        *(float(binomtest(only_a, discordant, 0.5, alternative=side).pvalue) for side in ("greater", "less", "two-sided")),
    )


def chance_rate(track_truth: np.ndarray, *, n_classes: int) -> float:
    """``max(1/K, share of the most common genre among the test tracks)``: what a constant answer can reach."""
    counts = np.bincount(np.asarray(track_truth), minlength=n_classes)
    return float(max(1.0 / n_classes, counts.max() / max(counts.sum(), 1)))


def above_chance_p(*, correct: np.ndarray, chance: float) -> float:
    """One-sided exact binomial p that bool [n] ``correct`` outcomes beat the rate ``chance`` (1.0 when n = 0)."""
    hits = np.asarray(correct, dtype=bool)
    if hits.size == 0:
        return 1.0
    return float(binomtest(int(hits.sum()), int(hits.size), chance, alternative="greater").pvalue)


# --------------------------------------------------------------------------- small data: the corrected repeated k-fold t-test


@dataclass(frozen=True)
class CorrectedTTest:
    """Bouckaert & Frank's (2004) corrected repeated k-fold t-test of per-fold differences (a minus b).

    ``only_a``/``only_b``: pooled item counts where only a / only b was right (the same meaning as :class:`McNemar`'s,
    summed over repetitions, so each track counts once per repetition); ``p_greater``/``p_less``: one-sided p that
    a is more/less accurate; ``mean`` the mean per-fold difference and ``low``/``high`` its interval.
    """

    only_a: int
    only_b: int
    p_greater: float
    p_less: float
    p_two_sided: float
    mean: float
    low: float
    high: float
    t: float
    dof: int


def corrected_repeated_kfold_test(differences: np.ndarray, *, folds: int, confidence: float = 0.95,
                                  only_a: int = 0, only_b: int = 0) -> CorrectedTTest:
    """The corrected resampled t-test on float [r * k] per-fold score differences of two models on the same folds.

    Nadeau & Bengio (2003), "Inference for the Generalization Error", Machine Learning 52(3): the variance of the
    mean over resamples that share training data is underestimated by ``sigma^2 / n``; their correction uses
    ``(1 / n + n_test / n_train) * sigma^2``. Bouckaert & Frank (2004), "Evaluating the Replicability of Significance
    Tests for Comparing Learning Algorithms", PAKDD, apply it to r x k-fold cross-validation: ``n = r k``,
    ``n_test / n_train = 1 / (k - 1)``, ``t = mean / sqrt((1 / (r k) + 1 / (k - 1)) * s^2)`` with ``r k - 1`` degrees of
    freedom (Student t). All differences zero: p = 1 one-sided either way. Raises ValueError for fewer than two
    differences or ``folds < 2``.
    """
    from scipy.stats import t as student

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or folds < 2:
        raise ValueError(f"{d.size} fold differences with {folds} folds: the corrected t-test needs >= 2 of each")
    n, mean, variance = d.size, float(d.mean()), float(d.var(ddof=1))
    scale = np.sqrt((1.0 / n + 1.0 / (folds - 1)) * variance)
    dof = n - 1
    half = float(student.ppf(0.5 + confidence / 2.0, dof) * scale)
    if scale == 0.0:  # every fold gave the same difference: certain in its direction, no evidence when it is 0
        p_greater, p_less = (0.0 if mean > 0 else 1.0), (0.0 if mean < 0 else 1.0)
        return CorrectedTTest(only_a, only_b, p_greater, p_less, min(1.0, 2 * min(p_greater, p_less)), mean, mean, mean,
                              float("inf") if mean else 0.0, dof)
    t = mean / scale
    p_greater, p_less = float(student.sf(t, dof)), float(student.cdf(t, dof))
    return CorrectedTTest(only_a, only_b, p_greater, p_less, min(1.0, 2 * min(p_greater, p_less)), mean, mean - half, mean + half,
                          float(t), dof)

