"""Out-of-taxonomy ("none of these genres") scores and their threshold: the maths, in numpy.

Higher = further from the training genres. ``bench/open_set.py`` measured these scores (leave two
genres out on real GTZAN excerpts, all 45 pairs) and the exported models carry the one that measured
best, the **track kNN** score (:mod:`genretag.training.open_set`):

- track kNN: ``1 - cos`` of a track's embedding (the mean of its windows' embeddings,
  :func:`track_embeddings`) to its k-th nearest training track's (:func:`genretag.onnx.contract.knn_scores`,
  Sun, Ming, Zhu and Li 2022, applied to tracks; :meth:`genretag.onnx.contract.OpenSet.track_score`);
- window kNN: the same distance per window, to the training clips, then the mean over the track's windows;
- :func:`mahalanobis_scores`: squared Mahalanobis distance of a clip's embedding to the nearest
  training class mean under one covariance shared by the classes (Lee, Lee, Lee and Shin 2018, "A
  Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks",
  NeurIPS, equation 2). With a few hundred clips of a 1,506-d embedding the sample covariance is
  singular, so the shared covariance is the Ledoit-Wolf shrinkage estimate of the class-centred
  training embeddings (Ledoit and Wolf 2004; ``sklearn.covariance.LedoitWolf``).
- :func:`energy_scores`: the negative free energy ``-logsumexp(z)`` of the logits ``z`` (Liu, Wang,
  Owens and Li 2020, "Energy-based Out-of-distribution Detection", NeurIPS, equation 5, T = 1).
  Given only probabilities, the logits ``log p`` make it identically 0 (``logsumexp(log p) = 0``):
  it needs a family's raw logits.
- :func:`max_probability_scores`: ``-max_k p_k`` of (calibrated) probabilities (Hendrycks and Gimpel
  2017, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples", ICLR).

The window scores become a track score by their mean (:func:`track_scores`). The threshold is the
``accept`` quantile of the validation tracks' scores (:func:`fit_threshold`): a track is unknown when its
score is above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from genretag.core.errors import GenretagError
from genretag.evaluation.tracks import TrackGroups
from genretag.onnx.contract import normalised


class OpenSetError(GenretagError):
    """Embeddings, labels or scores an out-of-taxonomy score cannot be fitted on (shape, empty, one class)."""


@dataclass(frozen=True)
class GaussianClasses:
    """Class means float64 [K, D] and the shared precision matrix float64 [D, D] (inverse shrunk covariance)."""

    means: np.ndarray
    precision: np.ndarray
    shrinkage: float  # Ledoit-Wolf's shrinkage coefficient in [0, 1]


def fit_gaussian_classes(*, embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> GaussianClasses:
    """Class means and the shared Ledoit-Wolf precision of ``embeddings`` float [n, D] with int ``labels`` [n] in [0, K).

    A class without clips gets the mean of all clips (it then never is the nearest by accident of a
    zero vector). Raises OpenSetError for mismatched shapes, fewer than two clips or labels outside [0, K).
    """
    from sklearn.covariance import LedoitWolf

    x, y = np.asarray(embeddings, dtype=np.float64), np.asarray(labels)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) < 2:
        raise OpenSetError(f"embeddings {x.shape} and labels {y.shape}: expected [n, D] and [n] with n >= 2")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise OpenSetError(f"labels must be integer class indices in [0, {n_classes})")
    means = np.tile(x.mean(axis=0), (n_classes, 1))
    for k in np.unique(y):
        means[k] = x[y == k].mean(axis=0)
    estimate = LedoitWolf(assume_centered=True).fit(x - means[y])
    return GaussianClasses(means=means, precision=np.asarray(estimate.precision_, dtype=np.float64),
                           shrinkage=float(estimate.shrinkage_))


def mahalanobis_scores(embeddings: np.ndarray, classes: GaussianClasses) -> np.ndarray:
    """min_k (e - mu_k)^T P (e - mu_k) per row of ``embeddings`` float [n, D]: float64 [n] (squared distance, no unit)."""
    x = np.asarray(embeddings, dtype=np.float64)
    projected = x @ classes.precision  # [n, D]
    quadratic = np.einsum("nd,nd->n", projected, x)[:, None]
    cross = projected @ classes.means.T  # [n, K]
    means_term = np.einsum("kd,dj,kj->k", classes.means, classes.precision, classes.means)[None, :]
    return (quadratic - 2.0 * cross + means_term).min(axis=1)


def bank_rows(count: int, *, max_rows: int, seed: int) -> np.ndarray:
    """Which of ``count`` rows the kNN score's bank keeps: all, or a seeded sample of ``max_rows`` without
    replacement, in their order: int64 [m]. Raises OpenSetError for count < 1 or max_rows < 1."""
    if count < 1 or max_rows < 1:
        raise OpenSetError(f"{count} rows, max_rows {max_rows}: at least one of each needed")
    if count <= max_rows:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(count, size=max_rows, replace=False)).astype(np.int64)


def neighbour_bank(*, embeddings: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """The kNN score's reference rows: the L2-normalised rows of the train tracks' (or clips') ``embeddings``
    float [n, D] that :func:`bank_rows` keeps: float64 [m, D]. Raises OpenSetError for an empty or non-2-d
    ``embeddings`` or ``max_rows`` < 1."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise OpenSetError(f"embeddings {x.shape}: expected [n >= 1, D]")
    return normalised(x[bank_rows(len(x), max_rows=max_rows, seed=seed)])


def leave_one_out_scores(embeddings: np.ndarray, *, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row of ``embeddings`` float [n, D] scored against the bank of its ``rows`` (:func:`bank_rows`) without
    itself: ``1 - cos`` to the k-th nearest other bank row (Sun et al. 2022's score, as a new track would get it from
    a bank of the others): float64 [n]. Raises OpenSetError when fewer than k + 1 bank rows leave k others."""
    if len(rows) < k + 1:
        raise OpenSetError(f"{len(rows)} bank rows: leave-one-out needs k + 1 = {k + 1}")
    x = normalised(embeddings)
    similarity = x @ x[rows].T  # [n, m]
    similarity[rows, np.arange(len(rows))] = -np.inf  # a bank row is not its own neighbour
    return 1.0 - np.sort(similarity, axis=1)[:, -k]


def track_embeddings(window_embeddings: np.ndarray, track_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(track ids in first-seen order, each track's embedding: the mean of its windows' float [n, D] rows, float64
    [T, D]), the track embedding the tagger stores and :meth:`genretag.onnx.contract.OpenSet.track_score` reads.
    Raises OpenSetError when the ids do not match the rows."""
    x, tracks = np.asarray(window_embeddings, dtype=np.float64), np.asarray(track_ids)
    if x.ndim != 2 or tracks.shape != (len(x),):
        raise OpenSetError(f"{tracks.shape[0]} track ids for window embeddings {x.shape}")
    groups = TrackGroups.of(tracks)
    return [str(t) for t in groups.names], groups.means(x) if len(groups) else np.zeros((0, x.shape[1]))


def energy_scores(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(z) per row of ``logits`` float [n, K] (Liu et al. 2020 with T = 1): float64 [n]."""
    return -logsumexp(np.asarray(logits, dtype=np.float64), axis=1)


def max_probability_scores(probabilities: np.ndarray) -> np.ndarray:
    """-max_k p_k per row of ``probabilities`` float [n, K] (Hendrycks and Gimpel 2017): float64 [n]."""
    return -np.asarray(probabilities, dtype=np.float64).max(axis=1)


def track_scores(window_scores: np.ndarray, track_ids: Sequence[str]) -> dict[str, float]:
    """The track-level score, the mean of each track's window scores: {track id: score}."""
    scores, tracks = np.asarray(window_scores, dtype=np.float64), np.asarray(track_ids)
    if scores.shape != tracks.shape:
        raise OpenSetError(f"{scores.shape[0]} window scores for {tracks.shape[0]} track ids")
    groups = TrackGroups.of(tracks)
    return {str(track): float(mean) for track, mean in zip(groups.names, groups.means(scores), strict=True)}


def fit_threshold(validation_scores: Sequence[float], *, accept: float) -> float:
    """The smallest validation track score at or below which at least ``accept`` of the validation tracks lie
    (``numpy.quantile(..., method="higher")``): a track scoring above it is unknown. Raises OpenSetError for no
    scores, non-finite scores or ``accept`` outside (0, 1]."""
    scores = np.asarray(validation_scores, dtype=np.float64)
    if not len(scores) or not np.isfinite(scores).all():
        raise OpenSetError(f"{len(scores)} validation track scores (finite ones needed) to fit the unknown threshold on")
    if not 0.0 < accept <= 1.0:
        raise OpenSetError(f"export.unknown_accept = {accept}: must be in (0, 1]")
    return float(np.quantile(scores, accept, method="higher"))
