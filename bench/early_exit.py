"""Early exit per track (genretag.tagging.early_exit) on real music: held-out accuracy, windows used, tracks/s.

    python bench/early_exit.py --data ../shared/gtzan-sample --catalog ../shared/catalog-sample --splits 20

1. Accuracy, on ``--data`` (a GTZAN-layout folder): musicnn-msd's frozen embedding of every whole 3-s clip
   (cached as bench/accuracy.py does), its head refit per stratified 70/30 track-level split (bench/accuracy.py's
   split machinery); each held-out track is decided from all its windows and with early exit, from the same
   window probabilities (the decision reads nothing else, so this is the tagger's decision on those windows),
   for each ``--risks``. Printed: track accuracy mean ± sd over splits, the paired change, windows used, and the fewest
   windows any valid rule could use on those tracks (genretag.tagging.early_exit.fewest_windows: even were every window
   certain), whose inverse bounds what any early exit could save there. Before it, the best case: where this rule stops
   on a track whose windows are all certain, beside that floor, for 5 to 80 windows.
2. Speed, on ``--catalog``: the head fit on every track of ``--data``, exported as a contract-v2 ONNX model;
   ``genretag.tagging.run.tag_catalog`` over the catalog into a fresh SQLite catalog, with and without early exit
   (same files, same session, same run), at ``--max-windows`` 20 and 0 (all): tracks/s (best, and the range over
   ``--repeats`` runs, the settings interleaved per repeat so load on a shared machine hits both) and windows used.
   With early exit the decoders read only each track's first round; later rounds are decoded as needed. The ratio is
   the best against the best without early exit measured in the same process. Then one row per catalog track: its
   windows, those early exit used, the fewest any valid rule could use, and how much its windows agree.

The model is written to ``--model-out`` (default /tmp/genretag-bench/musicnn-msd.onnx) for other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genretag.tagging.early_exit import EarlyExit, fewest_windows, spread_order

# The decoding pool spawns its workers, and each re-runs this script as "__mp_main__" before it decodes: only there,
# skip the imports of TensorFlow and the families (seconds per worker, counted in the tracks/s), as catalog_scale.py does.
if __name__ != "__mp_main__":
    import genretag  # noqa: F401  - quiet environment before TensorFlow loads
    from bench.accuracy import cached_embedding, load_corpus, track_splits
    from genretag.core.config import load_params, project_root
    from genretag.families import create

if TYPE_CHECKING:
    import pandas as pd

    from genretag.onnx.session import ScoringModel


def decide(windows: np.ndarray, early_exit: EarlyExit | None) -> tuple[int, int]:
    """(genre index, windows used) of one track's window probabilities float [n, K] (in time order)."""
    if early_exit is None:
        return int(windows.mean(0).argmax()), len(windows)
    ordered = windows[spread_order(len(windows))]
    used = 0
    while True:
        used = min(used + early_exit.round_windows, len(ordered))
        if early_exit.settled(ordered[:used], total=len(ordered)):
            return int(ordered[:used].mean(0).argmax()), used


