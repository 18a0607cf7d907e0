"""A catalog of a million tracks: what a rescan costs as the catalog grows, and what a first run costs (issue 20).

    nice python bench/catalog_scale.py [--only rescan,lookups,first-tag,early-exit] [--counts 1000,10000,100000]
        [--first-tag-files 24] [--first-tag-seconds 30] [--model PATH] [--workers 0] [--threads 0] [--repeats 3] [--work DIR]

Sections (``--only`` picks some; each prints its own table):

- ``rescan``: a no-op rescan (``genretag.tagging.run.tag_catalog`` over a folder whose every file is
  already tagged) of 10^3, 10^4 and 10^5 files of 1 MB, and of 30 MB (30x larger): seconds, bytes
  the run hashed, and /proc/self/io's read_bytes (from storage) and rchar (every read(), the SQLite
  pages included) during the run. Targets: 10^5 files <= 30 s, no audio byte read, 30 MB / 1 MB
  time ratio <= 1.5.
- ``lookups``: the same no-op rescan of 10^4 files in a catalog holding only them, then in one
  pre-filled with 10^6 more rows (tags and fingerprints). Target: the 10^6 rows add <= 10 s to a
  rescan (the table also extrapolates the difference to 10^5 files).
- ``first-tag``: a first run (hash, decode, score, write) over a synthetic catalog of real audio files,
  end to end in tracks/s, against the decode floor (the run's own decoding pool alone) and the model
  floor (the session alone on the same windows held in memory), measured in the same run with the same
  workers, threads and batch size; the end-to-end rate as a share of the slower floor (the bound).
- ``early-exit``: the same first run with ``score.early_exit`` off and on: tracks/s, windows scored per
  track, the speedup and the share of tracks whose genre is the same (mechanics only; the real-music
  measurement is bench/early_exit.py).

Peak RSS (ru_maxrss) closes the output. The rescan files are sparse (``truncate``): a no-op rescan never
reads them, which is the point, and the disk holds no 3 TB. They are pre-tagged by writing the
catalog rows through the real store (genretag.tagging.schema's tables and genretag.tagging.store's
``Catalog.record_fingerprints``) with each file's real stat fingerprint and a made-up content hash,
as a first run would have left them. The synthetic catalog of ``first-tag`` and ``early-exit`` is
genretag.data.demo's generator (16-bit WAV at 22,050 Hz, GTZAN layout), written once per run. The model
is bench/cli.py's tiny contract-v2 graph unless ``--model`` names a real one (e.g.
/tmp/genretag-bench/musicnn-msd.onnx, written by bench/early_exit.py), opened on the CPU with
``score.batch_memory_mb``'s cap as ``genretag tag-catalog`` opens it.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

# The decoding pool spawns its workers, and each re-runs this script as "__mp_main__" before it decodes: only
# there, skip these imports (seconds of pandas, onnxruntime, scipy per worker), so that a worker starts about as
# fast as one of `genretag tag-catalog` (which re-runs only the CLI's entry script) and first-tag times the CLI's pool.
if __name__ != "__mp_main__":
    from bench.cli import SAMPLE_RATE, tiny_model
    from bench.early_exit import tag_once
    from genretag.core.config import GTZAN_GENRES, ScoreParams, worker_count
    from genretag.data.demo import synthesize_corpus
    from genretag.onnx.session import ScoringModel, open_model
    from genretag.tagging.decode_pool import decode_files
    from genretag.tagging.early_exit import early_exit_of
    from genretag.tagging.rows import now_utc
    from genretag.tagging.run import tag_catalog
    from genretag.tagging.fingerprints import Fingerprint
    from genretag.tagging.sources import HashedTrack
    from genretag.tagging.schema import catalog_tags
    from genretag.tagging.store import Catalog

MB = 1 << 20
FILES_PER_FOLDER = 1000
SYNTHETIC_SEED = 20  # genretag.data.demo's seed for the synthetic catalog (any fixed one)


@dataclass(frozen=True)
class Settings:
    """What the sections run with (the command line's options)."""

    counts: list[int]  # file counts of the rescan section
    files: int  # tracks of the synthetic catalog (first-tag, early-exit; rounded to whole tracks per genre)
    seconds: float  # length of each synthetic track (s)
    workers: int  # decoding processes and hashing threads (0: every core)
    threads: int  # onnxruntime intra-op threads (0: onnxruntime's default, every core)
    batch_size: int  # windows per session run (score.batch_size)
    max_windows: int  # 3-s windows per track (score.max_windows; 0: all)
    repeats: int  # runs of each measure of first-tag and early-exit, interleaved; the best is shown

    def describe(self, *, model: ScoringModel) -> str:
        """The settings every measure of a section shares, for its table header."""
        cap = f" (at most {model.max_batch} per session run)" if 0 < model.max_batch < self.batch_size else ""
        return (f"{model.model_name} {model.model_version} on {model.provider}, {worker_count(self.workers)} decoding processes "
                f"and hashing threads (--workers {self.workers}), onnxruntime intra-op threads {self.threads or 'default (every core)'}, "
                f"batch {self.batch_size} windows{cap}, max_windows {self.max_windows or 'all'}, best of {self.repeats}")


def io_counters() -> dict[str, int]:
    """/proc/self/io: read_bytes (from storage) and rchar (bytes passed to read())."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"read_bytes": int(fields["read_bytes"]), "rchar": int(fields["rchar"])}


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` sparse files of ``size`` bytes, FILES_PER_FOLDER per sub-folder."""
    paths = []
    for i in range(count):
        path = folder / f"d{i // FILES_PER_FOLDER:04d}" / f"t{i:07d}.flac"
        if i % FILES_PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.truncate(size)
        paths.append(path)
    return paths


def pretag(catalog: Catalog, paths: list[Path], *, version: str, offset: int = 0, stat: bool = True) -> None:
    """Rows as a first run leaves them: a tag per file, a fingerprint per path (real stat, or made up)."""
    when = now_utc()
    for start in range(0, len(paths), 10_000):
        part = paths[start : start + 10_000]
        shas = [f"{offset + start + i:064x}" for i in range(len(part))]
        fingerprints = [Fingerprint.of(os.stat(p)) if stat else Fingerprint(1, offset + start + i, MB, 0)
                        for i, p in enumerate(part)]
        catalog.record_fingerprints([(HashedTrack(p.stem, p, sha), fp) for p, sha, fp in zip(part, shas, fingerprints, strict=True)])
        with catalog.engine.begin() as connection:
            connection.execute(catalog_tags.insert(), [{
                "track_id": p.stem, "path": str(p), "sha256": sha, "genre": "blues", "confidence": 0.9, "top3": "[]",
                "probabilities": "{}", "windows_scored": 1, "model_name": "genretag-cnn", "model_version": version,
                "provider": "CPUExecutionProvider", "scored_at": when,
            } for p, sha in zip(part, shas, strict=True)])


def rescan(folder: Path, model, url: str) -> dict[str, float]:
    before, started = io_counters(), time.perf_counter()
    summary = tag_catalog(folder, model=model, database_url=url, workers=0, progress_bars=False, progress_every_s=3600)
    seconds, after = time.perf_counter() - started, io_counters()
    assert summary.tagged == 0 and summary.skipped == summary.listed, summary.to_dict()
    return {"files": summary.listed, "seconds": seconds, "hashed_bytes": summary.bytes_hashed,
            "read_bytes": after["read_bytes"] - before["read_bytes"], "rchar": after["rchar"] - before["rchar"]}


def section_rescan(*, work: Path, model: ScoringModel, settings: Settings) -> None:
    """No-op rescans of ``settings.counts`` files of 1 MB and 30 MB: seconds and bytes read."""
    print("\n## No-op rescan (every file already tagged)\n")
    print("| files | file size | seconds | files/s | audio bytes hashed | read_bytes | rchar | time vs 1 MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for count in settings.counts:
        base = None
        for size_mb in (1, 30):
            folder = work / f"rescan-{count}-{size_mb}mb"
            url = f"sqlite:///{work / f'rescan-{count}-{size_mb}mb.db'}"
            paths = make_files(folder, count, size_mb * MB)
            with Catalog(url) as catalog:
                pretag(catalog, paths, version=model.model_version)
            del paths
            row = rescan(folder, model, url)
            base = base or row["seconds"]
            print(f"| {count} | {size_mb} MB | {row['seconds']:.2f} | {count / row['seconds']:.0f} | {row['hashed_bytes']} "
                  f"| {row['read_bytes'] / MB:.1f} MB | {row['rchar'] / MB:.1f} MB | {row['seconds'] / base:.2f}x |", flush=True)
            shutil.rmtree(folder)


def section_lookups(*, work: Path, model: ScoringModel, settings: Settings) -> None:
    """A no-op rescan of 10^4 files alone in the catalog and among 10^6 more rows: seconds."""
    count, extra = 10_000, 1_000_000
    print(f"\n## Lookups: no-op rescan of {count} files, alone in the catalog and among {extra} more rows\n")
    print("| catalog rows | seconds | added by the extra rows | extrapolated to 10^5 files |")
    print("| ---: | ---: | ---: | ---: |")
    folder = work / "lookups"
    paths = make_files(folder, count, MB)
    small, big = f"sqlite:///{work / 'lookups-small.db'}", f"sqlite:///{work / 'lookups-big.db'}"
    with Catalog(small) as catalog:
        pretag(catalog, paths, version=model.model_version)
    with Catalog(big) as catalog:
        filler = [Path(f"/elsewhere/d{i // 1000:04d}/f{i:07d}.flac") for i in range(extra)]
        pretag(catalog, filler, version=model.model_version, offset=10**9, stat=False)
        del filler
        pretag(catalog, paths, version=model.model_version)
    alone = rescan(folder, model, small)["seconds"]
    among = rescan(folder, model, big)["seconds"]
    print(f"| {count} | {alone:.2f} | | |")
    print(f"| {count + extra} | {among:.2f} | {among - alone:+.2f} s | {(among - alone) * 10:+.1f} s |", flush=True)
    shutil.rmtree(folder)


def synthetic_catalog(*, work: Path, files: int, seconds: float) -> tuple[Path, list[Path]]:
    """(folder, its tracks): about ``files`` synthetic tracks of ``seconds`` s (genretag.data.demo.synthesize_corpus:
    16-bit WAV at SAMPLE_RATE Hz, GTZAN layout, ceil(files / 10) per genre) under ``work``, written once per run."""
    folder = work / f"synthetic-{files}x{seconds:g}s"
    if not folder.exists():
        per_genre = math.ceil(files / len(GTZAN_GENRES))
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        synthesize_corpus(partial, genres=GTZAN_GENRES[: math.ceil(files / per_genre)], tracks_per_genre=per_genre, seed=SYNTHETIC_SEED,
                          sample_rate=SAMPLE_RATE, duration_s=seconds)
        partial.rename(folder)
    return folder, sorted(folder.rglob("*.wav"))


def decode_floor(*, model: ScoringModel, paths: list[Path], settings: Settings) -> tuple[float, np.ndarray]:
    """(seconds, windows float32 [n, S]): ``paths`` decoded into the model's windows by a tagging run's own decoding
    (genretag.tagging.decode_pool.decode_files, ``settings.workers`` processes, starting its pool included), nothing else."""
    started = time.perf_counter()
    decoded = list(decode_files(((path, path) for path in paths), sample_rate=model.sample_rate, clip_samples=model.clip_samples,
                                max_windows=settings.max_windows, workers=settings.workers))
    seconds = time.perf_counter() - started
    failed = [f"{path}: {reason}" for _, path, windows, reason in decoded if windows is None]
    assert not failed, failed
    return seconds, np.concatenate([windows.waveforms for _, _, windows, _ in decoded])


def model_floor(*, model: ScoringModel, windows: np.ndarray, settings: Settings) -> float:
    """Seconds of the session alone on ``windows`` float32 [n, S] held in memory (ScoringModel.predict, what
    genretag.tagging.scoring calls, ``settings.batch_size`` windows per run), after one untimed warm-up batch."""
    model.predict(windows[: settings.batch_size], batch_size=settings.batch_size)
    started = time.perf_counter()
    model.predict(windows, batch_size=settings.batch_size)
    return time.perf_counter() - started


def section_first_tag(*, work: Path, model: ScoringModel, settings: Settings) -> None:
    """First-tag throughput (tracks/s) end to end, against the decode floor and the model floor measured here.

    End to end: ``tag_catalog`` over the synthetic catalog into a fresh SQLite catalog (hash, decode, score,
    write; bench/early_exit.py's tag_once). Decode floor: :func:`decode_floor`. Model floor: :func:`model_floor`
    on the windows that decode produced. Each is run ``settings.repeats`` times, interleaved, best shown. The bound
    is the slower floor: decoding and scoring overlap in a run, so it cannot beat it; where both share the same
    cores (a small CPU machine) the two floors' serial sum, 1 / (1/decode + 1/model), is the likelier ceiling.
    """
    folder, paths = synthetic_catalog(work=work, files=settings.files, seconds=settings.seconds)
    tracks = len(paths)
    runs: dict[str, list[float]] = {"end to end": [], "decode floor": [], "model floor": []}  # tracks/s
    windows = np.zeros((0, model.clip_samples), np.float32)
    for _ in range(settings.repeats):
        rate, rows = tag_once(model=model, catalog=folder, max_windows=settings.max_windows, workers=settings.workers,
                              early_exit=None, batch_size=settings.batch_size)
        assert len(rows) == tracks, f"{len(rows)} of {tracks} tracks tagged"
        runs["end to end"].append(rate)
        seconds, windows = decode_floor(model=model, paths=paths, settings=settings)
        runs["decode floor"].append(tracks / seconds)
        runs["model floor"].append(tracks / model_floor(model=model, windows=windows, settings=settings))
    best = {name: max(rates) for name, rates in runs.items()}
    binding = min(("decode floor", "model floor"), key=best.get)
    bound = best[binding]
    serial = 1 / (1 / best["decode floor"] + 1 / best["model floor"])
    start_s, _ = decode_floor(model=model, paths=paths[:1], settings=settings)
    per_track = len(windows) / tracks
    print(f"\n## First tag: {tracks} synthetic tracks of {settings.seconds:g} s (WAV, {SAMPLE_RATE} Hz), {per_track:g} windows "
          f"per track\n\n{settings.describe(model=model)}\n")
    print("| measure | what it times | seconds (best) | tracks/s (best) | tracks/s (min-max) | windows/s | share of the bound |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    what = {"end to end": "tag_catalog, fresh SQLite catalog: hash, decode, score, write",
            "decode floor": "decode_files alone (the run's decoding pool, its start included)",
            "model floor": f"ScoringModel.predict alone on the {len(windows)} windows in memory"}
    for name, rates in runs.items():
        share = f"{best[name] / bound:.0%}" if name == "end to end" else "bound" if name == binding else ""
        print(f"| {name} | {what[name]} | {tracks / best[name]:.2f} | {best[name]:.2f} | {min(rates):.2f}-{best[name]:.2f} "
              f"| {best[name] * per_track:.0f} | {share} |")
    print(f"\nbound = min(floors) = {bound:.2f} tracks/s ({binding}); end to end is {best['end to end'] / bound:.0%} of it, and "
          f"{best['end to end'] / serial:.0%} of the floors' serial sum 1 / (1/decode + 1/model) = {serial:.2f} tracks/s. "
          f"Starting the decoding pool (decode_files of one track): {start_s:.2f} s, in both the end-to-end run and the decode "
          f"floor; more tracks (--first-tag-files) amortize it.", flush=True)


def section_early_exit(*, work: Path, model: ScoringModel, settings: Settings) -> None:
    """The early-exit speedup's mechanics: the synthetic catalog tagged into fresh catalogs with ``score.early_exit``
    off and on (its default round and risk), ``settings.repeats`` times interleaved: tracks/s (best), windows scored
    per track, the speedup, and the share of tracks given the same genre both ways.

    The real-music measurement is bench/early_exit.py (held-out accuracy and tracks/s on GTZAN and catalog samples).
    A synthetic catalog only shows the mechanics (rounds decoded and scored, windows saved, decisions kept): its
    tracks are no music, and neither are the default tiny model's random weights, so the speedup and the agreement
    here are no claim about real catalogs.
    """
    folder, paths = synthetic_catalog(work=work, files=settings.files, seconds=settings.seconds)
    modes = {name: early_exit_of(ScoreParams(early_exit=on)) for name, on in (("off", False), ("on", True))}
    rates: dict[str, list[float]] = {name: [] for name in modes}  # tracks/s
    rows = {}
    for _ in range(settings.repeats):
        for name, early_exit in modes.items():
            rate, rows[name] = tag_once(model=model, catalog=folder, max_windows=settings.max_windows,
                                        workers=settings.workers, early_exit=early_exit, batch_size=settings.batch_size)
            rates[name].append(rate)
    on = modes["on"]
    print(f"\n## Early exit: {len(paths)} synthetic tracks of {settings.seconds:g} s, rounds of {on.round_windows} windows, "
          f"risk {on.risk:g} (mechanics only; real music: bench/early_exit.py)\n\n{settings.describe(model=model)}\n")
    print("| early exit | tracks/s (best) | tracks/s (min-max) | windows scored / track | windows available / track | speedup |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in modes:
        best = max(rates[name])
        print(f"| {name} | {best:.2f} | {min(rates[name]):.2f}-{best:.2f} | {rows[name]['windows_scored'].mean():.2f} "
              f"| {rows[name]['windows_available'].mean():.2f} | {best / max(rates['off']):.2f}x |")
    genres = rows["off"].set_index("path")["genre"].align(rows["on"].set_index("path")["genre"], join="outer")
    same = int((genres[0] == genres[1]).sum())
    print(f"\nsame genre with and without early exit: {same} of {len(genres[0])} tracks ({same / len(genres[0]):.0%})", flush=True)


SECTIONS = {"rescan": section_rescan, "lookups": section_lookups, "first-tag": section_first_tag, "early-exit": section_early_exit}


def main() -> None:
    score = ScoreParams()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {list(SECTIONS)}")
    parser.add_argument("--counts", default="1000,10000,100000", help="file counts of the rescan section")
    parser.add_argument("--first-tag-files", type=int, default=24, help="synthetic tracks of first-tag and early-exit")
    parser.add_argument("--first-tag-seconds", type=float, default=30.0, help="length of each synthetic track (s)")
    parser.add_argument("--model", type=Path, default=None, help="a contract-v2 ONNX model (default: bench/cli.py's tiny one)")
    parser.add_argument("--workers", type=int, default=score.workers, help="decoding processes (0: every core)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--batch-size", type=int, default=score.batch_size, help="windows per session run")
    parser.add_argument("--max-windows", type=int, default=score.max_windows, help="windows per track (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each first-tag and early-exit measure (best shown)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    settings = Settings(counts=[int(c) for c in args.counts.split(",")], files=args.first_tag_files, seconds=args.first_tag_seconds,
                        workers=args.workers, threads=args.threads, batch_size=args.batch_size, max_windows=args.max_windows,
                        repeats=args.repeats)
    work = args.work or Path(tempfile.mkdtemp(prefix="genretag-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = open_model(args.model or tiny_model(work / "model.onnx"), prefer_gpu=False, intra_op_threads=args.threads,
                           batch_memory_mb=score.batch_memory_mb)
        print(f"# catalog_scale on {os.cpu_count()} CPUs; SQLite catalogs under {work}")
        for name in chosen:
            SECTIONS[name](work=work, model=model, settings=settings)
        print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
