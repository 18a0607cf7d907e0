"""Similarity search: which embedding finds tracks of the same genre, and which ANN library scales.

    python bench/similarity.py --data ../shared/gtzan-sample --splits 20            # embeddings (precision@5)
    python bench/similarity.py --scale --dim 200 --sizes 100000 --winner-sizes 1000000   # index at scale

**Embeddings** (``--data``): every whole 3-s clip of every track is embedded once (cached by
bench/accuracy.py's :func:`cached_embedding`, by a hash of the clips and the front end); a track's
embedding is the mean over its clips, as the tagger stores it (genretag.tagging.rows). Each split
puts 30 % of every genre's tracks in the test set (bench/accuracy.py's :func:`track_splits`); each
test track queries the training tracks by cosine similarity, and precision@5 is the share of its 5
nearest training tracks that have its genre. Mean ± sd over splits. Embeddings compared: musicnn MSD's
penultimate dense layer (200-d: what the musicnn-msd ONNX graph outputs as ``embedding``), its
pooled features (max + mean over time, 1,506-d, the layer below; ``embedding_layer="pooled"``), MFCC statistics (mfcc-logreg's features), and the
paper CNN's dense layer (exp8, trained per split: slow, so ``--paper-splits`` of them).

**Scale** (``--scale``): synthetic unit vectors of ``--dim`` dimensions with a low intrinsic
dimension (64-d Gaussian clusters mapped linearly to ``--dim`` plus isotropic noise, as real
embeddings are: i.i.d. Gaussian vectors in 1,506-d have no neighbourhoods to find). Each library
builds an HNSW index (M = 16, ef_construction = 128, ef_search = 64) at each of ``--sizes``;
recall@10 of 200 queries against exact numpy search, single-query p50/p95 latency, build time,
index size on disk, then the time to add 10^4 more vectors to the built index (no rebuild) and the
recall after it. The winner (``--winner``) also runs at ``--winner-sizes``.

Writes JSON to bench/results/similarity-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

M, EF_CONSTRUCTION, EF_SEARCH, K = 16, 128, 64, 10
QUERIES = 200
ADDED = 10_000


# --- embeddings -------------------------------------------------------------------------------------


def precision_at(similarity: np.ndarray, query_labels: np.ndarray, base_labels: np.ndarray, *, k: int = 5) -> float:
    """Mean share of each query's ``k`` most similar base items sharing its label."""
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float((base_labels[nearest] == query_labels[:, None]).mean())


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _row(table: dict, label: str, values: list[float], dim: int, **extra) -> None:
    table[label] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "splits": len(values), "dim": dim, "values": [float(v) for v in values], **extra}
    print(f"{label:<40} precision@5 {100 * table[label]['mean']:5.1f} % ± {100 * table[label]['sd']:4.1f} "
          f"({len(values)} splits)", flush=True)


def embeddings_section(args: argparse.Namespace) -> dict:
    from bench.accuracy import cached_embedding, load_corpus, subset, track_splits, validation_tracks
    from genretag.core.config import load_params
    from genretag.evaluation.open_set import track_embeddings
    from genretag.families import create

    labels = tuple(load_params().genres)
    table: dict[str, dict] = {}

    def corpus(family):
        clips, tracks = load_corpus(args.data, genres=list(labels), sample_rate=family.sample_rate, clip_samples=family.clip_samples)
        ids = np.array(list(dict.fromkeys(tracks.tolist())))
        track_labels = np.array([clips.labels[tracks == t][0] for t in ids])
        splits = [(np.isin(ids, list(train)), np.isin(ids, list(test)), train)
                  for train, test in track_splits(tracks, clips.labels, splits=args.splits, test_size=0.3, seed=args.seed)]
        return clips, tracks, ids, track_labels, splits

    for name in ("musicnn-msd", "mfcc-logreg"):
        family = create(name)
        clips, tracks, ids, track_labels, splits = corpus(family)
        frozen = cached_embedding(family, clips)
        rows = ({"musicnn penultimate (200-d, served)": frozen,
                 "musicnn pooled (max+mean, 1506-d)": cached_embedding(create(name, embedding_layer="pooled"), clips)}
                if name == "musicnn-msd" else {f"MFCC statistics ({frozen.shape[1]}-d)": frozen})
        for label, clip_vectors in rows.items():
            _, means = track_embeddings(clip_vectors, tracks)
            vectors = unit(means)
            values = [precision_at(vectors[test] @ vectors[train].T, track_labels[test], track_labels[train]) for train, test, _ in splits]
            _row(table, label, values, int(means.shape[1]))
    if args.paper_splits:
        family = create("paper-exp8")
        clips, tracks, ids, track_labels, splits = corpus(family)
        values, started = [], time.perf_counter()
        for number, (train, test, train_ids) in enumerate(splits[: args.paper_splits]):
            held = np.isin(tracks, list(validation_tracks(train_ids, tracks, clips.labels)))
            fit_on = np.isin(tracks, list(train_ids)) & ~held
            family = create("paper-exp8")
            family.fit(subset(clips, fit_on), subset(clips, held), labels=labels, seed=args.seed + number, log=lambda _: None)
            _, means = track_embeddings(family.predict(clips.waveforms).embedding, tracks)
            vectors = unit(means)
            values.append(precision_at(vectors[test] @ vectors[train].T, track_labels[test], track_labels[train]))
            print(f"  paper exp8 split {number + 1}: precision@5 {values[-1]:.3f}", flush=True)
        _row(table, f"paper exp8 dense ({means.shape[1]}-d)", values, int(means.shape[1]), seconds=time.perf_counter() - started)
    return table