def accuracy_table(data: Path, *, genres: list[str], splits: int, seed: int, risks: list[float], round_windows: int) -> dict:
    family = create("musicnn-msd")
    clips, tracks = load_corpus(data, genres=genres, sample_rate=family.sample_rate, clip_samples=family.clip_samples)
    frozen = cached_embedding(family, clips)
    settings = {"all windows": None} | {f"early exit, risk {r:g}": EarlyExit(round_windows=round_windows, risk=r) for r in risks}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for number, (_, test_tracks) in enumerate(track_splits(tracks, clips.labels, splits=splits, test_size=0.3, seed=seed)):
        test = np.isin(tracks, list(test_tracks))
        family.head.n_classes = len(genres)
        family.head.fit(frozen[~test], clips.labels[~test], seed=seed + number, groups=tracks[~test])
        probabilities = family.head.predict_proba(frozen[test])
        for name, setting in settings.items():
            hits, used, floor = [], [], []
            for track in sorted(test_tracks):
                rows = tracks[test] == track
                genre, count = decide(probabilities[rows], setting)
                hits.append(genre == clips.labels[test][rows][0])
                used.append(count / rows.sum())
                floor.append(fewest_windows(int(rows.sum()), risk=setting.risk) / rows.sum() if setting else 1.0)
            results[name].append((float(np.mean(hits)), float(np.mean(used)), float(np.mean(floor))))
    base = np.array([a for a, _, _ in results["all windows"]])
    print(f"\n## Held-out track accuracy, {data} ({len(np.unique(tracks))} tracks, {len(clips.labels)} windows), "
          f"{splits} stratified 70/30 splits, musicnn-msd head refit per split, rounds of {round_windows}\n")
    print("| decision | track accuracy | change (points, paired) | windows used | fewest any valid rule could use |\n|---|---|---|---|---|")
    table = {}
    for name, rows in results.items():
        accuracy, used, floor = (np.array(column) for column in zip(*rows, strict=True))
        change = 100 * (accuracy - base)
        print(f"| {name} | {100 * accuracy.mean():.1f} % ± {100 * accuracy.std(ddof=1):.1f} | {change.mean():+.2f} ± {change.std(ddof=1):.2f} "
              f"| {100 * used.mean():.0f} % | {100 * floor.mean():.0f} % |")
        table[name] = {"accuracy_mean": accuracy.mean(), "change_points_mean": change.mean(), "windows_used_share": used.mean(),
                       "fewest_windows_share": floor.mean()}
    print("\nfewest any valid rule could use: genretag.tagging.early_exit.fewest_windows of each track's window count, i.e. even if every"
          " window were certain; its inverse is the most any early exit could save on these tracks.")
    return table


def certain_table(*, risk: float, round_windows: int, sizes: tuple[int, ...] = (5, 6, 10, 20, 40, 80)) -> list[dict]:
    """Print the most this rule can save: where it stops on a track whose windows are all certain of one genre (its best
    case), beside the fewest windows any valid rule could use there (genretag.tagging.early_exit.fewest_windows)."""
    print(f"\n## The best case: every window certain of one genre, risk {risk:g}\n")
    print(f"| windows | fewest any valid rule could use | this rule, rounds of {round_windows} | this rule, rounds of 1 |\n|---|---|---|---|")
    table = []
    for total in sizes:
        certain = np.tile(np.eye(10)[0], (total, 1))
        row = {"windows": total, "fewest_valid": fewest_windows(total, risk=risk),
               "rule": decide(certain, EarlyExit(round_windows=round_windows, risk=risk))[1],
               "rule_rounds_of_1": decide(certain, EarlyExit(round_windows=1, risk=risk))[1]}
        print(f"| {total} | {row['fewest_valid']} | {row['rule']} | {row['rule_rounds_of_1']} |")
        table.append(row)
    return table


