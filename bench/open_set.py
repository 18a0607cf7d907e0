"""Out-of-taxonomy detection on a GTZAN-layout folder: leave two genres out, train on the other eight.

    python bench/open_set.py --data ../shared/gtzan-sample                     # all 45 genre pairs, musicnn-msd
    python bench/open_set.py --data DIR --families musicnn-msd mfcc-logreg --pairs 20
    python bench/open_set.py --data ../shared/gtzan-sample --family-option embedding_layer=pooled   # musicnn's 1,506-d layer

For every pair of held-out genres (all 45, or ``--pairs`` random ones): the eight known genres' tracks
are split per genre into train / validation / test tracks (``--train-tracks``, ``--validation-tracks``,
the rest test; seeded per pair). The family's head (:class:`genretag.families.heads.LinearHead`, C by
inner cross-validation, as the candidate stage fits it) is fitted on the train clips' frozen
embeddings (cached per clip with bench/accuracy.py's :func:`cached_embedding`), a temperature on the
validation clips (:func:`genretag.evaluation.calibration.calibrate`, as the export does), and every
method's threshold on the validation tracks (:func:`genretag.evaluation.open_set.fit_threshold`,
``--accept``, default params ``export.unknown_accept``). A track's score is the mean of its windows'
scores (the definition the exported graphs use). Then the held-out genres' tracks (should be unknown)
and the known genres' test tracks (should not) are scored:

- AUROC: unknown tracks against known test tracks, by the track score (threshold-free);
- accepted: the share of known test tracks at or below the threshold (the target is ``--accept``);
- rejected unknown: the share of held-out tracks above it;
- accuracy (accepted): top-1 accuracy of the accepted known tracks; closed-set accuracy of all known test tracks.

Methods: ``track-knn`` (the shipped score: the cosine distance of a track's embedding, the mean of its windows',
to the k-th nearest train track's; Sun et al. 2022 applied to tracks; k = params export.unknown_neighbours or
``--neighbours``), ``knn`` (the same per window, to the k-th nearest train clip, then the track's mean), ``mahalanobis`` (Lee et al. 2018, Ledoit-Wolf shared
covariance of the train clips' embeddings), ``energy`` (Liu et al. 2020, the head's own logits, T = 1; from the graph's log-probabilities
it would be identically 0), ``max-probability`` (Hendrycks and Gimpel 2017, calibrated probabilities).
Mean ± sd over pairs. Writes JSON to bench/results/open_set-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import genretag  # noqa: F401  - quiet environment before TensorFlow loads
from bench.accuracy import cached_embedding, load_corpus
from genretag.core.config import load_params, project_root
from genretag.evaluation.calibration import calibrate, temperature_scaled
from genretag.evaluation.open_set import (
    energy_scores,
    fit_gaussian_classes,
    fit_threshold,
    mahalanobis_scores,
    max_probability_scores,
    neighbour_bank,
    track_embeddings,
    track_scores,
)
from genretag.families import create
from genretag.onnx.contract import knn_scores

METHODS = ("track-knn", "knn", "mahalanobis", "energy", "max-probability")


def split_known(tracks: np.ndarray, labels: np.ndarray, known: list[int], *, n_train: int, n_validation: int,
                rng: np.random.Generator) -> tuple[set, set, set]:
    """Train, validation and test track ids of the ``known`` genres: per genre a seeded shuffle of its tracks."""
    train, validation, test = set(), set(), set()
    for genre in known:
        names = np.unique(tracks[labels == genre])
        rng.shuffle(names)
        train |= set(names[:n_train])
        validation |= set(names[n_train : n_train + n_validation])
        test |= set(names[n_train + n_validation :])
    return train, validation, test


def pair_result(family, embedding: np.ndarray, labels: np.ndarray, tracks: np.ndarray, held_out: tuple[int, int], *,
                n_classes: int, n_train: int, n_validation: int, accept: float, min_clips: int, seed: int, k: int,
                bank_rows: int) -> dict:
    """Every method's AUROC, accepted share, rejected-unknown share and accuracies for one held-out pair."""
    from sklearn.metrics import roc_auc_score

    known = [k for k in range(n_classes) if k not in held_out]
    remap = {k: i for i, k in enumerate(known)}  # the head sees 8 classes
    train_t, validation_t, test_t = split_known(tracks, labels, known, n_train=n_train, n_validation=n_validation,
                                                rng=np.random.default_rng(seed))
    train, validation, test = (np.isin(tracks, list(s)) for s in (train_t, validation_t, test_t))
    unknown = np.isin(labels, held_out)
    y = np.array([remap.get(int(k), -1) for k in labels])
    head = family.head
    head.n_classes = len(known)
    facts = head.fit(embedding[train], y[train], seed=seed, groups=tracks[train])
    calibration = calibrate(validation_probabilities=head.predict_proba(embedding[validation]), validation_labels=y[validation],
                            test_probabilities=np.zeros((0, len(known))), test_labels=np.zeros(0, np.int64), min_clips=min_clips)
    scored = validation | test | unknown
    probabilities = np.zeros((len(labels), len(known)))
    probabilities[scored] = temperature_scaled(probabilities=head.predict_proba(embedding[scored]),
                                               temperature=calibration.temperature)
    classes = fit_gaussian_classes(embeddings=embedding[train], labels=y[train], n_classes=len(known))
    bank = neighbour_bank(embeddings=embedding[train], max_rows=bank_rows, seed=seed)
    track_bank = neighbour_bank(embeddings=track_embeddings(embedding[train], tracks[train])[1], max_rows=bank_rows, seed=seed)
    window = {
        "knn": np.where(scored, 0.0, np.nan),
        "mahalanobis": np.where(scored, 0.0, np.nan),
        "energy": np.full(len(labels), np.nan),
        "max-probability": max_probability_scores(probabilities),
    }
    window["knn"][scored] = knn_scores(embedding[scored], bank, k=k)
    window["mahalanobis"][scored] = mahalanobis_scores(embedding[scored], classes)
    window["energy"][scored] = energy_scores(head.pipeline.decision_function(embedding[scored]))

    def by_track(mask: np.ndarray, values: np.ndarray | None) -> tuple[list[str], np.ndarray]:
        if values is None:  # track-knn: scored on each track's embedding, as OpenSet.track_score does
            names, vectors = track_embeddings(embedding[mask], tracks[mask])
            return names, knn_scores(vectors, track_bank, k=k)
        per = track_scores(values[mask], tracks[mask])
        return list(per), np.array(list(per.values()))

    test_tracks = list(dict.fromkeys(tracks[test].tolist()))
    track_probabilities = np.array([probabilities[tracks == t].mean(axis=0) for t in test_tracks])
    truth = np.array([y[tracks == t][0] for t in test_tracks])
    right = track_probabilities.argmax(axis=1) == truth
    out = {"held_out": list(held_out), "head_C": facts["head_C"], "temperature": calibration.temperature,
           "shrinkage": classes.shrinkage, "closed_set_accuracy": float(right.mean())}
    for method, values in {"track-knn": None, **window}.items():
        _, validation_scores = by_track(validation, values)
        threshold = fit_threshold(validation_scores, accept=accept)
        names, known_scores = by_track(test, values)
        assert names == test_tracks
        _, unknown_scores = by_track(unknown, values)
        accepted = known_scores <= threshold
        out[method] = {
            "auroc": float(roc_auc_score(np.r_[np.zeros(len(known_scores)), np.ones(len(unknown_scores))],
                                         np.r_[known_scores, unknown_scores])),
            "accepted": float(accepted.mean()),
            "rejected_unknown": float((unknown_scores > threshold).mean()),
            "accuracy_accepted": float(right[accepted].mean()) if accepted.any() else float("nan"),
            "threshold": threshold,
        }
    return out


