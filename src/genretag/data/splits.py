"""Cut validated tracks into labelled clips with their train/validation/test split (data/clips.csv), and read
clips.csv back checked (:func:`read_clips`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from genretag.audio import decoding as audio
from genretag.core.atomic import write_csv
from genretag.core.config import AudioParams, Layout, Params, SplitParams
from genretag.core.errors import ConfigError, TrainingDataError
from genretag.data.ingest import GTZAN_STEM

log = logging.getLogger(__name__)

CLIP_COLUMNS: tuple[str, ...] = ("clip_id", "track_id", "genre", "split", "clip_index", "start_s", "provenance")
SPLITS: tuple[str, ...] = ("train", "validation", "test")


def clips_for_tracks(tracks: pd.DataFrame, *, audio_params: AudioParams) -> pd.DataFrame:
    """One row per whole clip: ``clips_per_track`` consecutive clips from the start of each track.

    A track shorter than 30 s gives fewer clips; a partial clip at the end is dropped.
    """
    clip_samples = audio_params.clip_samples
    rows = []
    for track in tracks.itertuples(index=False):
        frames = int(round(float(track.duration_s) * audio_params.sample_rate))
        for index in range(min(audio_params.clips_per_track, frames // clip_samples)):
            rows.append({
                "clip_id": f"{track.track_id}.{index}",
                "track_id": track.track_id,
                "genre": track.genre,
                "clip_index": index,
                "start_s": round(index * clip_samples / audio_params.sample_rate, 4),
            })
    return pd.DataFrame(rows, columns=["clip_id", "track_id", "genre", "clip_index", "start_s"])


def _allocate(items: Sequence[str], *, fractions: Sequence[float], rng: np.random.Generator) -> dict[str, str]:
    """Shuffle ``items`` and cut them into train/validation/test by ``fractions``.

    Validation and test each get at least one item when there are three or more.
    """
    order = list(rng.permutation(list(items)))
    n = len(order)
    n_test = int(round(n * fractions[2]))
    n_val = int(round(n * fractions[1]))
    if n >= 3:
        n_test, n_val = max(n_test, 1 if fractions[2] > 0 else 0), max(n_val, 1 if fractions[1] > 0 else 0)
    n_train = n - n_val - n_test
    labels = ["train"] * n_train + ["validation"] * n_val + ["test"] * n_test
    return dict(zip(order, labels, strict=True))


def _filtered_assignment(track_ids: Sequence[str]) -> dict[str, str]:
    """Kereliuk et al. (2015) fault-filtered GTZAN split; tracks outside it are left out."""
    table = json.loads(resources.files("genretag.resources").joinpath("gtzan_filtered_split.json").read_text())
    assignment: dict[str, str] = {}
    for split in SPLITS:
        for genre, spans in table[split].items():
            for span in spans.split(","):
                first, _, last = span.partition("-")
                for number in range(int(first), int(last or first) + 1):
                    assignment[f"{genre}.{number:05d}"] = split
    unknown = [t for t in track_ids if not GTZAN_STEM.match(t)]
    if unknown:
        raise ConfigError(f"split.method=filtered needs GTZAN file names (<genre>.000NN); not: {', '.join(unknown[:5])}")
    return {t: assignment[t] for t in track_ids if t in assignment}


def assign_splits(clips: pd.DataFrame, *, split_params: SplitParams) -> pd.DataFrame:
    """Add the ``split`` column; clips of tracks outside the split (filtered) are dropped.

    ``track``: stratified by genre, whole tracks per split (no leakage). ``clip``: the paper's
    random split of clips, stratified by genre (clips of one track land in several splits).
    """
    rng = np.random.default_rng(split_params.seed)
    assignment: dict[str, str] = {}
    if split_params.method == "filtered":
        assignment = _filtered_assignment(sorted(clips["track_id"].unique()))
        key = "track_id"
    else:
        key = "track_id" if split_params.method == "track" else "clip_id"
        for genre in sorted(clips["genre"].unique()):
            members = sorted(clips.loc[clips["genre"] == genre, key].unique())
            assignment.update(_allocate(members, fractions=split_params.fractions, rng=rng))
    result = clips.assign(split=clips[key].map(assignment))
    return result.dropna(subset=["split"]).reset_index(drop=True)


def drop_silent_clips(clips: pd.DataFrame, tracks: pd.DataFrame, *, root: Path, sample_rate: int, clip_samples: int,
                      silence_rms_dbfs: float) -> tuple[pd.DataFrame, int]:
    """``clips`` without the silent ones (:func:`genretag.audio.is_silent`, the tagger's rule), and how many were dropped.

    Each track's WAV (``tracks.path``, relative to ``root``) is read once; a silent clip would train
    the model on one flat image that carries no genre.
    """
    paths = tracks.set_index("track_id")["path"]
    keep = np.ones(len(clips), dtype=bool)
    for track_id, rows in clips.groupby("track_id", sort=False):
        waveform = audio.load_wav(root / paths[track_id], sample_rate=sample_rate)
        for position, start_s in zip(rows.index, rows["start_s"]):
            start = int(round(float(start_s) * sample_rate))
            keep[clips.index.get_loc(position)] = not audio.is_silent(waveform[start:start + clip_samples], silence_rms_dbfs=silence_rms_dbfs)
    return clips[keep].reset_index(drop=True), int((~keep).sum())


def make_clips(tracks: pd.DataFrame, *, params: Params, layout: Layout) -> pd.DataFrame:
    """Clips of the validated tracks with their split, silent clips dropped (counted in the log);
    writes data/clips.csv (columns :data:`CLIP_COLUMNS`)."""
    clips, silent = drop_silent_clips(
        clips_for_tracks(tracks, audio_params=params.audio), tracks, root=layout.root, sample_rate=params.audio.sample_rate,
        clip_samples=params.audio.clip_samples, silence_rms_dbfs=params.validation.silence_rms_dbfs,
    )
    if silent:
        log.info("split: %d silent clip(s) dropped (RMS below %g dBFS or all zero)", silent, params.validation.silence_rms_dbfs)
    clips["provenance"] = clips["track_id"].map(tracks.set_index("track_id")["provenance"])
    clips = assign_splits(clips, split_params=params.split)
    clips = clips[list(CLIP_COLUMNS)].sort_values(["split", "genre", "clip_id"], kind="stable").reset_index(drop=True)
    write_csv(layout.clips, clips)
    return clips


REQUIRED_CLIP_COLUMNS = ("clip_id", "track_id", "genre", "split", "start_s")


def read_clips(path: str | Path, *, genres: Sequence[str] | None = None) -> pd.DataFrame:
    """clips.csv, checked: required columns, known splits (and genres, when given).

    Raises TrainingDataError naming ``path`` for a missing or unreadable file, missing columns,
    unknown split values or genres outside ``genres``.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={c: str for c in ("clip_id", "track_id", "genre", "split")}, keep_default_na=False)
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: no such file (run the split stage first)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TrainingDataError(f"{path}: not a readable CSV: {exc}") from exc
    missing = [c for c in REQUIRED_CLIP_COLUMNS if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"{path}: missing columns {missing}")
    bad_split = sorted(set(frame["split"]) - set(SPLITS))
    if bad_split:
        raise TrainingDataError(f"{path}: unknown split values {bad_split}; expected {list(SPLITS)}")
    if genres is not None:
        unknown = sorted(set(frame["genre"]) - set(genres))
        if unknown:
            raise TrainingDataError(f"{path}: genres {unknown} are not in params genres {list(genres)}")
    return frame
