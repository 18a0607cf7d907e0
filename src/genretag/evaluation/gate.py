"""The champion gate's statistics: one honest decision for every model family.

Every candidate and the champion are scored on the same test tracks (their audio, through their
own ONNX graphs), so their outcomes are *paired*: the gate compares them track by track.

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
- Floor: a model is servable only when it is significantly above chance at ``alpha`` and not
  significantly below the baseline family (``mfcc-logreg``, trained on the same split) at
  ``alpha`` (one-sided exact McNemar). A model derived from another one (an int8 model from its
  float32 source) must also not be significantly below that source at ``alpha`` (same test).
- Promotion: the best servable challenger replaces the champion only when its track accuracy is
  significantly higher (one-sided exact McNemar at ``alpha / m`` for ``m`` challengers compared:
  Bonferroni, Dunn 1961, "Multiple comparisons among means", JASA 56) **and** higher by at least
  ``min_improvement``. A first champion, or the replacement of a champion that fails the floor,
  needs only the floor.

Pure functions of numpy arrays; no file or network access.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.stats import binomtest

METRICS: tuple[str, ...] = ("track_accuracy", "track_macro_f1", "clip_accuracy", "clip_macro_f1")
DEFAULT_RESAMPLES = 2000

RULE_FIRST = "first-champion"
RULE_CHAMPION_BELOW_FLOOR = "champion-below-floor"
RULE_SIGNIFICANT = "significant-improvement"
RULE_NOT_SIGNIFICANT = "not-significant"
RULE_TOO_SMALL = "below-min-improvement"
RULE_NO_CHALLENGER = "no-servable-challenger"
RULE_FLOOR = "floor"


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


def _interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
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
        intervals[name] = {m: _interval(point[m][0], resampled[m], confidence) for m in METRICS}
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


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Evidence:
    """What the gate knows about one model on the test split (intervals at ``1 - alpha``)."""

    model: str
    n_tracks: int
    n_clips: int
    metrics: dict[str, Interval]
    chance: float
    chance_p: float
    baseline: str | None
    baseline_test: McNemar | None  # this model (a) against the baseline (b); None for the baseline itself
    servable: bool
    floor: str  # why it is or is not servable, with numbers


@dataclass(frozen=True)
class Comparison:
    """A challenger against the champion on the same tracks: track-accuracy gain with its interval, McNemar."""

    challenger: str
    champion: str
    gain: Interval
    test: McNemar
    level: float  # the significance level after the Bonferroni correction
    significant: bool
    large_enough: bool
    method: str = "exact McNemar"  # the paired test that decided (the cross-validated protocol: the corrected t-test)
    unit: str = "tracks"  # what ``test.only_a``/``only_b`` count (cross-validated: track-folds, each track once per repetition)


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: ``champion`` is the model to serve afterwards (None: serve nothing).

    ``action``: promote (``champion`` is new), keep (``previous_champion`` stays), none (no
    servable model). ``rule`` names the rule that decided; ``reason`` says it with the numbers.
    """

    action: Literal["promote", "keep", "none"]
    champion: str | None
    previous_champion: str | None
    rule: str
    reason: str
    alpha: float
    min_improvement: float
    evidence: dict[str, Evidence] = field(default_factory=dict)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    protocols: dict[str, str] = field(default_factory=dict)  # model -> the protocol of its evidence ({}: every model holdout)

    def failures(self) -> dict[str, str]:
        """Models that failed the floor -> why."""
        return {name: e.floor for name, e in self.evidence.items() if not e.servable}


def _floor(
    name: str, *, test: TestSet, correct: np.ndarray, baseline: str | None, baseline_correct: np.ndarray | None, alpha: float
) -> tuple[float, float, McNemar | None, bool, str]:
    chance = chance_rate(test.track_truth, n_classes=test.n_classes)
    p_chance = above_chance_p(correct=correct, chance=chance)
    accuracy = float(np.mean(correct)) if correct.size else 0.0
    said = f"track accuracy {accuracy:.3f} on {correct.size} tracks vs chance {chance:.3f}: p={p_chance:.3g}"
    if p_chance >= alpha:
        return chance, p_chance, None, False, f"not significantly above chance ({said} >= alpha {alpha:g})"
    if baseline is None or baseline_correct is None or name == baseline:
        note = "" if name == baseline else "; no baseline on this split"
        return chance, p_chance, None, True, f"above chance ({said}){note}"
    versus = mcnemar_exact(correct_a=correct, correct_b=baseline_correct)
    p_below = versus.p_less
    baseline_said = (
        f"{baseline} right where it was wrong on {versus.only_b} tracks, the reverse on {versus.only_a}: "
        f"exact McNemar p={p_below:.3g}"
    )
    if p_below < alpha:
        return chance, p_chance, versus, False, f"significantly below the baseline {baseline} ({baseline_said} < alpha {alpha:g})"
    return chance, p_chance, versus, True, f"above chance ({said}); not below {baseline} ({baseline_said})"