# --- scale -------------------------------------------------------------------------------------------


def synthetic(n: int, *, dim: int, seed: int, latent: int = 64, clusters: int = 256) -> np.ndarray:
    """``n`` unit float32 vectors [n, dim]: 64-d Gaussian clusters mapped linearly to ``dim``, plus noise."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(12345).standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = np.random.default_rng(54321).standard_normal((clusters, latent)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):
        count = min(50_000, n - start)
        z = centres[rng.integers(0, clusters, count)] + 0.5 * rng.standard_normal((count, latent)).astype(np.float32)
        out[start : start + count] = unit(z @ basis + 0.05 * rng.standard_normal((count, dim)).astype(np.float32))
    return out


def exact_top(base: np.ndarray, queries: np.ndarray, *, k: int) -> np.ndarray:
    """Indices [q, k] of the ``k`` largest cosine similarities (unit vectors), in chunks of the base."""
    best_score = np.full((len(queries), k), -np.inf, np.float32)
    best_index = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(base), 100_000):
        scores = queries @ base[start : start + 100_000].astype(np.float32).T
        index = np.argpartition(-scores, k, axis=1)[:, :k] if scores.shape[1] > k else np.tile(np.arange(scores.shape[1]), (len(queries), 1))
        merged_score = np.concatenate([best_score, np.take_along_axis(scores, index, axis=1)], axis=1)
        merged_index = np.concatenate([best_index, index + start], axis=1)
        order = np.argsort(-merged_score, axis=1)[:, :k]
        best_score, best_index = np.take_along_axis(merged_score, order, axis=1), np.take_along_axis(merged_index, order, axis=1)
    return best_index


class Library:
    """build(vectors) -> index; add(index, keys, vectors); search(index, q, k) -> keys; save(index, path)."""

    def __init__(self, name: str, build: Callable, add: Callable, search: Callable, save: Callable):
        self.name, self.build, self.add, self.search, self.save = name, build, add, search, save


def libraries(dim: int, threads: int) -> dict[str, Library]:
    def usearch_build(vectors):
        from usearch.index import Index

        index = Index(ndim=dim, metric="cos", dtype="f16", connectivity=M, expansion_add=EF_CONSTRUCTION, expansion_search=EF_SEARCH)
        index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=threads)
        return index

    def faiss_build(vectors):
        import faiss

        faiss.omp_set_num_threads(threads)
        index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = EF_CONSTRUCTION, EF_SEARCH
        index.add(vectors)
        return index

    def hnswlib_build(vectors):
        import hnswlib

        index = hnswlib.Index(space="cosine", dim=dim)
        index.init_index(max_elements=len(vectors) + ADDED, ef_construction=EF_CONSTRUCTION, M=M)
        index.set_num_threads(threads)
        index.add_items(vectors, np.arange(len(vectors)))
        index.set_ef(EF_SEARCH)
        return index

    def voyager_build(vectors):
        import voyager

        index = voyager.Index(voyager.Space.Cosine, num_dimensions=dim, M=M, ef_construction=EF_CONSTRUCTION,
                              storage_data_type=voyager.StorageDataType.Float32)
        index.add_items(vectors, np.arange(len(vectors)), num_threads=threads)
        return index

    def faiss_save(index, path):
        import faiss

        faiss.write_index(index, path)

    return {
        "usearch": Library("usearch", usearch_build,
                           lambda index, keys, v: index.add(keys.astype(np.uint64), v, threads=threads),
                           lambda index, q, k: np.asarray(index.search(q, k).keys), lambda index, path: index.save(path)),
        "faiss": Library("faiss", faiss_build, lambda index, keys, v: index.add(v),
                         lambda index, q, k: index.search(q[None, :], k)[1][0], faiss_save),
        "hnswlib": Library("hnswlib", hnswlib_build, lambda index, keys, v: index.add_items(v, keys),
                           lambda index, q, k: index.knn_query(q, k)[0][0], lambda index, path: index.save_index(path)),
        "voyager": Library("voyager", voyager_build, lambda index, keys, v: index.add_items(v, keys, num_threads=threads),
                           lambda index, q, k: index.query(q, k, query_ef=EF_SEARCH)[0], lambda index, path: index.save(path)),
    }


def measure(library: Library, *, n: int, dim: int, seed: int) -> dict:
    base = synthetic(n + ADDED, dim=dim, seed=seed)
    queries = synthetic(QUERIES, dim=dim, seed=seed + 1)
    started = time.perf_counter()
    index = library.build(base[:n])
    build_s = time.perf_counter() - started
    truth = exact_top(base[:n], queries, k=K)
    latencies, found = [], []
    for query in queries:
        t = time.perf_counter()
        found.append(library.search(index, query, K))
        latencies.append(time.perf_counter() - t)
    recall = float(np.mean([len(set(map(int, f)) & set(map(int, t))) / K for f, t in zip(found, truth, strict=True)]))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        path = str(Path(tmp) / "index")
        library.save(index, path)
        size = Path(path).stat().st_size
    started = time.perf_counter()
    library.add(index, np.arange(n, n + ADDED), base[n:])
    add_s = time.perf_counter() - started
    truth_after = exact_top(base, queries, k=K)
    recall_after = float(np.mean([len(set(map(int, library.search(index, q, K))) & set(map(int, t))) / K
                                  for q, t in zip(queries, truth_after, strict=True)]))
    row = {"library": library.name, "n": n, "dim": dim, "recall_at_10": recall, "p50_ms": 1e3 * float(np.median(latencies)),
           "p95_ms": 1e3 * float(np.percentile(latencies, 95)), "build_s": build_s, "index_mb": size / 2**20,
           "add_10k_s": add_s, "recall_after_add": recall_after}
    print(f"{row['library']:<8} {n:>9,} {dim:>5}  recall@10 {recall:.3f}  p50 {row['p50_ms']:6.2f} ms  p95 {row['p95_ms']:6.2f} ms  "
          f"build {build_s:8.1f} s  {row['index_mb']:8.1f} MB  +10^4 in {add_s:6.1f} s (recall after {recall_after:.3f})", flush=True)
    return row


def scale_section(args: argparse.Namespace) -> list[dict]:
    libs = libraries(args.dim, args.threads)
    rows = []
    for n in args.sizes:
        for name in args.libraries:
            rows.append(measure(libs[name], n=n, dim=args.dim, seed=args.seed))
    for n in args.winner_sizes:
        rows.append(measure(libs[args.winner], n=n, dim=args.dim, seed=args.seed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="GTZAN-layout folder (embeddings section)")
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--paper-splits", type=int, default=0, help="splits for exp8, which trains per split (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", action="store_true", help="run the index-at-scale section")
    parser.add_argument("--dim", type=int, default=200, help="vector dimension (the champion's embedding)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--libraries", nargs="*", default=["usearch", "faiss", "hnswlib", "voyager"])
    parser.add_argument("--winner", default="usearch")
    parser.add_argument("--winner-sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    result: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
                    "started": datetime.now(UTC).isoformat(timespec="seconds")}
    if args.data:
        result["embeddings"] = embeddings_section(args)
    if args.scale:
        result["scale"] = scale_section(args)
    out = Path(__file__).parent / "results" / f"similarity-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
