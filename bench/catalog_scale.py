"""A catalog of a million tracks: what a rescan costs as the catalog grows (issue 20).

    nice python bench/catalog_scale.py [--only rescan,lookups] [--counts 1000,10000,100000] [--work DIR]

Sections (``--only`` picks some; each prints its own table):

- ``rescan``: a no-op rescan (``genretag.tagging.run.tag_catalog`` over a folder whose every file is
  already tagged) of 10^3, 10^4 and 10^5 files of 1 MB, and of 30 MB (30x larger): seconds, bytes
  the run hashed, and /proc/self/io's read_bytes (from storage) and rchar (every read(), the SQLite
  pages included) during the run. Targets: 10^5 files <= 30 s, no audio byte read, 30 MB / 1 MB
  time ratio <= 1.5.
- ``lookups``: the same no-op rescan of 10^4 files in a catalog holding only them, then in one
  pre-filled with 10^6 more rows (tags and fingerprints). Target: the 10^6 rows add <= 10 s to a
  rescan (the table also extrapolates the difference to 10^5 files).

Peak RSS (ru_maxrss) closes the output. The files are sparse (``truncate``): a no-op rescan never
reads them, which is the point, and the disk holds no 3 TB. They are pre-tagged by writing the
catalog rows through the real store (genretag.tagging.store: its tables and
``Catalog.record_fingerprints``) with each file's real stat fingerprint and a made-up content hash,
as a first run would have left them. Other sections (first-tag throughput, early exit) belong in
this file as further ``SECTIONS`` entries.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from bench.cli import tiny_model  # noqa: E402
from genretag.onnx.session import open_model  # noqa: E402
from genretag.tagging.rows import now_utc  # noqa: E402
from genretag.tagging.run import tag_catalog  # noqa: E402
from genretag.tagging.sources import Fingerprint, HashedTrack  # noqa: E402
from genretag.tagging.schema import catalog_tags  # noqa: E402
from genretag.tagging.store import Catalog  # noqa: E402

MB = 1 << 20
FILES_PER_FOLDER = 1000


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


def section_rescan(work: Path, model, counts: list[int]) -> None:
    print("\n## No-op rescan (every file already tagged)\n")
    print("| files | file size | seconds | files/s | audio bytes hashed | read_bytes | rchar | time vs 1 MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for count in counts:
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


def section_lookups(work: Path, model, counts: list[int]) -> None:
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


SECTIONS = {"rescan": section_rescan, "lookups": section_lookups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {list(SECTIONS)}")
    parser.add_argument("--counts", default="1000,10000,100000", help="file counts of the rescan section")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="genretag-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = open_model(tiny_model(work / "model.onnx"), prefer_gpu=False)
        print(f"# catalog_scale on {os.cpu_count()} CPUs; SQLite catalogs under {work}")
        for name in chosen:
            SECTIONS[name](work, model, [int(c) for c in args.counts.split(",")])
        print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
