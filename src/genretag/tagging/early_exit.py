"""Early exit per track: score a track's windows in rounds, in an order that spreads over the track, and
stop when more windows cannot change its genre.

The decision is the genre of the mean calibrated probability over the track's N windows (all of its
non-silent windows up to ``score.max_windows``). After n of them were scored, take the leading genre
a and each rival b: d_i = p_a,i - p_b,i lies in [-1, 1]. The decision over all N is settled when,
for every rival, the mean of d over the N windows is still > 0:

* **for certain** when n * gap > N - n (the remaining N - n windows at worst case, d = -1 each,
  cannot close the gap of the sums), where gap = mean_n(p_a) - mean_n(p_b) of the nearest rival;
* **with probability >= 1 - risk** when gap > R * sqrt(rho_n * ln(1 / delta) / (2 n)), R = 2 the
  range of d, rho_n = 1 - (n - 1) / N: the Hoeffding-Serfling bound for a sample of n drawn
  without replacement from N (Serfling 1974, "Probability inequalities for the sum in sampling
  without replacement", Ann. Statist. 2(1), Cor. 1.1; Bardenet & Maillard 2015, Bernoulli 21(3),
  eq. (3)), with delta = risk / ((K - 1) * looks): a union bound over the K - 1 rivals and over
  every look at the track (one per round).

The bound treats the scored windows as a sample of the track's windows; they are taken in
bit-reversal (van der Corput) order of the evenly spaced windows, so every prefix covers the
whole track (start, middle, quarters, eighths ...) rather than its intro.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from genretag.core.config import ScoreParams

D_RANGE = 2.0  # d = p_a - p_b lies in [-1, 1]


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


def hoeffding_serfling_margin(*, scored: int, total: int, delta: float) -> float:
    """The gap (probability units) the mean of d over ``scored`` of ``total`` windows must exceed for the
    mean over all of them to stay > 0 with probability >= 1 - ``delta``: R sqrt(rho_n ln(1/delta) / (2 n))
    (Serfling 1974, Cor. 1.1; module docstring). 0 when every window was scored."""
    if scored >= total:
        return 0.0
    rho = 1.0 - (scored - 1) / total
    return D_RANGE * math.sqrt(rho * math.log(1.0 / delta) / (2.0 * scored))


def looks(*, total: int, round_windows: int) -> int:
    """How many times a track of ``total`` windows is looked at, one look per round of ``round_windows``."""
    return max(1, math.ceil(total / max(round_windows, 1)))


def settled(probabilities: np.ndarray, *, total: int, risk: float, round_windows: int) -> bool:
    """Whether the genre of the mean of ``probabilities`` (float [n, K], the n windows scored so far) is
    the genre of the mean over all ``total`` windows: for certain, or with probability >= 1 - ``risk``
    under the Hoeffding-Serfling bound (module docstring). True once n = total."""
    scored = len(probabilities)
    if scored >= total:
        return True
    if scored == 0 or probabilities.shape[1] < 2:
        return scored > 0
    mean = np.asarray(probabilities, dtype=np.float64).mean(axis=0)
    first, second = np.sort(mean)[-2:][::-1]
    gap = float(first - second)
    if scored * gap > total - scored:  # the rest at worst case cannot close it
        return True
    delta = risk / ((probabilities.shape[1] - 1) * looks(total=total, round_windows=round_windows))
    return gap > hoeffding_serfling_margin(scored=scored, total=total, delta=delta)


@dataclass(frozen=True)
class EarlyExit:
    """How a track's windows are scored in rounds (params score.early_exit_round, score.early_exit_risk)."""

    round_windows: int = 4  # windows of a track per round (per look)
    risk: float = 0.05  # the chance, per track, that stopping early gives another genre than all its windows

    def settled(self, probabilities: np.ndarray, *, total: int) -> bool:
        """:func:`settled` with these settings."""
        return settled(probabilities, total=total, risk=self.risk, round_windows=self.round_windows)


def early_exit_of(score: ScoreParams) -> EarlyExit | None:
    """The EarlyExit that params ``score`` ask for (score.early_exit, _round, _risk); None when it is off."""
    return EarlyExit(round_windows=score.early_exit_round, risk=score.early_exit_risk) if score.early_exit else None