def _not_below_source(evidence: Evidence, *, source: str, correct: np.ndarray, source_correct: np.ndarray, alpha: float) -> Evidence:
    """The floor's extra rule for a derived model: not significantly below its source (one-sided exact McNemar)."""
    versus = mcnemar_exact(correct_a=correct, correct_b=source_correct)
    said = (f"its source {source} right where it was wrong on {versus.only_b} tracks, the reverse on {versus.only_a}: "
            f"exact McNemar p={versus.p_less:.3g}")
    if versus.p_less < alpha:
        return replace(evidence, servable=False, floor=f"significantly below its source {source} ({said} < alpha {alpha:g})")
    return replace(evidence, floor=f"{evidence.floor}; not below its source {source} ({said})")


def _rank(evidence: Evidence) -> tuple[float, ...]:
    m = evidence.metrics
    return tuple(m[key].estimate if key in m else 0.0 for key in ("track_accuracy", "track_macro_f1", "clip_accuracy"))


Compare = Callable[[str, str, float], Comparison]
"""(challenger, champion, significance level) -> their :class:`Comparison` under the protocol that scored both."""


def _verdict(
    *, evidence: Mapping[str, Evidence], candidates: Sequence[str], champion: str | None, compare: Compare, alpha: float,
    min_improvement: float, note: str = "", protocols: Mapping[str, str] | None = None,
) -> Decision:
    """THE gate's rules on the floor's ``evidence`` (module docstring), whatever protocol scored the models: a first
    champion or the replacement of a champion below the floor needs the floor only (the best servable by
    track accuracy, then macro-F1, then clip accuracy); otherwise the best challenger that ``compare`` finds
    significantly better at ``alpha / m`` (Bonferroni over the m servable challengers) and by ``min_improvement``
    replaces the champion. ``note`` ends every reason (the protocol and its track counts)."""

    def verdict(action, chosen, rule, reason, comparisons=None) -> Decision:
        return Decision(action, chosen, champion, rule, f"{reason}{note}", alpha, min_improvement, dict(evidence), comparisons or {},
                        dict(protocols or {}))

    servable = sorted((n for n in dict.fromkeys(candidates) if n != champion and evidence[n].servable), key=lambda n: _rank(evidence[n]),
                      reverse=True)
    failed = "; ".join(f"{n}: {e.floor}" for n, e in evidence.items() if not e.servable)
    if champion is None or not evidence[champion].servable:
        before = "no champion" if champion is None else f"champion {champion} fails the floor: {evidence[champion].floor}"
        rule = RULE_FIRST if champion is None else RULE_CHAMPION_BELOW_FLOOR
        if not servable:
            return verdict("none", None, RULE_FLOOR, f"no servable model ({before}); failed: {failed}")
        best = servable[0]
        return verdict("promote", best, rule, f"{before}; {best} is the best model that passes the floor, "
                       f"track accuracy {evidence[best].metrics['track_accuracy'].text()}: {evidence[best].floor}")
    if not servable:
        return verdict("keep", champion, RULE_NO_CHALLENGER, f"champion {champion} kept: no challenger passes the floor"
                       + (f" ({failed})" if failed else ""))
    level = alpha / len(servable)
    comparisons = {name: compare(name, champion, level) for name in servable}

    def said(c: Comparison) -> str:
        return (f"{c.challenger} vs champion {champion}: track accuracy gain {c.gain.text()} "
                f"({c.test.only_a} {c.unit} only {c.challenger} got right, {c.test.only_b} only {champion}); "
                f"{c.method} one-sided p={c.test.p_greater:.3g} vs alpha {alpha:g}/{len(servable)}={level:.3g}; "
                f"min_improvement {100 * min_improvement:.1f}%")

    winners = [n for n in servable if comparisons[n].significant and comparisons[n].large_enough]
    if winners:
        return verdict("promote", winners[0], RULE_SIGNIFICANT, f"promoted: {said(comparisons[winners[0]])}", comparisons)
    best = comparisons[servable[0]]
    rule = RULE_NOT_SIGNIFICANT if not best.significant else RULE_TOO_SMALL
    why = "not significant" if not best.significant else "gain below min_improvement"
    return verdict("keep", champion, rule, f"champion {champion} kept, {why}: {said(best)}", comparisons)


