"""Drift of a tagging run against the training data: the predicted-genre distribution (PSI).

PSI, the population stability index (Siddiqi 2006, *Credit Risk Scorecards*, ch. 8; also Yurdakul
2018, "Statistical properties of population stability index"):

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

over categories i, with ``e`` the reference proportions (the training tracks' genres) and ``a``
the observed ones (the genres a run predicted). Empty categories are floored at ``EPSILON`` so that
the logarithm stays finite. Customary reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 a
large shift (the default ``score.drift_psi_warn``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

EPSILON = 1e-4  # floor for an empty category's proportion (keeps ln finite)


def psi(reference: Mapping[str, float], observed: Mapping[str, float], *, labels: Sequence[str]) -> float:
    """PSI of ``observed`` against ``reference`` (counts or proportions per label; missing labels are 0).

    Returns a float >= 0 (0 for identical distributions). Raises ValueError when either side sums
    to 0 over ``labels``.
    """
    ref_total = sum(float(reference.get(label, 0)) for label in labels)
    obs_total = sum(float(observed.get(label, 0)) for label in labels)
    if ref_total <= 0 or obs_total <= 0:
        raise ValueError("PSI needs a non-empty reference and a non-empty observed distribution")
    total = 0.0
    for label in labels:
        expected = max(float(reference.get(label, 0)) / ref_total, EPSILON)
        actual = max(float(observed.get(label, 0)) / obs_total, EPSILON)
        total += (actual - expected) * math.log(actual / expected)
    return total


def genre_psi(reference: Mapping[str, int], observed: Mapping[str, int]) -> float | None:
    """PSI over the union of both sides' genres, rounded to 4 digits; None when either side is empty."""
    labels = sorted(set(reference) | set(observed))
    if not sum(reference.values()) or not sum(observed.values()):
        return None
    return round(psi(reference, observed, labels=labels), 4)


def drift_warning(value: float, *, limit: float) -> str:
    """The one-line warning for a run whose predicted genres drifted past ``limit`` (score.drift_psi_warn)."""
    return (f"predicted genres drift from the training tracks' genres: PSI {value:.3f} > score.drift_psi_warn {limit:g} "
            "(a catalog unlike the training data, or a model gone wrong; see catalog_runs)")


def training_genre_counts(tracks_csv: Path) -> dict[str, int]:
    """Genre -> validated training tracks, from data/tracks.csv (column ``genre``); {} when absent."""
    if not tracks_csv.is_file():
        return {}
    from genretag.dataset import read_table

    counts = read_table(tracks_csv)["genre"].value_counts()
    return {str(genre): int(count) for genre, count in counts.items()}
