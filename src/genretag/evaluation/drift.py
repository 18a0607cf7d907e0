"""Drift of a tagging run against the training data: the predicted-genre distribution (PSI), the
model's embedding mean and the input audio's statistics (level, source sample rate, duration).

The training side travels inside every exported model (ONNX metadata ``genretag.drift_reference``,
:func:`build_reference`), so a tagger image without the repository can compare. Older models
without it: the embedding and audio measures are "n/a" with the reason, PSI falls back to
data/tracks.csv when that is at hand.

PSI, the population stability index (Siddiqi 2006, *Credit Risk Scorecards*, ch. 8; also Yurdakul
2018, "Statistical properties of population stability index"):

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

over categories i, with ``e`` the reference proportions (the training tracks' genres) and ``a``
the observed ones (the genres a run predicted). Empty categories are floored at ``EPSILON`` so that
the logarithm stays finite. Customary reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 a
large shift (the default ``score.drift_psi_warn``). With no shift at all, N x PSI of N observed
tracks is asymptotically chi-square with K - 1 degrees of freedom (Yurdakul 2018), so its mean
sampling noise is about (K - 1) / N: 0.09 for 10 genres and 100 tracks, but 2.25 for 4 tracks. A
run that tagged fewer than ``score.drift_min_tracks`` tracks therefore records every measure and
warns on none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from genretag.families import ClipSet

log = logging.getLogger(__name__)

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
    from genretag.data.ingest import read_table

    return _genre_counts(read_table(tracks_csv))


def _genre_counts(tracks: Any) -> dict[str, int]:
    """Genre -> rows of a tracks table (a pandas DataFrame with column ``genre``)."""
    return {str(genre): int(count) for genre, count in tracks["genre"].value_counts().items()}


# --- the training reference (stored in the model's ONNX metadata) and a run's drift against it -----------

REFERENCE_FORMAT = 1


@dataclass(frozen=True)
class InputStats:
    """Audio statistics of one scored track (what a tagging run compares with the training data).

    ``source_sample_rate`` Hz of the file before resampling; ``duration_s`` the whole track's
    length in seconds; ``loudness_dbfs`` the RMS level, in dBFS, of the windows the model scored
    (silent ones excluded; :func:`window_loudness`).
    """

    source_sample_rate: int
    duration_s: float
    loudness_dbfs: float


def window_loudness(windows: np.ndarray) -> float:
    """RMS level in dBFS of windows float32 [n, S] taken together (genretag.audio.stats: 20 log10 RMS, floor 1e-10)."""
    from genretag.audio.decoding import stats

    return round(stats(np.asarray(windows, dtype=np.float32).ravel(), sample_rate=1).rms_dbfs, 3)


def _moments(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(array.mean()), 4), "sd": round(float(array.std()), 4), "median": round(float(np.median(array)), 4)}


def build_reference(
    *,
    embeddings: np.ndarray,
    clip_loudness_dbfs: Sequence[float],
    genre_counts: Mapping[str, int],
    source_sample_rates: Sequence[int],
    durations_s: Sequence[float],
) -> dict[str, Any]:
    """The drift reference of a model: what tagging runs are compared with (JSON-ready).

    ``embeddings`` float32 [n, D]: the model's embedding of n training clips (n >= 2);
    ``clip_loudness_dbfs`` the same clips' RMS levels (dBFS); ``genre_counts`` training genre ->
    tracks; ``source_sample_rates`` (Hz) and ``durations_s`` (s) of the training tracks as
    validated. ``embedding_mean`` and ``embedding_sd`` (population sd) per dimension are kept at
    full float64 precision (JSON round-trips them exactly): rounding them would make a clip set
    differ from its own reference. Raises ValueError for fewer than 2 clips or no track.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) < 2 or not len(durations_s):
        raise ValueError("a drift reference needs embeddings [n >= 2, D] and at least one training track")
    return {
        "format": REFERENCE_FORMAT,
        "clips": len(embeddings),
        "embedding_mean": [float(v) for v in embeddings.mean(axis=0)],
        "embedding_sd": [float(v) for v in embeddings.std(axis=0)],
        "genre_counts": {str(k): int(v) for k, v in sorted(genre_counts.items())},
        "loudness_dbfs": _moments(clip_loudness_dbfs),
        "source_sample_rate": _moments(source_sample_rates),
        "duration_s": _moments(durations_s),
    }


SPREAD_RESOLUTION = float(np.finfo(np.float32).eps)  # 2**-23: float32 resolution relative to a value


