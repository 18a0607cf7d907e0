"""Ingest audio into data/raw (+ manifest): discover the labelled sources (demo corpus, local GTZAN-layout
folder, TFDS, reviewed labels) and normalise them into WAVs. The manifest contract (:data:`MANIFEST_COLUMNS`,
:func:`read_table`) and GTZAN's track names (:data:`GTZAN_STEM`) live here; genretag.data.splits cuts the
validated tracks into clips."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from genretag.audio import decoding as audio
from genretag.audio.folders import scan_folder
from genretag.core.atomic import write_csv, write_json
from genretag.core.config import Layout, Params, worker_count
from genretag.core.errors import AudioError, ConfigError, ReviewError
from genretag.core.paths import absolute, display, exact_bytes, quoted
from genretag.core.processes import die_with_parent

MANIFEST_COLUMNS: tuple[str, ...] = (
    "track_id", "genre", "path", "source_path", "sha256", "content_sha256",
    "original_sample_rate", "channels", "duration_s", "rms_dbfs", "peak", "nonfinite_samples", "error",
    "source_path_bytes",  # hex of the exact file name bytes when source_path (display form) is not faithful
    "provenance",  # where the track and its label came from: "corpus", or "review:..." (feedback_sources)
)
CORPUS = "corpus"
FEEDBACK_COLUMNS: tuple[str, ...] = (  # the feedback source (ingest.feedback), written by genretag.review
    "sha256", "path", "genre", "review_file", "review_sha256", "reviewer", "model_version", "imported_at",
)
GTZAN_STEM = re.compile(r"^(?P<genre>[a-z]+)\.(?P<number>\d{5})$")


@dataclass(frozen=True)
class SourceFile:
    """One labelled audio file to ingest."""

    path: Path
    genre: str
    track_id: str
    provenance: str = CORPUS
    sha256: str = ""  # the content a reviewed label was given to ("" for the corpus): other bytes are refused


@dataclass(frozen=True)
class Discovery:
    """What a source folder holds: the labelled files and, by reason, every file not ingested."""

    root: Path  # the folder the genre folders are in
    sources: list[SourceFile]
    unknown_genre: list[Path] = field(default_factory=list)  # audio outside any folder named after a genre
    not_audio: list[Path] = field(default_factory=list)
    apple_metadata: list[Path] = field(default_factory=list)  # AppleDouble ._* and __MACOSX/

    def unknown_folders(self) -> list[str]:
        """The folders (relative to ``root``) holding audio with no genre, for the log."""
        return sorted({display(p.parent.relative_to(self.root)) for p in self.unknown_genre})


# ---------------------------------------------------------------- discovering sources


def _track_id(path: Path, genre: str) -> str:
    stem = path.stem
    if GTZAN_STEM.match(stem) and stem.startswith(f"{genre}."):
        return stem
    return f"{genre}.{re.sub(r'[^A-Za-z0-9_-]+', '_', stem).strip('_') or 'track'}"


def discover(source_dir: str | Path, *, genres: Sequence[str]) -> Discovery:
    """Labelled audio files in a GTZAN-layout folder, and every other file counted by reason.

    Understands ``genres/<genre>/*.au`` (the original tarball), ``genres_original/<genre>/*.wav``
    (the Kaggle copy) and any tree with ``<genre>/`` folders; the genre is the nearest folder
    named after one of ``genres``. Files whose suffix is an audio extension (genretag.audio's
    one list, any case) are taken even if they turn out not to be audio (ingest records why).
    """
    root = absolute(source_dir)
    if not root.is_dir():
        raise ConfigError(f"{display(root)}: ingest.source is not a folder (expected 'demo', 'tfds' or a GTZAN-layout folder)")
    for preferred in ("genres_original", "genres"):
        if (root / preferred).is_dir():
            root = root / preferred
            break
    scan = scan_folder(root)
    wanted = set(genres)
    found: list[SourceFile] = []
    unknown: list[Path] = []
    taken: set[str] = set()
    for path in scan.audio:
        genre = next((part for part in reversed(path.relative_to(root).parts[:-1]) if part in wanted), None)
        if genre is None:
            unknown.append(path)
            continue
        track_id, n = _track_id(path, genre), 2
        while track_id in taken:
            track_id, n = f"{_track_id(path, genre)}-{n}", n + 1
        taken.add(track_id)
        found.append(SourceFile(path=path, genre=genre, track_id=track_id))
    return Discovery(root, found, unknown, scan.not_audio, scan.apple_metadata)


def discover_sources(source_dir: str | Path, *, genres: Sequence[str]) -> list[SourceFile]:
    """The labelled files of :func:`discover` (the others are counted there)."""
    return discover(source_dir, genres=genres).sources


def local_source(params: Params, *, layout: Layout) -> Path | None:
    """The local folder ``ingest.source`` names (relative: to the project root); None for ``demo`` and ``tfds``.
    Raises ConfigError naming ``ingest.source`` when the folder does not exist (checked before anything runs)."""
    source = params.ingest.source
    if source in ("demo", "tfds"):
        return None
    folder = Path(source).expanduser()
    folder = folder if folder.is_absolute() else layout.root / folder
    if not folder.is_dir():
        raise ConfigError(f"ingest.source = {source!r}: no such folder ({folder}); demo, tfds or a folder of <genre>/ audio files")
    return folder


def materialise_source(params: Params, *, layout: Layout) -> Path:
    """The folder to ingest from: the synthetic demo corpus, TFDS's GTZAN, or a local folder
    (:func:`local_source`, ConfigError when it does not exist)."""
    folder = local_source(params, layout=layout)
    if folder is not None:
        return folder
    if params.ingest.source == "demo":
        return _demo_corpus(params, layout=layout)
    return _tfds_gtzan(params, layout=layout)


def _demo_corpus(params: Params, *, layout: Layout) -> Path:
    """Synthesise the demo corpus once per (synthesis version, size, seed, rate) under data/demo-corpus."""
    from genretag.data.demo import CORPUS_VERSION, synthesize_corpus

    folder = layout.root / "data" / "demo-corpus"
    recipe = {
        "corpus_version": CORPUS_VERSION,
        "genres": list(params.genres),
        "tracks_per_genre": params.ingest.demo_tracks_per_genre,
        "seed": params.ingest.demo_seed,
        "sample_rate": params.audio.sample_rate,
    }
    marker = folder / "corpus.json"
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return folder
    for stale in folder.rglob("*.wav"):
        stale.unlink()
    synthesize_corpus(folder, genres=params.genres, tracks_per_genre=recipe["tracks_per_genre"],
                      seed=recipe["seed"], sample_rate=recipe["sample_rate"])
    write_json(marker, recipe)
    return folder


def _tfds_gtzan(params: Params, *, layout: Layout) -> Path:
    """Write TensorFlow Datasets' ``gtzan`` (needs tensorflow-datasets and its download host) as WAVs."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise ConfigError(
            "ingest.source=tfds needs the tensorflow-datasets package (pip install tensorflow-datasets) "
            "and network access to its download host; or download GTZAN yourself and set ingest.source to its folder"
        ) from exc
    folder = layout.root / "data" / "tfds-gtzan"
    dataset, info = tfds.load("gtzan", split="train", with_info=True)
    names = info.features["label"].names
    for number, example in enumerate(tfds.as_numpy(dataset)):
        genre = names[int(example["label"])]
        target = folder / genre / f"{genre}.{number:05d}.wav"
        if not target.exists():
            samples = np.asarray(example["audio"], dtype=np.float32)
            samples = samples / 32768.0 if np.abs(samples).max() > 1.0 else samples
            audio.write_wav(target, audio.to_pcm16(samples), sample_rate=info.features["audio"].sample_rate)
    return folder


def read_feedback(path: str | Path) -> pd.DataFrame:
    """The feedback source (columns :data:`FEEDBACK_COLUMNS`, all text); empty when the file does not exist.
    Raises ReviewError naming the file when it is unreadable or lacks a column."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ReviewError(f"{display(path)}: not a readable feedback CSV ({exc})") from exc
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    missing = [c for c in FEEDBACK_COLUMNS if c not in frame.columns]
    if missing:
        raise ReviewError(f"{display(path)}: the feedback CSV lacks column(s) {', '.join(missing)}")
    return frame[list(FEEDBACK_COLUMNS)]


def feedback_sources(feedback: str | Path | None, *, genres: Sequence[str]) -> list[SourceFile]:
    """The reviewed catalog tracks of the feedback CSV (FEEDBACK_COLUMNS, above) as labelled sources.

    track_id ``<genre>.review-<first 12 hex of sha256>``; provenance ``review:<review file>@<its sha256,
    12 hex>;reviewer=...;model_version=<the model whose tag was reviewed>;imported_at=...``. Labels whose
    genre is not in ``genres`` are left out (params.genres changed since). None or a missing file: no sources.
    Raises ReviewError when the file is unreadable or lacks a column.
    """
    if feedback is None or not Path(feedback).is_file():
        return []
    return [
        SourceFile(
            path=absolute(row.path), genre=row.genre, track_id=f"{row.genre}.review-{row.sha256[:12]}", sha256=row.sha256,
            provenance=(f"review:{row.review_file}@{row.review_sha256[:12]};reviewer={row.reviewer or '-'};"
                        f"model_version={row.model_version};imported_at={row.imported_at}"),
        )
        for row in read_feedback(feedback).itertuples(index=False) if row.genre in genres
    ]


# ---------------------------------------------------------------- ingest


def _below(path: Path, root: Path) -> Path:
    """``path`` relative to ``root`` when below it, else absolute."""
    try:
        return path.resolve().relative_to(root)
    except ValueError:
        return path.resolve()


def _relative(path: Path, root: Path) -> str:
    """:func:`_below` in display form (valid UTF-8 for any file name; see genretag.paths)."""
    return display(_below(path, root))


def _row(source: SourceFile, *, root: Path, **values: object) -> dict[str, object]:
    """A manifest row for ``source``; columns not given are empty."""
    row: dict[str, object] = {column: "" for column in MANIFEST_COLUMNS}
    exact = exact_bytes(_below(source.path, root))
    row.update(track_id=source.track_id, genre=source.genre, source_path=_relative(source.path, root),
               source_path_bytes=exact.hex() if exact else "", provenance=source.provenance, **values)
    return row


def undecodable_line(source_path: str, reason: str) -> str:
    """The log line of a manifest row whose file could not be decoded: its ``source_path`` and ``reason``,
    each quoted (genretag.core.paths.quoted: a name with a newline stays on its line)."""
    return f"cannot decode {quoted(source_path)}: {quoted(reason)} (validation will quarantine it)"


def ingest_file(source: SourceFile, *, sha256: str, root: Path, raw_dir: Path, sample_rate: int) -> dict[str, object]:
    """Decode one file (whose bytes hash to ``sha256``) into ``raw_dir/<genre>/<track_id>.wav``.

    Returns its manifest row; an undecodable file gives a row with ``error`` set and no WAV
    (validation quarantines it).
    """
    row = _row(source, root=root, sha256=sha256)
    try:
        decoded = audio.decode(source.path, sample_rate=sample_rate)
    except AudioError as exc:
        row["error"] = exc.reason
        return row
    pcm = audio.to_pcm16(decoded.waveform)
    target = raw_dir / source.genre / f"{source.track_id}.wav"
    audio.write_wav(target, pcm, sample_rate=sample_rate)
    row.update(
        path=_relative(target, root),
        content_sha256=audio.pcm_sha256(pcm),
        original_sample_rate=decoded.original_sample_rate,
        channels=decoded.channels,
        duration_s=round(decoded.stats.duration_s, 4),
        rms_dbfs=round(decoded.stats.rms_dbfs, 3),
        peak=round(decoded.stats.peak, 5),
        nonfinite_samples=decoded.stats.nonfinite_samples,
    )
    return row


def _reusable(previous: pd.DataFrame, *, root: Path, sample_rate: int) -> dict[tuple[str, str], dict]:
    """Rows of an earlier manifest whose WAV is still there at the wanted rate, by (source, sha256)."""
    kept: dict[tuple[str, str], dict] = {}
    for row in previous.to_dict("records"):
        path = root / str(row["path"]) if row["path"] else None
        if path is None or (path.is_file() and sf.info(path).samplerate == sample_rate):
            kept[(str(row["source_path"]), str(row["sha256"]))] = row
    return kept


def ingest(
    sources: Sequence[SourceFile],
    *,
    layout: Layout,
    sample_rate: int,
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Normalise ``sources`` into data/raw and write data/raw/manifest.csv; return the manifest.

    Incremental: a source file whose bytes are unchanged since the last manifest is not decoded
    again. WAVs in data/raw that no longer come from any source are removed. A reviewed source
    (``SourceFile.sha256`` set) whose bytes changed gets a row with ``error`` set (quarantined).
    """
    root, raw_dir = layout.root, layout.raw_dir
    previous = read_table(layout.manifest) if layout.manifest.is_file() else pd.DataFrame(columns=MANIFEST_COLUMNS)
    reusable = _reusable(previous, root=root, sample_rate=sample_rate)
    rows: dict[str, dict] = {}
    todo: list[tuple[SourceFile, str]] = []
    for source in sources:
        try:
            sha256 = audio.file_sha256(source.path)
        except OSError as exc:
            rows[source.track_id] = _row(source, root=root, error=f"cannot read: {exc}")
        else:
            key = (_relative(source.path, root), sha256)
            if source.sha256 and sha256 != source.sha256:
                rows[source.track_id] = _row(source, root=root, sha256=sha256,
                                             error=f"changed since it was reviewed (sha256 {sha256[:12]}, not {source.sha256[:12]})")
            elif key not in reusable or reusable[key]["track_id"] != source.track_id:
                todo.append((source, sha256))
                continue
            else:
                rows[source.track_id] = reusable[key] | {"provenance": source.provenance}
        if progress:
            progress(1)
    with ProcessPoolExecutor(max_workers=worker_count(workers), initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(ingest_file, s, sha256=sha, root=root, raw_dir=raw_dir, sample_rate=sample_rate) for s, sha in todo]
        for future in futures:
            row = future.result()
            rows[str(row["track_id"])] = row
            if progress:
                progress(1)
    manifest = pd.DataFrame([rows[s.track_id] for s in sources], columns=list(MANIFEST_COLUMNS))
    manifest = manifest.sort_values("track_id", kind="stable").reset_index(drop=True)
    keep = {root / p for p in manifest["path"] if p}
    for stale in raw_dir.rglob("*.wav"):
        if stale not in keep:
            stale.unlink()
    write_csv(layout.manifest, manifest)
    return manifest


def read_table(path: str | Path) -> pd.DataFrame:
    """A pipeline CSV with every column as text (empty cells stay empty strings)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)