def summary(results: list[dict], method: str, key: str) -> tuple[float, float]:
    values = np.array([r[method][key] for r in results], dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="GTZAN-layout folder: <genre>/<genre>.000NN.<ext>")
    parser.add_argument("--families", nargs="+", default=["musicnn-msd"])
    parser.add_argument("--pairs", type=int, default=0, help="random genre pairs (0: all 45)")
    parser.add_argument("--train-tracks", type=int, default=3, help="train tracks per known genre")
    parser.add_argument("--validation-tracks", type=int, default=1, help="validation tracks per known genre (the rest: test)")
    parser.add_argument("--accept", type=float, default=None, help="validation share accepted (default: params export.unknown_accept)")
    parser.add_argument("--neighbours", type=int, default=None, help="k of the knn score (default: params export.unknown_neighbours)")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--family-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a family constructor option, e.g. embedding_layer=pooled (musicnn-msd's 1,506-d features)")
    args = parser.parse_args()

    params = load_params(project_root() / "params.yaml")
    genres = list(params.genres)
    accept = args.accept if args.accept is not None else params.export.unknown_accept
    k = args.neighbours if args.neighbours is not None else params.export.unknown_neighbours
    pairs = list(itertools.combinations(range(len(genres)), 2))
    if args.pairs:
        rng = np.random.default_rng(args.seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=min(args.pairs, len(pairs)), replace=False))]
    rows = []
    for candidate in args.families:
        family = create(candidate, **dict(option.split("=", 1) for option in args.family_option))
        clips, tracks = load_corpus(args.data, genres=genres, sample_rate=family.sample_rate, clip_samples=family.clip_samples)
        started = time.perf_counter()
        embedding = cached_embedding(family, clips)
        print(f"{candidate}: {len(np.unique(tracks))} tracks, {len(clips)} clips, embedding {embedding.shape[1]}-d "
              f"({time.perf_counter() - started:.0f} s); {len(pairs)} held-out pairs", flush=True)
        results = []
        for number, pair in enumerate(pairs):
            result = pair_result(family, embedding, clips.labels, tracks, pair, n_classes=len(genres), n_train=args.train_tracks,
                                 n_validation=args.validation_tracks, accept=accept, min_clips=params.export.temperature_min_clips,
                                 seed=args.seed + number, k=k, bank_rows=params.export.unknown_bank_tracks)
            results.append(result)
            print(f"  {candidate} {genres[pair[0]]}+{genres[pair[1]]}: "
                  + ", ".join(f"{m} AUROC {result[m]['auroc']:.3f} accepted {result[m]['accepted']:.2f} "
                              f"accuracy {result[m]['accuracy_accepted']:.2f}" for m in METHODS), flush=True)
        rows.append({"family": candidate + "".join(f" ({option})" for option in args.family_option), "pairs": results, "seconds": round(time.perf_counter() - started, 1)})

    print(f"\naccept = {accept} of the validation tracks; knn k = {k}; mean ± sd over genre pairs")
    print("\n| family | method | pairs | AUROC | known accepted | unknown rejected | accuracy of accepted | closed-set accuracy |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        closed = np.array([r["closed_set_accuracy"] for r in row["pairs"]])
        for method in METHODS:
            cells = [summary(row["pairs"], method, key) for key in ("auroc", "accepted", "rejected_unknown", "accuracy_accepted")]
            print(f"| {row['family']} | {method} | {len(row['pairs'])} | {cells[0][0]:.3f} ± {cells[0][1]:.3f} | "
                  + " | ".join(f"{100 * m:.1f} % ± {100 * s:.1f}" for m, s in cells[1:])
                  + f" | {100 * closed.mean():.1f} % ± {100 * closed.std(ddof=1):.1f} |")
    out = project_root() / "bench" / "results" / f"open_set-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": str(args.data), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                               "seed": args.seed, "accept": accept, "neighbours": k, "train_tracks": args.train_tracks,
                               "validation_tracks": args.validation_tracks, "rows": rows}, indent=2, default=str), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