def _holdout(
    *, test: TestSet, outcomes: Mapping[str, Outcome], baseline: str | None, alpha: float, min_improvement: float, n_resamples: int,
    seed: int, sources: Mapping[str, str] | None,
) -> tuple[dict[str, Evidence], Compare]:
    """The holdout protocol: every model's floor evidence on the test split, and its paired comparison (exact McNemar on
    track outcomes, the gain's interval from the paired bootstrap)."""
    correct = {name: outcome.track == test.track_truth for name, outcome in outcomes.items()}
    intervals, draws = paired_bootstrap(test=test, outcomes=outcomes, n_resamples=n_resamples, confidence=1.0 - alpha, seed=seed)
    evidence: dict[str, Evidence] = {}
    for name in outcomes:
        chance, p_chance, versus, servable, floor = _floor(
            name, test=test, correct=correct[name], baseline=baseline,
            baseline_correct=correct.get(baseline) if baseline else None, alpha=alpha,
        )
        evidence[name] = Evidence(name, test.n_tracks, test.n_clips, intervals[name], chance, p_chance, baseline, versus, servable, floor)
    for name, source in (sources or {}).items():
        if name in evidence and source in correct and evidence[name].servable:
            evidence[name] = _not_below_source(evidence[name], source=source, correct=correct[name],
                                               source_correct=correct[source], alpha=alpha)

    def compare(challenger: str, champion: str, level: float) -> Comparison:
        result = mcnemar_exact(correct_a=correct[challenger], correct_b=correct[champion])
        gain = intervals[challenger]["track_accuracy"].estimate - intervals[champion]["track_accuracy"].estimate
        return Comparison(challenger, champion, _interval(gain, draws[challenger] - draws[champion], 1.0 - alpha), result, level,
                          significant=result.p_greater < level, large_enough=gain >= min_improvement - 1e-12)

    return evidence, compare


def _require(named: Sequence[str | None], have: Mapping[str, object], what: str) -> None:
    missing = sorted({n for n in named if n and n not in have})
    if missing:
        raise ValueError(f"no {what} for {', '.join(missing)}")


def decide(
    *,
    test: TestSet,
    outcomes: Mapping[str, Outcome],
    candidates: Sequence[str],
    champion: str | None,
    baseline: str | None,
    alpha: float,
    min_improvement: float,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    sources: Mapping[str, str] | None = None,
) -> Decision:
    """Decide which model serves (the holdout protocol). ``outcomes`` holds every candidate and the champion (when any).

    ``candidates``: names in ``outcomes`` competing now (the champion may be among them: it is
    then not compared with itself). ``champion``: the current champion's name, or None.
    ``baseline``: the floor's reference (a name in ``outcomes``), or None when absent.
    ``alpha`` in (0, 1); ``min_improvement``: least track-accuracy gain (fraction) to promote.
    ``sources``: derived model -> the model it was made from (int8 -> float32); a derived model
    significantly below its source fails the floor (a source absent from ``outcomes`` is skipped).
    Raises ValueError for a name missing from ``outcomes``.
    """
    _require([*candidates, champion, baseline], outcomes, "outcome")
    evidence, compare = _holdout(test=test, outcomes=outcomes, baseline=baseline, alpha=alpha, min_improvement=min_improvement,
                                 n_resamples=n_resamples, seed=seed, sources=sources)
    return _verdict(evidence=evidence, candidates=candidates, champion=champion, compare=compare, alpha=alpha,
                    min_improvement=min_improvement)


# --------------------------------------------------------------------------- small data: repeated k-fold cross-validation

PROTOCOL_HOLDOUT = "holdout"  # every model scored on the test split's tracks (exact McNemar, paired bootstrap)
PROTOCOL_CROSS_VALIDATED = "cross-validated"  # repeated stratified track-level k-fold over every labelled track


