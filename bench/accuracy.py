"""Accuracy of each model family on a GTZAN-layout folder: repeated stratified track-level cross-validation.

    python bench/accuracy.py --data ../shared/gtzan-sample                       # 20 splits of 70/30
    python bench/accuracy.py --data DIR --families musicnn-msd mfcc-logreg --splits 20
    python bench/accuracy.py --data DIR --families paper-exp8 --splits 3
    python bench/accuracy.py --data DIR --families musicnn-msd paper-exp8 --splits 5 --int8

Each split puts 30 % of every genre's tracks in the test set (whole tracks: no clip of a test
track is trained on). Clips are the consecutive whole 3-s clips of each track, decoded and
resampled (soxr) to the family's rate. Clip accuracy: top-1 per clip; track accuracy: top-1 of
the mean clip probability per track. Families whose only trained part is a head over a frozen
embedding (musicnn-msd, mfcc-logreg) embed every clip once and refit the head per split, which
is the same as refitting the family (the head's C is chosen per split by inner cross-validation on
that split's training tracks only; each split's C is recorded). Embeddings are cached under
bench/results/embeddings/ by a hash of the clips and the front end. Keras families train per split: on the split's training
tracks minus one track per genre, which early stopping watches.

With ``--int8``, every split's trained model is also exported (float32 ONNX) and quantised
(:func:`genretag.training.int8.quantize_network`, QOperator, calibrated on 64 of the split's training
clips), and both graphs are scored on the split's test clips: the table adds their track
accuracies and the mean paired change int8 - float32 (percentage points, ± sd over splits).

Track confidence (issue 24): the top value of :func:`genretag.onnx.contract.track_probabilities` on each test
track, before (T = 1: the mean clip probability) and after the track temperature, which for the heads over frozen
features is fitted as the export fits it when validation tracks are few: on out-of-fold predictions over the split's
training tracks (stratified track-level ``--track-folds``-fold; each fold's head refitted with the C the split chose),
:func:`genretag.evaluation.calibration.calibrate_tracks`. Reported: track ECE (10 equal-width bins) mean ± sd over
splits, before and after, and at ``score.review_below`` (params.yaml) the share of test tracks flagged and the share
of flagged tracks that were wrong (pooled over splits). The bench applies no clip temperature (the export fits one on
the validation clips first; the track temperature is fitted on top of whatever the clips give). Keras families: T = 1.

Also printed: parameters, ONNX size of the family trained on every track, and CPU clips/s of
that ONNX graph (onnxruntime CPU provider, batch 64, median of 5 runs after one warm-up).
Writes JSON to bench/results/accuracy-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import genretag  # noqa: F401  - quiet environment before TensorFlow loads
from genretag.core.atomic import atomic_open
from genretag.audio.decoding import decode
from genretag.core.config import load_params, project_root
from genretag.data.ingest import discover_sources
from genretag.families import ClipSet, clip_windows, create
from genretag.families.heads import FeatureHeadFamily


def load_corpus(data: Path, *, genres: list[str], sample_rate: int, clip_samples: int) -> tuple[ClipSet, np.ndarray]:
    """Every whole clip of every track under ``data`` at ``sample_rate``; also each clip's genre-stratum track index."""
    waveforms, labels, tracks = [], [], []
    for source in discover_sources(data, genres=genres):
        clips = clip_windows(decode(source.path, sample_rate=sample_rate).waveform, clip_samples=clip_samples)
        waveforms.append(clips)
        labels += [genres.index(source.genre)] * len(clips)
        tracks += [source.track_id] * len(clips)
    clip_ids = tuple(f"{t}.{i}" for i, t in enumerate(tracks))
    return ClipSet(np.concatenate(waveforms), np.array(labels, np.int64), tuple(tracks), clip_ids, sample_rate), np.array(tracks)


