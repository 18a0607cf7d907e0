"""The gate's statistics on constructed outcomes: intervals, exact McNemar, chance, floor, promotion rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genretag.evaluation import gate, paired_tests


def _test_set(n_tracks: int, *, n_classes: int = 4, clips_per_track: int = 3) -> paired_tests.TestSet:
    track_truth = np.arange(n_tracks) % n_classes
    clip_track = np.repeat(np.arange(n_tracks), clips_per_track)
    return paired_tests.TestSet(clip_truth=track_truth[clip_track], clip_track=clip_track, track_truth=track_truth, n_classes=n_classes)


def _outcome(test: paired_tests.TestSet, right: np.ndarray) -> paired_tests.Outcome:
    """Tracks in ``right`` (bool [n_tracks]) answered correctly on every clip, the others one class off."""
    n = test.n_classes
    track = np.where(right, test.track_truth, (test.track_truth + 1) % n)
    return paired_tests.Outcome(clip=track[test.clip_track], track=track)


def test_mcnemar_exact_matches_the_hand_computed_binomial() -> None:
    a = np.array([True] * 7 + [False] * 1 + [True] * 5 + [False] * 3)
    b = np.array([False] * 7 + [True] * 1 + [True] * 5 + [False] * 3)
    result = paired_tests.mcnemar_exact(correct_a=a, correct_b=b)
    assert (result.only_a, result.only_b) == (7, 1)
    # P(X >= 7 | n=8, 1/2) = (C(8,7) + C(8,8)) / 2^8 = 9/256; two-sided doubles it.
    assert result.p_greater == pytest.approx(9 / 256)
    assert result.p_two_sided == pytest.approx(18 / 256)
    assert result.p_less == pytest.approx(255 / 256)  # P(X <= 7) = 1 - P(X = 8)
    assert paired_tests.mcnemar_exact(correct_a=a, correct_b=a).p_two_sided == 1.0


def test_above_chance_is_the_one_sided_binomial() -> None:
    correct = np.array([True] * 3 + [False] * 3)
    # P(X >= 3 | n=6, p=0.1)
    expected = sum(math.comb(6, k) * 0.1**k * 0.9 ** (6 - k) for k in range(3, 7))
    assert paired_tests.above_chance_p(correct=correct, chance=0.1) == pytest.approx(expected)
    assert paired_tests.chance_rate(np.array([0, 0, 0, 1]), n_classes=10) == 0.75  # a constant answer reaches the majority share
    assert paired_tests.chance_rate(np.array([0, 1, 2, 3]), n_classes=4) == 0.25


def test_paired_bootstrap_intervals_cover_the_truth_and_narrow_with_more_tracks() -> None:
    rng = np.random.default_rng(1)
    true_accuracy, covered, widths = 0.7, 0, {}
    for n_tracks in (40, 400):
        for repeat in range(40 if n_tracks == 40 else 1):
            test = _test_set(n_tracks)
            outcome = _outcome(test, rng.random(n_tracks) < true_accuracy)
            intervals, _ = paired_tests.paired_bootstrap(test=test, outcomes={"m": outcome}, n_resamples=500, confidence=0.95, seed=repeat)
            track = intervals["m"]["track_accuracy"]
            assert track.low <= track.estimate <= track.high
            covered += n_tracks == 40 and track.low <= true_accuracy <= track.high
            widths[n_tracks] = track.high - track.low
    assert covered >= 34  # nominal 95 % of 40; a binomial(40, 0.95) falls below 34 with p < 0.01
    assert widths[400] < widths[40] / 2
    # Every clip of a track shares the track's answer here, so clip and track metrics agree.
    assert intervals["m"]["clip_accuracy"].estimate == pytest.approx(intervals["m"]["track_accuracy"].estimate)


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    test = _test_set(30, n_classes=3)
    rng = np.random.default_rng(3)
    track = rng.integers(0, 3, size=30)
    outcome = paired_tests.Outcome(clip=track[test.clip_track], track=track)
    intervals, _ = paired_tests.paired_bootstrap(test=test, outcomes={"m": outcome}, n_resamples=10)
    assert intervals["m"]["track_macro_f1"].estimate == pytest.approx(f1_score(test.track_truth, track, average="macro"))


def _decide(test, outcomes, *, champion=None, baseline="mfcc-logreg", alpha=0.05, min_improvement=0.0):
    return gate.decide(test=test, outcomes=outcomes, candidates=[n for n in outcomes if n != champion], champion=champion,
                       baseline=baseline if baseline in outcomes else None, alpha=alpha, min_improvement=min_improvement, n_resamples=200)


def test_the_floor_refuses_a_constant_first_model_and_names_why() -> None:
    test = _test_set(20)
    constant = paired_tests.Outcome(clip=np.zeros(test.n_clips, dtype=int), track=np.zeros(test.n_tracks, dtype=int))
    decision = _decide(test, {"constant": constant})
    assert decision.action == "none" and decision.champion is None and decision.rule == gate.RULE_FLOOR
    assert "constant: not significantly above chance" in decision.reason
    assert set(decision.failures()) == {"constant"}


def test_the_floor_refuses_a_model_significantly_below_the_baseline() -> None:
    test = _test_set(40)
    baseline = _outcome(test, np.ones(40, dtype=bool))
    weak = _outcome(test, np.arange(40) < 24)  # 60 %: above chance 25 %, but 16 tracks behind the baseline
    decision = _decide(test, {"mfcc-logreg": baseline, "weak": weak})
    assert not decision.evidence["weak"].servable
    assert "significantly below the baseline mfcc-logreg" in decision.evidence["weak"].floor
    assert decision.action == "promote" and decision.champion == "mfcc-logreg" and decision.rule == gate.RULE_FIRST


def test_a_non_significant_gain_keeps_the_champion_a_significant_one_promotes() -> None:
    test = _test_set(40)
    champion = _outcome(test, np.arange(40) < 28)  # 70 %
    slightly = _outcome(test, np.arange(40) < 30)  # 75 %: 2 discordant tracks, p = 0.25
    much = _outcome(test, np.arange(40) < 40)  # 100 %: 12 discordant tracks, p = 2^-12
    kept = _decide(test, {"old": champion, "slightly": slightly}, champion="old")
    assert kept.action == "keep" and kept.champion == "old" and kept.rule == gate.RULE_NOT_SIGNIFICANT
    assert kept.comparisons["slightly"].test.p_greater == pytest.approx(0.25)
    promoted = _decide(test, {"old": champion, "slightly": slightly, "much": much}, champion="old")
    assert promoted.action == "promote" and promoted.champion == "much" and promoted.rule == gate.RULE_SIGNIFICANT
    assert promoted.comparisons["much"].level == pytest.approx(0.025)  # Bonferroni over two challengers
    assert promoted.comparisons["much"].gain.low > 0
    too_small = _decide(test, {"old": champion, "much": much}, champion="old", min_improvement=0.5)
    assert too_small.action == "keep" and too_small.rule == gate.RULE_TOO_SMALL


def test_a_champion_below_the_floor_is_replaced_or_unserved() -> None:
    test = _test_set(20)
    dead = paired_tests.Outcome(clip=np.zeros(test.n_clips, dtype=int), track=np.zeros(test.n_tracks, dtype=int))
    good = _outcome(test, np.ones(20, dtype=bool))
    replaced = _decide(test, {"dead": dead, "good": good}, champion="dead")
    assert replaced.action == "promote" and replaced.champion == "good" and replaced.rule == gate.RULE_CHAMPION_BELOW_FLOOR
    alone = _decide(test, {"dead": dead}, champion="dead")
    assert alone.action == "none" and alone.champion is None


def test_a_derived_model_serves_only_when_not_significantly_below_its_source() -> None:
    test = _test_set(40)
    source = _outcome(test, np.ones(40, dtype=bool))
    close = _outcome(test, np.arange(40) >= 2)  # 2 tracks behind its source: McNemar p = 0.25
    far = _outcome(test, np.arange(40) >= 12)  # 70 %, above chance, but 12 tracks behind: p = 0.00024
    decision = gate.decide(test=test, outcomes={"exp8": source, "exp8-int8": close, "bad-int8": far},
                           candidates=["exp8", "exp8-int8", "bad-int8"], champion=None, baseline=None, alpha=0.05,
                           min_improvement=0.0, n_resamples=200, sources={"exp8-int8": "exp8", "bad-int8": "exp8"})
    assert decision.evidence["exp8-int8"].servable and "not below its source exp8" in decision.evidence["exp8-int8"].floor
    assert not decision.evidence["bad-int8"].servable
    assert "significantly below its source exp8" in decision.evidence["bad-int8"].floor
    assert decision.champion == "exp8"
