"""The champion gate: one honest decision for every model family (the holdout protocol's rules).

Every candidate and the champion are scored on the same test tracks, so their outcomes are paired;
the statistics (paired bootstrap intervals, exact McNemar, the chance test, with their sources) are
:mod:`genretag.evaluation.paired_tests`'s.

- Floor: a model is servable only when it is significantly above chance at ``alpha`` and not
  significantly below the baseline family (``mfcc-logreg``, trained on the same split) at
  ``alpha`` (one-sided exact McNemar). A model derived from another one (an int8 model from its
  float32 source) must also not be significantly below that source at ``alpha`` (same test).
- Promotion: the best servable challenger replaces the champion only when its track accuracy is
  significantly higher (one-sided exact McNemar at ``alpha / m`` for ``m`` challengers compared:
  Bonferroni, Dunn 1961, "Multiple comparisons among means", JASA 56) **and** higher by at least
  ``min_improvement``. A first champion, or the replacement of a champion that fails the floor,
  needs only the floor.

The same rules (:func:`verdict`) decide under the cross-validated protocol
(:mod:`genretag.evaluation.cv_gate`).

Pure functions of numpy arrays; no file or network access.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from genretag.evaluation.paired_tests import (
    DEFAULT_RESAMPLES,
    Interval,
    McNemar,
    Outcome,
    TestSet,
    above_chance_p,
    chance_rate,
    interval,
    mcnemar_exact,
    paired_bootstrap,
)

RULE_FIRST = "first-champion"
RULE_CHAMPION_BELOW_FLOOR = "champion-below-floor"
RULE_SIGNIFICANT = "significant-improvement"
RULE_NOT_SIGNIFICANT = "not-significant"
RULE_TOO_SMALL = "below-min-improvement"
RULE_NO_CHALLENGER = "no-servable-challenger"
RULE_FLOOR = "floor"


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


def verdict(
    *, evidence: Mapping[str, Evidence], candidates: Sequence[str], champion: str | None, compare: Compare, alpha: float,
    min_improvement: float, note: str = "", protocols: Mapping[str, str] | None = None,
) -> Decision:
    """THE gate's rules on the floor's ``evidence`` (module docstring), whatever protocol scored the models: a first
    champion or the replacement of a champion below the floor needs the floor only (the best servable by
    track accuracy, then macro-F1, then clip accuracy); otherwise the best challenger that ``compare`` finds
    significantly better at ``alpha / m`` (Bonferroni over the m servable challengers) and by ``min_improvement``
    replaces the champion. ``note`` ends every reason (the protocol and its track counts)."""

    def decision(action, chosen, rule, reason, comparisons=None) -> Decision:
        return Decision(action, chosen, champion, rule, f"{reason}{note}", alpha, min_improvement, dict(evidence), comparisons or {},
                        dict(protocols or {}))

    servable = sorted((n for n in dict.fromkeys(candidates) if n != champion and evidence[n].servable), key=lambda n: _rank(evidence[n]),
                      reverse=True)
    failed = "; ".join(f"{n}: {e.floor}" for n, e in evidence.items() if not e.servable)
    if champion is None or not evidence[champion].servable:
        before = "no champion" if champion is None else f"champion {champion} fails the floor: {evidence[champion].floor}"
        rule = RULE_FIRST if champion is None else RULE_CHAMPION_BELOW_FLOOR
        if not servable:
            return decision("none", None, RULE_FLOOR, f"no servable model ({before}); failed: {failed}")
        best = servable[0]
        return decision("promote", best, rule, f"{before}; {best} is the best model that passes the floor, "
                       f"track accuracy {evidence[best].metrics['track_accuracy'].text()}: {evidence[best].floor}")
    if not servable:
        return decision("keep", champion, RULE_NO_CHALLENGER, f"champion {champion} kept: no challenger passes the floor"
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
        return decision("promote", winners[0], RULE_SIGNIFICANT, f"promoted: {said(comparisons[winners[0]])}", comparisons)
    best = comparisons[servable[0]]
    rule = RULE_NOT_SIGNIFICANT if not best.significant else RULE_TOO_SMALL
    why = "not significant" if not best.significant else "gain below min_improvement"
    return decision("keep", champion, rule, f"champion {champion} kept, {why}: {said(best)}", comparisons)


def holdout(
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
        return Comparison(challenger, champion, interval(gain, draws[challenger] - draws[champion], 1.0 - alpha), result, level,
                          significant=result.p_greater < level, large_enough=gain >= min_improvement - 1e-12)

    return evidence, compare


def require(named: Sequence[str | None], have: Mapping[str, object], what: str) -> None:
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
    require([*candidates, champion, baseline], outcomes, "outcome")
    evidence, compare = holdout(test=test, outcomes=outcomes, baseline=baseline, alpha=alpha, min_improvement=min_improvement,
                                n_resamples=n_resamples, seed=seed, sources=sources)
    return verdict(evidence=evidence, candidates=candidates, champion=champion, compare=compare, alpha=alpha,
                   min_improvement=min_improvement)