def track_splits(tracks: np.ndarray, labels: np.ndarray, *, splits: int, test_size: float, seed: int):
    """(train track ids, test track ids) per split, stratified by genre (scikit-learn StratifiedShuffleSplit)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    names, first = np.unique(tracks, return_index=True)
    genre = labels[first]
    splitter = StratifiedShuffleSplit(n_splits=splits, test_size=test_size, random_state=seed)
    for train, test in splitter.split(names, genre):
        yield set(names[train]), set(names[test])


def subset(clips: ClipSet, mask: np.ndarray) -> ClipSet:
    index = np.flatnonzero(mask)
    return ClipSet(clips.waveforms[index], clips.labels[index], tuple(np.array(clips.track_ids)[index]),
                   tuple(np.array(clips.clip_ids)[index]), clips.sample_rate)


def accuracies(probabilities: np.ndarray, labels: np.ndarray, tracks: np.ndarray) -> tuple[float, float]:
    """Clip top-1 accuracy, and track top-1 accuracy of the mean clip probability."""
    clip = float(np.mean(probabilities.argmax(1) == labels))
    hits = [probabilities[tracks == t].mean(0).argmax() == labels[tracks == t][0] for t in np.unique(tracks)]
    return clip, float(np.mean(hits))


def cached_embedding(family: FeatureHeadFamily, clips: ClipSet) -> np.ndarray:
    """``family.embed(clips.waveforms)``, cached under bench/results/embeddings/ by a hash of the clips and the front end.

    The key is SHA-256 of the float32 waveforms plus the family's name, preprocessing and frozen-part
    description, so a changed corpus, resampler or front end never reuses a stale embedding.
    """
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(clips.waveforms, dtype=np.float32).tobytes())
    digest.update(json.dumps([family.name, family.preprocessing(), family.describe_frozen()], sort_keys=True, default=str).encode())
    path = project_root() / "bench" / "results" / "embeddings" / f"{family.name}-{digest.hexdigest()[:24]}.npy"
    if path.exists():
        return np.load(path)
    embedding = family.embed(clips.waveforms)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        np.save(handle, embedding)
    return embedding


def validation_tracks(train_tracks: set[str], tracks: np.ndarray, labels: np.ndarray) -> set[str]:
    """One training track per genre held out for early stopping (the first in sorted order)."""
    held: dict[int, str] = {}
    for track in sorted(train_tracks):
        held.setdefault(int(labels[tracks == track][0]), track)
    return set(held.values())


def int8_accuracies(family, clips: ClipSet, train: np.ndarray, test: np.ndarray, tracks: np.ndarray, *, seed: int) -> dict:
    """Track accuracy of the family's float32 ONNX graph and of its int8 graph on the ``test`` clips (masks)."""
    from genretag.onnx.session import cpu_session, predict_waveforms
    from genretag.training.int8 import quantize_network

    proto = family.to_onnx()
    chosen = np.random.default_rng(seed).choice(np.flatnonzero(train), size=min(64, int(train.sum())), replace=False)
    quantised = quantize_network(proto, calibration=clips.waveforms[np.sort(chosen)])
    out = {}
    for name, graph in (("onnx_float32", proto), ("int8", quantised)):
        probabilities = predict_waveforms(cpu_session(graph.SerializeToString()), clips.waveforms[test]).probabilities
        out[f"{name}_clip_accuracy"], out[f"{name}_track_accuracy"] = accuracies(probabilities, clips.labels[test], tracks[test])
    return out


TRACK_VARIANTS = ("mean-prob", "mean-log", "mean-prob pooled", "mean-log pooled", "mean-prob shrunk")
"""Ways to fit the track temperature compared by the bench (issue 24): ``mean-prob`` aggregates a track's windows as
log(mean p) (the shipped aggregation, :func:`genretag.onnx.contract.track_probabilities`), ``mean-log`` as mean(log p)
(a geometric mean); ``pooled`` fits T on out-of-fold predictions of ``--track-repeats`` repetitions of the k-fold
(each training track counted once per repetition); ``shrunk`` pulls log T toward 0 by n / (n + SHRINK_TRACKS)."""
SHIPPED_VARIANT = "mean-prob"  # what genretag.onnx.contract.track_probabilities and the export do
SHRINK_TRACKS = 20  # the n0 of the shrunk variant: with n0 fitting tracks, log T is halved