def embedding_shift(reference: Mapping[str, Any], run_mean: np.ndarray) -> float:
    """Mean over the embedding dimensions with spread of |run mean - training mean| / training sd (unitless).

    The per-dimension standardised mean difference (Cohen's d, Cohen 1988, *Statistical Power
    Analysis*, ch. 2) averaged over the dimensions; shift detection on a model's representation
    follows Rabanser, Günnemann & Lipton 2019, "Failing Loudly". 0: the same mean; about 1: the
    run's mean sits one training sd away in a typical dimension.

    Rule: a dimension counts only when its training sd exceeds float32 resolution at its mean,
    ``sd > SPREAD_RESOLUTION * |mean|`` (the embedding is float32, contract v2); a dimension without
    spread (a dead unit, a constant) has no scale to standardise by and is left out, whatever the
    run's mean there. Raises ValueError when the dimensions differ or none has spread.
    """
    mean = np.asarray(reference["embedding_mean"], dtype=np.float64)
    sd = np.asarray(reference["embedding_sd"], dtype=np.float64)
    run_mean = np.asarray(run_mean, dtype=np.float64)
    if run_mean.shape != mean.shape:
        raise ValueError(f"embedding of {run_mean.shape[0] if run_mean.ndim else 0} dimensions, reference has {len(mean)}")
    spread = sd > SPREAD_RESOLUTION * np.abs(mean)
    if not spread.any():
        raise ValueError(f"no embedding dimension varies over the {reference.get('clips', '?')} training clips of the reference")
    return round(float(np.mean(np.abs(run_mean[spread] - mean[spread]) / sd[spread])), 4)


def run_drift(
    reference: Mapping[str, Any] | None,
    *,
    audio: Sequence[InputStats],
    embedding_sum: np.ndarray | None,
    embedding_windows: int,
    genre_counts: Mapping[str, int],
    fallback_genres: Mapping[str, int] | None = None,
    min_tracks: int = 1,
) -> dict[str, Any]:
    """A tagging run's drift from the training data (JSON-ready; None values where not measured).

    Keys: ``genre_psi`` (:func:`genre_psi` against the reference's genre counts, else
    ``fallback_genres``), ``embedding_shift`` (:func:`embedding_shift` of the run's window-mean
    embedding), ``loudness_dbfs`` / ``loudness_shift_db`` (mean of the tracks' levels, and minus
    the training clips' mean), ``source_sample_rate_median``, ``duration_s_median``,
    ``below_model_rate`` (tracks whose source rate is under the training median: their top band
    is empty), ``tracks``, ``reference`` ("model" or the reason there is none), and ``min_tracks``
    (score.drift_min_tracks: fewer ``tracks`` than this and :func:`drift_warnings` warns on nothing).
    """
    genres = dict(reference.get("genre_counts", {})) if reference else dict(fallback_genres or {})
    drift: dict[str, Any] = {
        "tracks": len(audio),
        "min_tracks": min_tracks,
        "reference": "model" if reference else "n/a: the model carries no drift reference",
        "genre_psi": genre_psi(genres, genre_counts),
        "embedding_shift": None, "loudness_dbfs": None, "loudness_shift_db": None,
        "source_sample_rate_median": None, "duration_s_median": None, "below_model_rate": None,
    }
    if audio:
        loudness = round(float(np.mean([a.loudness_dbfs for a in audio])), 3)
        drift.update(loudness_dbfs=loudness,
                     source_sample_rate_median=float(np.median([a.source_sample_rate for a in audio])),
                     duration_s_median=round(float(np.median([a.duration_s for a in audio])), 3))
        if reference:
            drift["loudness_shift_db"] = round(loudness - float(reference["loudness_dbfs"]["mean"]), 3)
            training_rate = float(reference["source_sample_rate"]["median"])
            drift["below_model_rate"] = sum(a.source_sample_rate < training_rate for a in audio)
    if reference and embedding_sum is not None and embedding_windows > 0:
        try:
            drift["embedding_shift"] = embedding_shift(reference, np.asarray(embedding_sum) / embedding_windows)
        except ValueError as exc:
            drift["reference"] = f"n/a: {exc}"
    return drift