def export_model(data: Path, *, genres: list[str], seed: int, out: Path) -> Path:
    """musicnn-msd with its head fit on every track of ``data``, as a contract-v2 ONNX model at ``out``."""
    from genretag.onnx.contract import ModelContract, write_contract

    family = create("musicnn-msd")
    clips, tracks = load_corpus(data, genres=genres, sample_rate=family.sample_rate, clip_samples=family.clip_samples)
    frozen = cached_embedding(family, clips)
    family.head.n_classes = len(genres)
    family.head.fit(frozen, clips.labels, seed=seed, groups=tracks)
    family.labels, family.embedding_size = tuple(genres), int(frozen.shape[1])
    proto = write_contract(family.to_onnx(), ModelContract(labels=tuple(genres), model_name="bench-musicnn-msd", model_version="1",
                                                           sample_rate=family.sample_rate, clip_samples=family.clip_samples,
                                                           family="musicnn-msd"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    return out


def tag_once(*, model: ScoringModel, catalog: Path, max_windows: int, workers: int, early_exit: EarlyExit | None,
             batch_size: int = 256) -> tuple[float, pd.DataFrame]:
    """A first ``genretag.tagging.run.tag_catalog`` run over ``catalog`` (an open ScoringModel, ``early_exit`` None: off)
    into a fresh SQLite catalog, removed after: (tracks tagged per second of the whole run, its catalog_tags rows)."""
    from genretag.tagging.run import tag_catalog
    from genretag.tagging.store import Catalog

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/catalog.db"
        started = time.perf_counter()
        summary = tag_catalog(catalog, model=model, database_url=url, max_windows=max_windows, workers=workers,
                              batch_size=batch_size, early_exit=early_exit, progress_bars=False, progress_every_s=3600)
        rate = summary.tagged / (time.perf_counter() - started)
        with Catalog(url) as db:
            return rate, db.read()


def speed_table(model_path: Path, catalog: Path, *, repeats: int, round_windows: int, risk: float, workers: int) -> dict:
    from genretag.onnx.session import open_model

    model = open_model(model_path, prefer_gpu=False)
    print(f"\n## Tagging {catalog} ({len(list(catalog.glob('*.ogg')))} tracks), {model.model_name} on {model.provider}, "
          f"best of {repeats}, rounds of {round_windows}, risk {risk:g}\n")
    print("| max_windows | early exit | tracks/s (best) | tracks/s (min-max) | windows used / available | speedup |\n|---|---|---|---|---|---|")
    table: dict = {}
    per_track: dict = {}
    for max_windows in (20, 0):
        settings = {"off": None, "on": EarlyExit(round_windows=round_windows, risk=risk)}
        rates: dict[str, list[float]] = {name: [] for name in settings}
        used: dict[str, tuple[int, int]] = {}
        last: dict[str, pd.DataFrame] = {}
        for _ in range(repeats):
            for name, setting in settings.items():
                rate, rows = tag_once(model=model, catalog=catalog, max_windows=max_windows, workers=workers, early_exit=setting)
                rates[name].append(rate)
                used[name] = (int(rows["windows_scored"].sum()), int(rows["windows_available"].sum()))
                last[name] = rows
        per_track[max_windows or "all"] = last
        for name in settings:
            best = max(rates[name])
            print(f"| {max_windows or 'all'} | {name} | {best:.2f} | {min(rates[name]):.2f}-{best:.2f} | {used[name][0]} / {used[name][1]} "
                  f"| {best / max(rates['off']):.2f}x |")
            table[f"{max_windows}-{name}"] = {"tracks_per_second": best, "runs": rates[name], "windows_used": used[name][0],
                                              "windows_available": used[name][1]}
    table["tracks"] = track_table(per_track, risk=risk)
    return table


def track_table(per_track: dict, *, risk: float) -> list[dict]:
    """Print why each catalog track stopped where it did: its windows, those early exit used, the fewest any valid rule
    could use, and how much its windows agree (from the run without early exit, the windows its decision reads)."""
    print("\n| track | max_windows | windows | used | fewest valid | leader's mean window probability | windows whose top genre is the leader |"
          "\n|---|---|---|---|---|---|---|")
    table = []
    for max_windows, runs in per_track.items():
        early = runs["on"].set_index("path")
        for _, row in runs["off"].sort_values("path").iterrows():
            timeline = json.loads(row["window_probabilities"])
            windows = np.array(timeline["probabilities"])
            leader = int(windows.mean(0).argmax())
            entry = {"track": Path(row["path"]).stem[:40], "max_windows": max_windows, "windows": int(row["windows_available"]),
                     "used": int(early.loc[row["path"], "windows_scored"]),
                     "fewest_valid": fewest_windows(int(row["windows_available"]), risk=risk),
                     "leader": timeline["labels"][leader], "leader_mean": float(windows[:, leader].mean()),
                     "agreement": float((windows.argmax(1) == leader).mean())}
            print(f"| {entry['track']} | {max_windows} | {entry['windows']} | {entry['used']} | {entry['fewest_valid']} "
                  f"| {entry['leader']} {entry['leader_mean']:.2f} | {100 * entry['agreement']:.0f} % |")
            table.append(entry)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--catalog", type=Path, default=None)
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--risks", type=float, nargs="+", default=[0.05, 0.2, 0.5])
    parser.add_argument("--round", type=int, default=4, dest="round_windows")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--model-out", type=Path, default=Path(tempfile.gettempdir()) / "genretag-bench" / "musicnn-msd.onnx")
    args = parser.parse_args()
    genres = list(load_params(project_root() / "params.yaml").genres)
    results = {"best_case": certain_table(risk=args.risks[0], round_windows=args.round_windows),
               "accuracy": accuracy_table(args.data, genres=genres, splits=args.splits, seed=args.seed, risks=args.risks,
                                          round_windows=args.round_windows)}
    if args.catalog:
        model = export_model(args.data, genres=genres, seed=args.seed, out=args.model_out)
        results["speed"] = speed_table(model, args.catalog, repeats=args.repeats, round_windows=args.round_windows,
                                       risk=args.risks[0], workers=args.workers)
    print(json.dumps(results, default=float, indent=1))


if __name__ == "__main__":
    main()