def track_scores(probabilities: np.ndarray, labels: np.ndarray, tracks: np.ndarray, *, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(float [T, K] track probabilities before any track temperature, int [T] truth): ``mean-prob`` the mean window
    probability, ``mean-log`` softmax of the mean window log-probability."""
    from scipy.special import softmax

    from genretag.evaluation.calibration import track_means
    from genretag.onnx.contract import PROBABILITY_FLOOR

    if how.startswith("mean-log"):
        shift = -np.log(PROBABILITY_FLOOR)  # log p + shift >= 0: track_means averages it like a probability
        shifted = np.maximum(np.log(np.maximum(probabilities, PROBABILITY_FLOOR)) + shift, 0.0)  # rounding may leave -1e-15
        logs, truth = track_means(shifted, clip_tracks=tracks, clip_labels=labels)
        return softmax(logs, axis=1), truth
    return track_means(probabilities, clip_tracks=tracks, clip_labels=labels)


def track_confidence(probabilities: np.ndarray, labels: np.ndarray, tracks: np.ndarray, *, temperature: float,
                     review_below: float, how: str = "mean-prob") -> dict:
    """Track ECE (10 bins), the expected ECE of a perfectly calibrated model with the same confidences on as many tracks
    (the noise floor, 200 simulated draws of the outcomes), and the flagged/wrong counts at ``review_below``."""
    from genretag.evaluation.calibration import TRACK_ECE_BINS, expected_calibration_error, temperature_scaled

    means, truth = track_scores(probabilities, labels, tracks, how=how)
    scaled = temperature_scaled(probabilities=means, temperature=temperature)
    confidence, wrong = scaled.max(1), scaled.argmax(1) != truth
    flagged = confidence < review_below
    rng = np.random.default_rng(0)
    floor = []
    for _ in range(200):  # outcomes drawn right with probability = confidence: calibrated by construction
        right = rng.random(len(confidence)) < confidence
        floor.append(expected_calibration_error(probabilities=scaled, labels=np.where(right, scaled.argmax(1), (scaled.argmax(1) + 1) % scaled.shape[1]),
                                                bins=TRACK_ECE_BINS))
    return {"track_ece": expected_calibration_error(probabilities=scaled, labels=truth, bins=TRACK_ECE_BINS),
            "ece_floor": float(np.mean(floor)), "confidence": confidence.tolist(), "right": (~wrong).tolist(),
            "mean_confidence": float(confidence.mean()), "flagged": int(flagged.sum()), "flagged_wrong": int((flagged & wrong).sum()),
            "wrong": int(wrong.sum()), "tracks": int(len(truth))}


def out_of_fold_temperatures(features: np.ndarray, clips: ClipSet, train: np.ndarray, *, C: float, labels: tuple[str, ...],
                             folds: int, repeats: int, seed: int) -> dict[str, float]:
    """Each of :data:`TRACK_VARIANTS`' track temperatures, fitted on out-of-fold head predictions over the ``train`` clips
    (mask) with :func:`genretag.evaluation.calibration.calibrate_tracks` (T = 1 where it would not lower the fit ECE)."""
    from genretag.evaluation.calibration import TRACK_SOURCE_OUT_OF_FOLD, calibrate_tracks
    from genretag.families import track_folds
    from genretag.families.heads import LinearHead

    index = np.flatnonzero(train)
    tracks, y = np.asarray(clips.track_ids)[index], clips.labels[index]
    splits = track_folds(tracks, y, folds=folds, repeats=repeats, seed=seed)
    per_repeat = len(splits) // repeats
    parts = []  # (probabilities, held indices) per fold, repetition-major
    for fit, held in splits:
        head = LinearHead(n_classes=len(labels), C=C)
        head.fit(features[index[fit]], y[fit], seed=seed)
        parts.append((head.predict_proba(features[index[held]]), held))
    out = {}
    for variant in TRACK_VARIANTS:
        used = parts if "pooled" in variant else parts[:per_repeat]
        scores, truth = [], []
        for number in range(len(used) // per_repeat):
            chunk = used[number * per_repeat:(number + 1) * per_repeat]
            held = np.concatenate([h for _, h in chunk])
            s, t = track_scores(np.concatenate([p for p, _ in chunk]), y[held], tracks[held], how=variant)
            scores.append(s)
            truth.append(t)
        record = calibrate_tracks(fit_probabilities=np.concatenate(scores), fit_labels=np.concatenate(truth),
                                  source=TRACK_SOURCE_OUT_OF_FOLD, min_tracks=2)
        temperature = record.temperature
        if "shrunk" in variant:
            n = len(np.concatenate(truth))
            temperature = float(np.exp(n / (n + SHRINK_TRACKS) * np.log(temperature)))
        out[variant] = temperature
    return out


def cross_validate(
    candidate: str, clips: ClipSet, tracks: np.ndarray, *, labels: tuple[str, ...], splits: int, seed: int, epochs: int | None,
    int8: bool = False, track_folds: int = 5, track_repeats: int = 4, review_below: float = 0.5,
) -> dict:
    options = {"max_epochs": epochs} if epochs and not candidate.startswith(("musicnn", "mfcc")) else {}
    family = create(candidate, **options)
    quiet = lambda message: None  # noqa: E731
    frozen = cached_embedding(family, clips) if isinstance(family, FeatureHeadFamily) else None
    results = []
    for number, (train_tracks, test_tracks) in enumerate(track_splits(tracks, clips.labels, splits=splits, test_size=0.3, seed=seed)):
        started = time.perf_counter()
        test = np.isin(tracks, list(test_tracks))
        if frozen is not None:
            family.head.n_classes = len(labels)
            facts = family.head.fit(frozen[~test], clips.labels[~test], seed=seed + number, groups=tracks[~test])
            family.labels, family.embedding_size = labels, int(frozen.shape[1])
            probabilities = family.head.predict_proba(frozen[test])
            temperatures = out_of_fold_temperatures(frozen, clips, ~test, C=facts["head_C"], labels=labels, folds=track_folds,
                                                    repeats=track_repeats, seed=seed + number)
            chosen = {"head_C": facts["head_C"], "track_temperature": temperatures[SHIPPED_VARIANT]}
        else:
            held = np.isin(tracks, list(validation_tracks(train_tracks, tracks, clips.labels)))
            family = create(candidate, **options)
            family.fit(subset(clips, ~test & ~held), subset(clips, held), labels=labels, seed=seed + number, log=quiet)
            probabilities = family.predict(clips.waveforms[test]).probabilities
            temperatures = {variant: 1.0 for variant in TRACK_VARIANTS}
            chosen = {"track_temperature": 1.0}
        clip, track = accuracies(probabilities, clips.labels[test], tracks[test])
        before = track_confidence(probabilities, clips.labels[test], tracks[test], temperature=1.0, review_below=review_below)
        variants = {variant: track_confidence(probabilities, clips.labels[test], tracks[test], temperature=temperature,
                                              review_below=review_below, how=variant) for variant, temperature in temperatures.items()}
        after = variants[SHIPPED_VARIANT]
        result = {"clip_accuracy": clip, "track_accuracy": track, **chosen,
                  **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()},
                  "variants": {variant: {"temperature": temperatures[variant], **facts_} for variant, facts_ in variants.items()}}
        if int8:
            result |= int8_accuracies(family, clips, ~test, test, tracks, seed=seed + number)
            result["int8_track_change"] = result["int8_track_accuracy"] - result["onnx_float32_track_accuracy"]
        results.append({**result, "seconds": round(time.perf_counter() - started, 2)})
        extra = (f"; ONNX float32 track {result['onnx_float32_track_accuracy']:.3f}, int8 track {result['int8_track_accuracy']:.3f}"
                 if int8 else "")
        print(f"  {candidate} split {number + 1}/{splits}: clip {clip:.3f}, track {track:.3f}, track ECE {before['track_ece']:.3f} -> "
              f"{after['track_ece']:.3f} (T_track {chosen['track_temperature']:.3g}){extra}", flush=True)
    keys = [k for k in results[0] if k != "seconds" and isinstance(results[0][k], int | float) and not isinstance(results[0][k], bool)]
    return {"splits": results, **{f"{k}_{s}": float(f(np.array([r[k] for r in results]))) for k in keys
                                  for s, f in (("mean", np.mean), ("sd", lambda a: np.std(a, ddof=1) if len(a) > 1 else 0.0))}}


def onnx_facts(candidate: str, clips: ClipSet, *, labels: tuple[str, ...], seed: int, epochs: int | None) -> dict:
    """Train on every clip, export, and time the ONNX graph on CPU at batch 64."""
    import onnxruntime as ort

    options = {"max_epochs": epochs} if epochs and not candidate.startswith(("musicnn", "mfcc")) else {}
    family = create(candidate, **options)
    family.fit(clips, subset(clips, np.zeros(len(clips), bool)), labels=labels, seed=seed, log=lambda m: None)
    model = family.to_onnx().SerializeToString()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    batch = np.resize(clips.waveforms, (64, clips.waveforms.shape[1])).astype(np.float32)
    session.run(None, {"waveform": batch})
    times = []
    for _ in range(5):
        started = time.perf_counter()
        session.run(None, {"waveform": batch})
        times.append(time.perf_counter() - started)
    described = family.describe()
    parameters = int(described.get("parameters") or described.get("frozen_parameters", 0) + described.get("trained_parameters", 0))
    return {"parameters": parameters, "onnx_bytes": len(model), "cpu_clips_per_second": round(64 / float(np.median(times)), 1),
            "describe": described}


def variant_row(family: str, variant: str, per_split: list[dict], splits: list[dict]) -> str:
    """One row of the track-temperature table: per-split ECE mean ± sd, how many splits got worse than T = 1, the ECE of
    every split's test tracks pooled, the noise floor, and the wrong share among the tracks flagged at review_below."""
    from genretag.evaluation.calibration import TRACK_ECE_BINS, expected_calibration_error

    ece = np.array([s["track_ece"] for s in per_split])
    worse = sum(s["track_ece"] > b["track_ece_before"] + 1e-12 for s, b in zip(per_split, splits, strict=True))
    confidence = np.concatenate([s["confidence"] for s in per_split])
    right = np.concatenate([s["right"] for s in per_split]).astype(bool)
    # ECE needs only the top confidence and whether it was right: the top class 0, the rest spread over 100 classes
    # (each <= 0.01, below any top-1 confidence of K <= 100 genres)
    spread = np.column_stack([confidence, np.repeat(((1 - confidence) / 100)[:, None], 100, axis=1)])
    pooled = expected_calibration_error(probabilities=spread, labels=np.where(right, 0, 1), bins=TRACK_ECE_BINS)
    flagged, wrong = sum(s["flagged"] for s in per_split), sum(s["flagged_wrong"] for s in per_split)
    temperature = np.array([s["temperature"] for s in per_split])
    share = f"{100 * wrong / flagged:.0f} % of {flagged}" if flagged else "none flagged"
    return (f"| {family} | {variant} | {temperature.mean():.2f} ± {temperature.std(ddof=1):.2f} | {ece.mean():.3f} ± {ece.std(ddof=1):.3f} | "
            f"{worse} of {len(per_split)} | {pooled:.3f} on {len(right)} | {np.mean([s['ece_floor'] for s in per_split]):.3f} | {share} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="GTZAN-layout folder: <genre>/<genre>.000NN.<ext>")
    parser.add_argument("--families", nargs="+", default=["musicnn-msd", "mfcc-logreg", "paper-exp8"])
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--trained-splits", type=int, default=None, help="splits for Keras families (default: --splits)")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs of Keras families (default: the family's)")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--int8", action="store_true", help="also score each split's float32 ONNX and its int8 quantisation")
    parser.add_argument("--track-folds", type=int, default=5, help="folds of the out-of-fold track temperature fit")
    parser.add_argument("--track-repeats", type=int, default=4, help="repetitions of that k-fold for the pooled variants")
    parser.add_argument("--no-onnx-facts", action="store_true", help="skip training on every track for parameters/size/clips/s")
    args = parser.parse_args()

    params = load_params(project_root() / "params.yaml")
    genres, review_below = list(params.genres), params.score.review_below
    labels = tuple(genres)
    rows = []
    for candidate in args.families:
        family = create(candidate)
        clips, tracks = load_corpus(args.data, genres=genres, sample_rate=family.sample_rate, clip_samples=family.clip_samples)
        keras_family = not isinstance(family, FeatureHeadFamily)
        splits = args.trained_splits if keras_family and args.trained_splits else args.splits
        print(f"{candidate}: {len(np.unique(tracks))} tracks, {len(clips)} clips at {family.sample_rate} Hz, {splits} splits", flush=True)
        started = time.perf_counter()
        result = cross_validate(candidate, clips, tracks, labels=labels, splits=splits, seed=args.seed, epochs=args.epochs, int8=args.int8,
                                track_folds=args.track_folds, track_repeats=args.track_repeats,
                                review_below=review_below)
        facts = ({"parameters": 0, "onnx_bytes": 0, "cpu_clips_per_second": float("nan")} if args.no_onnx_facts
                 else onnx_facts(candidate, clips, labels=labels, seed=args.seed, epochs=args.epochs))
        rows.append({"family": candidate, "n_splits": splits, "tracks": int(len(np.unique(tracks))), "clips": len(clips),
                     **result, **facts, "seconds": round(time.perf_counter() - started, 1)})
        for variant in TRACK_VARIANTS:  # at once: a long run that fails later keeps this family's figures
            print(variant_row(candidate, variant, [s["variants"][variant] for s in result["splits"]], result["splits"]), flush=True)

    print("\n| family | splits | clip accuracy | track accuracy | parameters | ONNX MB | CPU clips/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['family']} | {r['n_splits']} | {100 * r['clip_accuracy_mean']:.1f} ± {100 * r['clip_accuracy_sd']:.1f} | "
              f"{100 * r['track_accuracy_mean']:.1f} ± {100 * r['track_accuracy_sd']:.1f} | {r['parameters']:,} | "
              f"{r['onnx_bytes'] / 1e6:.1f} | {r['cpu_clips_per_second']:.0f} |")
    print(f"\n| family | splits | track accuracy | track ECE before | track ECE after | mean confidence before -> after | "
          f"flagged (< {review_below:g}) before -> after | wrong among flagged before -> after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        pooled = {k: sum(s[k] for s in r["splits"]) for k in ("tracks_before", "flagged_before", "flagged_after", "flagged_wrong_before",
                                                             "flagged_wrong_after")}
        share = lambda wrong, flagged: f"{100 * wrong / flagged:.0f} % of {flagged}" if flagged else "none flagged"  # noqa: E731
        print(f"| {r['family']} | {r['n_splits']} | {100 * r['track_accuracy_mean']:.1f} ± {100 * r['track_accuracy_sd']:.1f} | "
              f"{r['track_ece_before_mean']:.3f} ± {r['track_ece_before_sd']:.3f} | {r['track_ece_after_mean']:.3f} ± {r['track_ece_after_sd']:.3f} | "
              f"{r['mean_confidence_before_mean']:.2f} -> {r['mean_confidence_after_mean']:.2f} | "
              f"{100 * pooled['flagged_before'] / pooled['tracks_before']:.0f} % -> {100 * pooled['flagged_after'] / pooled['tracks_before']:.0f} % | "
              f"{share(pooled['flagged_wrong_before'], pooled['flagged_before'])} -> {share(pooled['flagged_wrong_after'], pooled['flagged_after'])} |")
    print("\n| family | track temperature fit | T mean ± sd | track ECE per split | splits worse than T = 1 | pooled track ECE "
          "(all splits' test tracks) | ECE of a calibrated model, same confidences (noise floor) | wrong among flagged |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(variant_row(r["family"], "none (T = 1)", [{**{k[:-7]: v for k, v in s.items() if k.endswith("_before")}, "temperature": 1.0}
                                                        for s in r["splits"]], r["splits"]))
        for variant in TRACK_VARIANTS:
            print(variant_row(r["family"], variant, [s["variants"][variant] for s in r["splits"]], r["splits"]))
    if args.int8:
        print("\n| family | splits | ONNX float32 track accuracy | int8 track accuracy | int8 - float32 (points) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['family']} | {r['n_splits']} | {100 * r['onnx_float32_track_accuracy_mean']:.1f} ± "
                  f"{100 * r['onnx_float32_track_accuracy_sd']:.1f} | {100 * r['int8_track_accuracy_mean']:.1f} ± "
                  f"{100 * r['int8_track_accuracy_sd']:.1f} | {100 * r['int8_track_change_mean']:+.1f} ± {100 * r['int8_track_change_sd']:.1f} |")
    out = project_root() / "bench" / "results" / f"accuracy-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": str(args.data), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                               "seed": args.seed, "rows": rows}, indent=2, default=str), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