def drift_warnings(drift: Mapping[str, Any], *, psi_limit: float, embedding_limit: float, loudness_limit_db: float) -> list[str]:
    """One line per drift measure past its limit (params score.drift_psi_warn, drift_embedding_warn,
    drift_loudness_warn_db); [] when none is, none was measured, or the run tagged fewer than its
    ``min_tracks`` tracks (:func:`too_few_tracks`)."""
    warnings: list[str] = []
    if too_few_tracks(drift):
        return warnings
    if drift.get("genre_psi") is not None and drift["genre_psi"] > psi_limit:
        warnings.append(drift_warning(drift["genre_psi"], limit=psi_limit))
    if drift.get("embedding_shift") is not None and drift["embedding_shift"] > embedding_limit:
        warnings.append(f"the run's mean embedding drifts from the training clips': {drift['embedding_shift']:.3f} "
                        f"(mean |delta mean| / sd) > score.drift_embedding_warn {embedding_limit:g}")
    if drift.get("loudness_shift_db") is not None and abs(drift["loudness_shift_db"]) > loudness_limit_db:
        warnings.append(f"the run's audio is {drift['loudness_shift_db']:+.1f} dB from the training clips' mean level "
                        f"({drift['loudness_dbfs']:.1f} dBFS) > score.drift_loudness_warn_db {loudness_limit_db:g}")
    return warnings


def too_few_tracks(drift: Mapping[str, Any]) -> str | None:
    """Why a run's drift is recorded but not warned on (fewer tracks than its ``min_tracks``), else None."""
    tracks, needed = drift.get("tracks", 0), drift.get("min_tracks", 1)
    if tracks >= needed:
        return None
    return (f"{tracks} track(s) tagged, fewer than score.drift_min_tracks {needed}: drift is recorded, not warned on "
            "(too few tracks for the measures to tell a shift from sampling noise)")


def drift_markdown(drift: Mapping[str, Any], warnings: Sequence[str]) -> str:
    """The drift section of a run's report (markdown)."""
    def show(value: Any) -> str:
        return "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    rows = [(key, show(drift.get(key))) for key in ("genre_psi", "embedding_shift", "loudness_dbfs", "loudness_shift_db",
                                                    "source_sample_rate_median", "below_model_rate", "duration_s_median")]
    lines = ["## Drift against the training data", "", f"Reference: {drift.get('reference')}; {drift.get('tracks', 0)} tracks scored.", "",
             "| measure | value |", "| --- | ---: |", *(f"| {key} | {value} |" for key, value in rows), ""]
    lines += [f"**Warning:** {line}" for line in warnings] or [too_few_tracks(drift) or "No drift measure past its limit."]
    return "\n".join(lines) + "\n"


def training_reference(family: Any, *, train: ClipSet, tracks_csv: Path, max_clips: int, seed: int,
                       batch_size: int = 64) -> dict[str, Any]:
    """:func:`build_reference` for a trained model family (genretag.families.Family) from its training split.

    ``train``: the train split's clips (waveforms float32 [n, S] at the family's rate, one track_id
    per clip); the family's own ``predict`` embeds up to ``max_clips`` of them (a seeded random
    choice), whose RMS levels are measured too. Genre counts, source sample rates and durations
    come from the rows of the validated tracks (data/tracks.csv columns track_id, genre,
    original_sample_rate, duration_s) whose track_id is one of ``train``'s: the validation and
    test tracks are not training data. {} (no reference; logged) when either side is empty.
    """
    from genretag.audio.decoding import stats
    from genretag.data.ingest import read_table

    waveforms = train.waveforms
    tracks = read_table(tracks_csv) if tracks_csv.is_file() else None
    needed = {"track_id", "original_sample_rate", "duration_s"}
    if tracks is not None and needed <= set(tracks.columns):
        tracks = tracks[tracks["track_id"].isin(set(train.track_ids))]
    if len(waveforms) < 2 or tracks is None or not needed <= set(tracks.columns) or not len(tracks):
        log.info("no drift reference: %d training clips; %s %s", len(waveforms), tracks_csv,
                 "lacks training-split tracks with original_sample_rate and duration_s" if tracks_csv.is_file() else "missing")
        return {}
    chosen = np.sort(np.random.default_rng(seed).choice(len(waveforms), size=min(len(waveforms), max_clips), replace=False))
    clips = np.asarray(waveforms[chosen], dtype=np.float32)
    embeddings = np.concatenate([family.predict(clips[start : start + batch_size]).embedding
                                 for start in range(0, len(clips), batch_size)])
    return build_reference(
        embeddings=embeddings,
        clip_loudness_dbfs=[stats(clip, sample_rate=1).rms_dbfs for clip in clips],
        genre_counts=_genre_counts(tracks),
        source_sample_rates=[int(float(v)) for v in tracks["original_sample_rate"]],
        durations_s=[float(v) for v in tracks["duration_s"]],
    )
