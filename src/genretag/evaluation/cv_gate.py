"""The champion gate on small data: repeated stratified track-level k-fold cross-validation.

When the test split is too small for the holdout gate (``register.cv_below_tracks``), the models
that refit cheaply are evaluated by r x k-fold cross-validation over every labelled track
(:func:`fold_outcomes`), and :func:`decide_cross_validated` applies the gate's rules
(:func:`genretag.evaluation.gate.verdict`: floor, then promotion at ``alpha / m``, Bonferroni) with
the corrected repeated k-fold t-test on per-fold differences in place of exact McNemar
(:func:`genretag.evaluation.paired_tests.corrected_repeated_kfold_test`): Nadeau & Bengio (2003),
"Inference for the Generalization Error", Machine Learning 52(3); Bouckaert & Frank (2004),
"Evaluating the Replicability of Significance Tests for Comparing Learning Algorithms", PAKDD.
Models that were not cross-validated keep the holdout protocol on the test split.

Pure functions of numpy arrays; no file or network access.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genretag.evaluation.gate import Comparison, Decision, Evidence, holdout, require, verdict
from genretag.evaluation.paired_tests import (
    DEFAULT_RESAMPLES,
    CorrectedTTest,
    Interval,
    Outcome,
    TestSet,
    chance_rate,
    corrected_repeated_kfold_test,
    outcome_from_probabilities,
)


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


def decide_cross_validated(
    *, cv: FoldOutcomes, candidates: Sequence[str], champion: str | None, baseline: str | None, alpha: float, min_improvement: float,
    test: TestSet | None = None, outcomes: Mapping[str, Outcome] | None = None, sources: Mapping[str, str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
) -> Decision:
    """The gate's rules (floor, promotion; :func:`verdict`, shared with :func:`genretag.evaluation.gate.decide`) on
    cross-validated per-track outcomes for the models in ``cv.correct``, and on the ``test`` split's ``outcomes`` for the
    others (families whose refit is expensive, an earlier champion that is no candidate): the holdout protocol of
    :func:`genretag.evaluation.gate.decide`.

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
    require([*candidates, champion, baseline], both, "cross-validated or test-split outcome")
    held, holdout_compare = {}, None
    if outcomes:
        if test is None:
            raise ValueError("test-split outcomes without their test split")
        held, holdout_compare = holdout(test=test, outcomes=outcomes, baseline=baseline if baseline in outcomes else None, alpha=alpha,
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
    return verdict(evidence=evidence, candidates=candidates, champion=champion, compare=compare, alpha=alpha,
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
