"""Early exit per track: score a track's windows in rounds, in an order that spreads over the track, and
stop when more windows cannot change its genre.

The decision is the genre of the mean calibrated probability over the track's N windows (all of its
non-silent windows up to ``score.max_windows``). After n of them were scored, take the leading genre
a and each rival b: d_i = p_a,i - p_b,i lies in [-1, 1]. The decision over all N is settled when,
for every rival, the mean of d over the N windows is still > 0:

* **for certain** when n * gap > N - n (the remaining N - n windows at worst case, d = -1 each,
  cannot close the gap of the sums), where gap = mean_n(p_a) - mean_n(p_b) of the nearest rival;
* **with probability >= 1 - risk** when one of two tests by betting, each at level risk / 2, rejects:
  the **majority** test, "the mean of the leader's own probability over all N windows is <= 1/2"
  (d_i = 2 p_a,i - 1: once the leader holds more than half of the averaged probability, no rival can
  beat it, and one test needs no union over rivals), or the **rivals** test, for every rival, "the
  mean of d over all N windows is <= 0". A test's capital K_n = prod_{i<=n} (1 + lambda_i (x_i - c_i)) of the
  scaled gaps x_i = (1 + d_i) / 2 in [0, 1] against the null mean of the windows not yet seen,
  c_i = (N / 2 - sum_{j<i} x_j) / (N - i + 1), reaches (K - 1) / risk. Under the null K_n is a
  nonnegative supermartingale, so by Ville's inequality it ever reaches 1 / alpha with probability
  <= alpha, at any of the looks: no union over rounds is needed (Waudby-Smith & Ramdas 2020,
  "Confidence sequences for sampling without replacement", NeurIPS 33, Sec. 3, Thm. 3.1 with the
  without-replacement centring; the bet lambda_i is their aGRAPA, (mu - c) / (sigma^2 + (mu - c)^2)
  from the windows before i, clipped to [0, 3 / (4 c_i)], from "Estimating means of bounded random
  variables by betting", JRSS B 86(1) 2024, Sec. B.3). The K - 1 rivals share their half of the risk
  (union bound): stopping on a leader a that is not the genre of all N windows needs the test of a
  against that genre, or the majority test, to reject a true null. The majority test is the one that
  stops a clear track early: it spends log(2 / risk) of capital, the rivals test log(2 (K - 1) / risk).

The bet grows fastest when the gaps are large and steady (variance-adaptive): on a track whose
windows agree it stops well before the Hoeffding-Serfling bound (R sqrt(rho_n ln(1/delta) / (2 n)),
Serfling 1974) and the empirical Bernstein-Serfling bound (Bardenet & Maillard 2015, Bernoulli
21(3), Thm. 3), whose ln(1/delta) / n term alone exceeds the largest possible gap below ~30 windows.
bench/early_exit.py measures it on real music.

The bound treats the scored windows as a sample of the track's windows; they are taken in
bit-reversal (van der Corput) order of the evenly spaced windows, so every prefix covers the
whole track (start, middle, quarters, eighths ...) rather than its intro.
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
    by the betting test against every rival (module docstring). True once n = total."""
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
    majority = 2.0 * windows[:, [leader]] - 1.0  # mean > 0 over all N: the leader holds more than half
    if betting_log_capital(majority, total=total)[0] >= math.log(2.0 / risk):
        return True
    gaps = windows[:, [leader]] - np.delete(windows, leader, axis=1)
    return bool(np.all(betting_log_capital(gaps, total=total) >= math.log(2.0 * (windows.shape[1] - 1) / risk)))


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