@dataclass(frozen=True)
class FoldOutcomes:
    """Per-track outcomes of repeated stratified track-level k-fold cross-validation over every labelled track.

    Item i is one track held out in one fold: ``repeat``/``fold`` int64 [m] (which repetition and which fold),
    ``track`` [m] its id, ``track_truth`` int64 [m] its label; ``correct[model]`` bool [m] whether the model fitted
    on the other folds got it right. Every track appears once per repetition (m = repeats x tracks).
    """

    repeat: np.ndarray
    fold: np.ndarray
    track: np.ndarray
    track_truth: np.ndarray
    correct: dict[str, np.ndarray]
    folds: int
    repeats: int
    n_classes: int

    @property
    def n_tracks(self) -> int:
        """Distinct tracks evaluated (each once per repetition)."""
        return len(np.unique(self.track))

    def fold_scores(self, values: np.ndarray) -> np.ndarray:
        """float [repeats * folds]: the mean of float [m] ``values`` within each (repeat, fold) cell (empty cells dropped)."""
        cell = np.asarray(self.repeat) * self.folds + np.asarray(self.fold)
        counts = np.bincount(cell, minlength=self.repeats * self.folds)
        sums = np.bincount(cell, weights=np.asarray(values, dtype=np.float64), minlength=self.repeats * self.folds)
        return sums[counts > 0] / counts[counts > 0]


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


