"""Early exit per track: score a track's windows in rounds, in an order that spreads over the track, and
stop when more windows cannot change its genre.

The decision is the genre of the mean calibrated probability over the track's N windows (all of its
non-silent windows up to ``score.max_windows``). After n of them were scored, take the leading genre
a and each rival b: d_i = p_a,i - p_b,i lies in [-1, 1]. The decision over all N is settled when,
for every rival, the mean of d over the N windows is still > 0:

* **for certain** when n * gap > N - n (the remaining N - n windows at worst case, d = -1 each,
  cannot close the gap of the sums), where gap = mean_n(p_a) - mean_n(p_b) of the nearest rival;
* **with probability >= 1 - risk** when, for every rival b, a test by betting of "the mean of d over
  all N windows is <= 0" rejects at level w_a risk. A test's capital K_n = prod_{i<=n} (1 + lambda_i (x_i - c_i)) of the
  scaled gaps x_i = (1 + d_i) / 2 in [0, 1] against the null mean of the windows not yet seen,
  c_i = (N / 2 - sum_{j<i} x_j) / (N - i + 1), reaches 1 / (w_a risk). Under the null K_n is a
  nonnegative supermartingale, so by Ville's inequality it ever reaches 1 / alpha with probability
  <= alpha, at any of the looks: no union over rounds is needed (Waudby-Smith & Ramdas 2020,
  "Confidence sequences for sampling without replacement", NeurIPS 33, Sec. 3, Thm. 3.1 with the
  without-replacement centring; the bet lambda_i is their aGRAPA, (mu - c) / (sigma^2 + (mu - c)^2)
  from the windows before i, clipped to [0, 3 / (4 c_i)], from "Estimating means of bounded random
  variables by betting", JRSS B 86(1) 2024, Sec. B.3).

  **The weights w_a** split the risk over the genres that could be a wrong leader. The first window
  scored is a pilot: the bet on it is 0 (nothing is known before it), so every capital is still 1
  after it, and its top genre gets w = 1/2, each other genre 1 / (2 (K - 1)) (weights that sum to 1
  and are fixed before the second window). Let g be the genre of all N windows: stopping on a
  leader a != g needs K^(a,g) >= 1 / (w_a risk), so sum_{a != g} w_a K^(a,g), a nonnegative
  supermartingale that starts at most at 1, reaches 1 / risk, which happens with probability at
  most risk (Ville; a weighted union bound over the wrong leaders, as in e-value testing: Vovk & Wang
  2021, "E-values: calibration, combination and applications", Ann. Stat. 49(3)). The leader is
  picked from the data, so some union over the leaders is needed: a single test of "the leader
  holds more than half of the averaged probability" at level risk would not be valid. With the pilot,
  a track whose windows agree needs capital 2 / risk (40 at risk 0.05) rather than (K - 1) / risk (180).

**No valid rule can stop much sooner on short tracks** (:func:`fewest_windows`): take the track
whose m = ceil(N / 2) - 1 windows say a with certainty and whose other N - m say g, so g is the
genre of all N. In a random order the first n windows are all a's with probability C(m, n) / C(N, n),
and a rule that stops (always, not at random) on n certain windows for a then errs that often. At
risk 0.05 that allows n = 3 at the soonest for N = 5, 6 or 10 (GTZAN's 15-20-s excerpts: at most
1.7x-2x fewer windows even when every window is certain), n = 4 for N = 20 or 40. This rule, on
windows that are all certain, stops after 4 of 6, 6 of 10 and 7-8 of 20 or more in rounds of 1 (8
in rounds of 4): the aGRAPA bet grows its stake over the first windows rather than betting all at once.

The bet grows fastest when the gaps are large and steady (variance-adaptive): on a track whose
windows agree it stops well before the Hoeffding-Serfling bound (R sqrt(rho_n ln(1/delta) / (2 n)),
Serfling 1974) and the empirical Bernstein-Serfling bound (Bardenet & Maillard 2015, Bernoulli
21(3), Thm. 3), whose ln(1/delta) / n term alone exceeds the largest possible gap below ~30 windows.
bench/early_exit.py measures it on real music.

**The order.** The windows are scored in bit-reversal (van der Corput) order of the evenly spaced
windows, so every prefix covers the whole track (start, middle, quarters, eighths ...) rather than
its intro. The guarantee above treats the scored windows as a random sample of the track's windows;
this order is fixed rather than random. It stratifies, as a survey does, but a track whose genre
changed exactly at those positions would defeat it: the probability is a model of the order, not a
property of it. (On gtzan-sample's held-out tracks no decision changed; bench/measured/early-exit.md.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from genretag.core.config import ScoreParams

MAX_BET_SHARE = 0.75  # lambda_i <= MAX_BET_SHARE / c_i: a factor never below 1/4 (Waudby-Smith & Ramdas 2024 truncate at 1/2 or 3/4)


def spread_order(count: int) -> np.ndarray:
    """The indices 0 .. count - 1 in bit-reversal order: int64 [count], e.g. 8 -> 0 4 2 6 1 5 3 7.

    Each prefix is spread over the range (the van der Corput sequence; Niederreiter 1992,
    "Random Number Generation and Quasi-Monte Carlo Methods", ch. 3): for count not a power of
    two, the bit-reversed indices of the next power of two that are < count, in that order.
    """
    if count <= 1:
        return np.arange(max(count, 0), dtype=np.int64)
    bits = (count - 1).bit_length()
    reversed_ = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(1 << bits)]
    return np.array([i for i in reversed_ if i < count], dtype=np.int64)


def betting_log_capital(gaps: np.ndarray, *, total: int) -> np.ndarray:
    """log K_n of the test "the mean of d over all ``total`` windows is <= 0", for each column of ``gaps``
    (float [n, R]: d_i in [-1, 1] of the n windows scored so far, in scoring order): float64 [R],
    +inf where the windows seen already make that mean > 0 certain (module docstring, Waudby-Smith
    & Ramdas 2020). Reaching ln(1 / alpha) rejects at level alpha."""
    x = (1.0 + np.clip(np.asarray(gaps, dtype=np.float64), -1.0, 1.0)) / 2.0
    log_capital = np.zeros(x.shape[1])
    seen = np.zeros(x.shape[1])
    for i, row in enumerate(x):
        null_rest = (total / 2.0 - seen) / (total - i)  # c_i: the mean the unseen windows need under the null
        prior = np.vstack([np.full(x.shape[1], 0.5), x[:i]])  # one pseudo-window at 1/2 before any data
        edge = prior.mean(axis=0) - null_rest
        bet = np.clip(edge / np.maximum(prior.var(axis=0) + edge**2, 1e-12), 0.0, MAX_BET_SHARE / np.maximum(null_rest, 1e-12))
        log_capital += np.log1p(np.where(null_rest > 0, bet, 0.0) * (row - null_rest))
        seen += row
    return np.where(seen > total / 2.0, np.inf, log_capital)


def settled(probabilities: np.ndarray, *, total: int, risk: float) -> bool:
    """Whether the genre of the mean of ``probabilities`` (float [n, K], the n windows scored so far, in scoring
    order) is the genre of the mean over all ``total`` windows: for certain, or with probability >= 1 - ``risk``
    by the betting tests against every rival, at level risk / 2 when the leader is the first window's top genre and
    risk / (2 (K - 1)) otherwise (module docstring). True once n = total."""
    scored = len(probabilities)
    if scored >= total:
        return True
    if scored == 0 or probabilities.shape[1] < 2:
        return scored > 0
    windows = np.asarray(probabilities, dtype=np.float64)
    mean = windows.mean(axis=0)
    first, second = np.sort(mean)[-2:][::-1]
    if scored * float(first - second) > total - scored:  # the rest at worst case cannot close it
        return True
    leader = int(mean.argmax())
    genres = windows.shape[1]
    weight = 0.5 if leader == int(windows[0].argmax()) else 0.5 / (genres - 1)  # the pilot's genre, or another (docstring)
    gaps = windows[:, [leader]] - np.delete(windows, leader, axis=1)
    return bool(np.all(betting_log_capital(gaps, total=total) >= math.log(1.0 / (weight * risk))))


def fewest_windows(total: int, *, risk: float) -> int:
    """The fewest of a track's ``total`` windows after which any rule that keeps the genre of all its windows with
    probability >= 1 - ``risk`` can stop, even when every window scored is certain (module docstring): the least n
    with C(m, n) / C(total, n) <= risk, m = ceil(total / 2) - 1. ``total`` when no n < total qualifies; 0 for 0."""
    wrong = -(-total // 2) - 1
    return next((n for n in range(1, total) if math.comb(wrong, n) / math.comb(total, n) <= risk), total)


@dataclass(frozen=True)
class EarlyExit:
    """How a track's windows are scored in rounds (params score.early_exit_round, score.early_exit_risk)."""

    round_windows: int = 4  # windows of a track per round (per look)
    risk: float = 0.05  # the chance, per track, that stopping early gives another genre than all its windows

    def settled(self, probabilities: np.ndarray, *, total: int) -> bool:
        """:func:`settled` with these settings."""
        return settled(probabilities, total=total, risk=self.risk)


def early_exit_of(score: ScoreParams) -> EarlyExit | None:
    """The EarlyExit that params ``score`` ask for (score.early_exit, _round, _risk); None when it is off."""
    return EarlyExit(round_windows=score.early_exit_round, risk=score.early_exit_risk) if score.early_exit else None
