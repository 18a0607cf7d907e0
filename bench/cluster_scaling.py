"""Scoring on Dask workers (genretag.tagging.cluster): tracks/s with 1 and 2 workers, and a tagging run's peak RSS.

    python bench/cluster_scaling.py --model /tmp/genretag-bench/musicnn-msd.onnx --audio ../shared/catalog-sample --copies 6

1. Scaling: a ``distributed.LocalCluster`` of N = 1, 2 worker processes, one thread each, each worker's
   onnxruntime session limited to ONE thread (score.dask_session_threads = 1): the cluster scorer over
   ``--copies`` copies of every file under ``--audio`` (distinct keys, the same bytes: a CPU-bound corpus of
   real music) at ``--max-windows``; tracks/s of the whole scoring (after a warm-up chunk per worker) and
   the ratio against N = 1 in the same run.
2. Memory: ``tag_catalog`` over ``--audio`` into a fresh SQLite catalog in a child process, with
   score.batch_size 256 and score.batch_memory_mb 0 (no cap), then the default cap (384 MB); peak RSS of
   the child (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, which covers its decoding workers one by one,
   not summed) and its tracks/s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from genretag.core.config import ScoreParams
from genretag.tagging.sources import HashedTrack

AUDIO = (".ogg", ".wav", ".flac", ".mp3")


def corpus(audio: Path, copies: int) -> list[HashedTrack]:
    files = sorted(p for p in audio.iterdir() if p.suffix.lower() in AUDIO)
    return [HashedTrack(f"{p.stem}#{i}", p, f"bench-{i}-{p.stem}") for i in range(copies) for p in files]


def scaling(model_path: Path, tracks: list[HashedTrack], *, max_windows: int, chunk: int) -> dict[int, float]:
    from distributed import LocalCluster

    from genretag.onnx.session import open_model
    from genretag.tagging.cluster import cluster_scorer

    model = open_model(model_path, prefer_gpu=False)
    rates = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            scorer = cluster_scorer(model, address=cluster.scheduler_address, chunk=chunk, max_windows=max_windows, batch_size=256,
                                    silence_rms_dbfs=-60.0, session_threads=1)
            list(scorer(tracks[: chunk * workers]))  # warm-up: every worker opens its session and decodes once
            started = time.perf_counter()
            results = list(scorer(tracks))
            rates[workers] = len(results) / (time.perf_counter() - started)
            assert all(r.score is not None for r in results), [r.error for r in results if r.score is None]
    return rates


def peak_rss(model_path: Path, audio: Path, *, batch_memory_mb: int, max_windows: int) -> tuple[float, float, float, int]:
    """(peak RSS MB of the tagging process, of its largest decoding worker, tracks/s, clips per session run)
    of a tag_catalog run in a fresh child process (``resource.getrusage`` in the child)."""
    code = (
        "import resource, tempfile, time\n"
        "from genretag.onnx.session import open_model\n"
        "from genretag.tagging.run import tag_catalog\n"
        f"model = open_model({str(model_path)!r}, prefer_gpu=False, batch_memory_mb={batch_memory_mb})\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    started = time.perf_counter()\n"
        f"    s = tag_catalog({str(audio)!r}, model=model, database_url=f'sqlite:///{{tmp}}/c.db', batch_size=256, max_windows={max_windows})\n"
        "    rate = s.tagged / (time.perf_counter() - started)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rate, model.max_batch)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024, float(out[2]), int(out[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--max-windows", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=2)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if not args.skip_memory:
        print(f"\n## Peak RSS of tag_catalog over {args.audio}, batch_size 256, max_windows {args.max_windows}\n")
        print("| batch_memory_mb | clips per run | peak RSS, tagging process (MB) | largest decoding worker (MB) | tracks/s |")
        print("|---|---|---|---|---|")
        for budget in (0, ScoreParams().batch_memory_mb):
            rss, worker, rate, clips = peak_rss(args.model, args.audio, batch_memory_mb=budget, max_windows=args.max_windows)
            print(f"| {budget or 'none'} | {clips or 256} | {rss:.0f} | {worker:.0f} | {rate:.2f} |", flush=True)
    if not args.skip_scaling:
        tracks = corpus(args.audio, args.copies)
        rates = scaling(args.model, tracks, max_windows=args.max_windows, chunk=args.chunk)
        print(f"\n## Dask workers scoring {len(tracks)} tracks (max_windows {args.max_windows}), one onnxruntime thread each\n")
        print("| workers | tracks/s | vs 1 worker |\n|---|---|---|")
        for workers, rate in rates.items():
            print(f"| {workers} | {rate:.2f} | {rate / rates[1]:.2f}x |")


if __name__ == "__main__":
    main()