def decide_cross_validated(
    *, cv: FoldOutcomes, candidates: Sequence[str], champion: str | None, baseline: str | None, alpha: float, min_improvement: float,
    test: TestSet | None = None, outcomes: Mapping[str, Outcome] | None = None, sources: Mapping[str, str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
) -> Decision:
    """The gate's rules (floor, promotion; :func:`_verdict`, shared with :func:`decide`) on cross-validated per-track
    outcomes for the models in ``cv.correct``, and on the ``test`` split's ``outcomes`` for the others (families whose
    refit is expensive, an earlier champion that is no candidate): the holdout protocol of :func:`decide`.

    A cross-validated model's track accuracy is the mean over the r x k folds, with its corrected interval (clipped to
    [0, 1]); its floor's
    "above chance" and "not below the baseline" are :func:`corrected_repeated_kfold_test` on per-fold differences
    (accuracy minus the chance rate of all the tracks; model minus baseline), at ``alpha``. A comparison of two
    cross-validated models is that test too (promotion at ``alpha / m``, Bonferroni); a comparison involving a holdout
    model is the exact McNemar test on the test split, so ``outcomes`` must then hold both (a cross-validated candidate's
    model fitted on the train split scores the test split like any other). Clip-level metrics are not cross-validated:
    a cross-validated model's Evidence.metrics holds ``track_accuracy`` only; models are ranked by track accuracy under
    their own protocol. ``Decision.protocols`` says which protocol scored each model. Raises ValueError for a name
    with no outcome under either protocol, or a comparison with no common protocol.
    """
    outcomes = dict(outcomes or {})
    both = {**dict.fromkeys(outcomes), **dict.fromkeys(cv.correct)}
    _require([*candidates, champion, baseline], both, "cross-validated or test-split outcome")
    held, holdout_compare = {}, None
    if outcomes:
        if test is None:
            raise ValueError("test-split outcomes without their test split")
        held, holdout_compare = _holdout(test=test, outcomes=outcomes, baseline=baseline if baseline in outcomes else None, alpha=alpha,
                                         min_improvement=min_improvement, n_resamples=n_resamples, seed=seed, sources=sources)
    chance = chance_rate(cv.track_truth, n_classes=cv.n_classes)
    confidence = 1.0 - alpha
    scores = {name: cv.fold_scores(correct) for name, correct in cv.correct.items()}

    def versus(a: str, b: str) -> CorrectedTTest:
        x, y = cv.correct[a], cv.correct[b]
        return corrected_repeated_kfold_test(scores[a] - scores[b], folds=cv.folds, confidence=confidence,
                                             only_a=int(np.sum(x & ~y)), only_b=int(np.sum(y & ~x)))

    n_said = f"{cv.n_tracks} tracks x {cv.repeats} repetitions of {cv.folds}-fold"
    evidence: dict[str, Evidence] = {name: e for name, e in held.items() if name not in cv.correct}
    for name in cv.correct:
        above = corrected_repeated_kfold_test(scores[name] - chance, folds=cv.folds, confidence=confidence)
        # the t interval is symmetric; an accuracy lies in [0, 1], so the interval is clipped to it
        accuracy = Interval(float(scores[name].mean()), max(0.0, above.low + chance), min(1.0, above.high + chance), confidence)
        said = (f"cross-validated track accuracy {accuracy.text()} over {n_said} vs chance {chance:.3f}: "
                f"corrected repeated k-fold t-test p={above.p_greater:.3g}")
        test_vs_baseline, servable = None, True
        if above.p_greater >= alpha:
            servable, floor = False, f"not significantly above chance ({said} >= alpha {alpha:g})"
        elif baseline is None or name == baseline or baseline not in cv.correct:
            floor = f"above chance ({said})" + ("" if baseline is None or name == baseline else
                                                f"; baseline {baseline} not cross-validated: not compared")
        else:
            test_vs_baseline = versus(name, baseline)
            baseline_said = (f"{baseline} right where it was wrong on {test_vs_baseline.only_b} track-folds, the reverse on "
                             f"{test_vs_baseline.only_a}: corrected repeated k-fold t-test p={test_vs_baseline.p_less:.3g}")
            if test_vs_baseline.p_less < alpha:
                servable, floor = False, f"significantly below the baseline {baseline} ({baseline_said} < alpha {alpha:g})"
            else:
                floor = f"above chance ({said}); not below {baseline} ({baseline_said})"
        evidence[name] = Evidence(name, cv.n_tracks, 0, {"track_accuracy": accuracy}, chance, above.p_greater, baseline,
                                  test_vs_baseline, servable, floor)

    def compare(challenger: str, champion_name: str, level: float) -> Comparison:
        if challenger in cv.correct and champion_name in cv.correct:
            result = versus(challenger, champion_name)
            return Comparison(challenger, champion_name, Interval(result.mean, result.low, result.high, confidence), result, level,
                              significant=result.p_greater < level, large_enough=result.mean >= min_improvement - 1e-12,
                              method="corrected repeated k-fold t-test", unit="track-folds")
        if holdout_compare is None or challenger not in outcomes or champion_name not in outcomes:
            raise ValueError(f"{challenger} and {champion_name} share no protocol: no comparison")
        return holdout_compare(challenger, champion_name, level)

    protocols = {name: PROTOCOL_CROSS_VALIDATED if name in cv.correct else PROTOCOL_HOLDOUT for name in evidence}
    holdout_said = f"; holdout on {test.n_tracks} test tracks for {', '.join(n for n, p in protocols.items() if p == PROTOCOL_HOLDOUT)}" \
        if test is not None and PROTOCOL_HOLDOUT in protocols.values() else ""
    return _verdict(evidence=evidence, candidates=candidates, champion=champion, compare=compare, alpha=alpha,
                    min_improvement=min_improvement, note=f" [protocol: {PROTOCOL_CROSS_VALIDATED}, {n_said}{holdout_said}]",
                    protocols=protocols)


def fold_outcomes(
    *, folds: Sequence[tuple[np.ndarray, np.ndarray]], repeats: int, clip_labels: np.ndarray, clip_tracks: np.ndarray,
    held_out: Mapping[str, Sequence[np.ndarray]], n_classes: int,
) -> FoldOutcomes:
    """Per-track outcomes from held-out clip probabilities: ``folds`` the ``repeats`` x k (fit, held-out) clip-index pairs
    of :func:`genretag.families.track_folds` (repetition-major), ``held_out[model]`` one float [len(held), K] array per
    fold (:func:`genretag.families.cross_fitted`); a track's prediction is the argmax of its clips' mean probability
    (:func:`outcome_from_probabilities`). ``clip_labels`` int [n], ``clip_tracks`` [n] ids. Raises ValueError when a
    model's folds do not match ``folds``."""
    k = len(folds) // max(repeats, 1)
    repeat, fold, track, truth = [], [], [], []
    correct: dict[str, list[np.ndarray]] = {name: [] for name in held_out}
    for number, (_, held) in enumerate(folds):
        names, first, index = np.unique(np.asarray(clip_tracks)[held], return_index=True, return_inverse=True)
        test = TestSet(np.asarray(clip_labels)[held], index.astype(np.int64), np.asarray(clip_labels)[held][first], n_classes)
        repeat.append(np.full(len(names), number // k))
        fold.append(np.full(len(names), number % k))
        track.append(names)
        truth.append(test.track_truth)
        for name, parts in held_out.items():
            if len(parts) != len(folds) or len(parts[number]) != len(held):
                raise ValueError(f"{name}: held-out probabilities do not match fold {number}")
            correct[name].append(outcome_from_probabilities(parts[number], test=test).track == test.track_truth)
    return FoldOutcomes(np.concatenate(repeat), np.concatenate(fold), np.concatenate(track), np.concatenate(truth),
                        {name: np.concatenate(parts) for name, parts in correct.items()}, k, repeats, n_classes)
