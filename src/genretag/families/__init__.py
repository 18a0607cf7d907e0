"""Model families: every way genretag can turn a 3-s clip into genre probabilities.

One interface for all families, one module per family (``genretag.families.<module>``). A family
trains on the clips of a split, predicts with its own framework (the parity reference), and
exports a contract-v2 ONNX graph (waveform in; probabilities and embedding out; see
:mod:`genretag.contract`). The gate, the tagger and the handoff only ever see that graph, so they
never branch on the family. Adding a family touches one new module and one line in
:data:`FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import onnx
import pandas as pd

from genretag.core.errors import ConfigError
from genretag.onnx.contract import Prediction


@dataclass(frozen=True)
class ClipSet:
    """Clips of one split, as waveforms at the family's sample rate.

    ``waveforms``: float32 [n, S] (S = clip samples at ``sample_rate`` Hz, mono, full scale ±1);
    ``labels``: int64 [n], indices into the label tuple; ``track_ids``/``clip_ids``: n strings each.
    """

    waveforms: np.ndarray
    labels: np.ndarray
    track_ids: tuple[str, ...]
    clip_ids: tuple[str, ...]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.clip_ids)


class Family(Protocol):
    """What every model family provides (see the module docstring)."""

    name: ClassVar[str]
    sample_rate: int  # Hz, the rate of the contract's ``waveform`` input
    clip_samples: int  # S

    def fit(self, train: ClipSet, validation: ClipSet, *, labels: tuple[str, ...], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
        """Train on ``train`` (``validation`` for early stopping/calibration); returns training facts for MLflow."""

    def predict(self, waveforms: np.ndarray) -> Prediction:
        """The framework's own forward pass on float32 [n, S]: the parity reference of :meth:`to_onnx`."""

    def to_onnx(self) -> onnx.ModelProto:
        """The trained model as a contract-v2 graph (``waveform`` -> ``probabilities``, ``embedding``), without metadata."""

    def preprocessing(self) -> dict[str, Any]:
        """JSON-able description of what the graph computes before the network (stored in the contract)."""

    def describe(self) -> dict[str, Any]:
        """Model-card facts: architecture, parameters, pretrained weights and licence, training recipe."""

    def save(self, directory: Path) -> None:
        """Write the trained state (framework files) under ``directory`` atomically."""

    def load(self, directory: Path) -> None:
        """Read the trained state that :meth:`save` wrote (raises a GenretagError when unusable)."""


FAMILIES: Mapping[str, str] = {
    "musicnn-msd": "genretag.families.musicnn_msd:MusicnnMSD",
    "mfcc-logreg": "genretag.families.mfcc_logreg:MfccLogReg",
    "compact": "genretag.families.compact:Compact",
    "paper": "genretag.families.paper:Paper",
}
"""Family name -> ``module:class`` (imported on demand: TensorFlow loads only for families that need it)."""

PAPER_PREFIX = "paper-"


def parse_candidate(candidate: str) -> tuple[str, str | None]:
    """Candidate id -> (family name, paper experiment or None): ``paper-exp8`` -> ("paper", "exp8").

    Raises ValueError naming the valid ids for an unknown family or experiment (imports no framework).
    """
    from genretag.families.paper_models import EXPERIMENTS

    if candidate.startswith(PAPER_PREFIX) and candidate[len(PAPER_PREFIX):] in EXPERIMENTS:
        return "paper", candidate[len(PAPER_PREFIX):]
    if candidate in FAMILIES and candidate != "paper":
        return candidate, None
    raise ValueError(
        f"unknown candidate {candidate!r}; valid: {', '.join(k for k in FAMILIES if k != 'paper')}, "
        f"{PAPER_PREFIX}<experiment> ({', '.join(EXPERIMENTS)})"
    )


def create(candidate: str, **options: Any) -> Family:
    """A new, untrained family for candidate id ``candidate`` (see :func:`parse_candidate`).

    ``options`` go to the family's constructor. Raises :class:`~genretag.errors.ConfigError` for an unknown id.
    """
    import importlib

    try:
        family, experiment = parse_candidate(candidate)
    except ValueError as exc:
        raise ConfigError(f"train.candidates: {exc}") from None
    module, _, name = FAMILIES[family].partition(":")
    factory = getattr(importlib.import_module(module), name)
    return factory(experiment=experiment, **options) if experiment else factory(**options)


def clip_windows(waveform: np.ndarray, *, clip_samples: int) -> np.ndarray:
    """Consecutive whole clips of one track: float32 [n, clip_samples], n = len // clip_samples (may be 0).

    The clip rule of :func:`genretag.dataset.clips_for_tracks` (a partial clip at the end is dropped).
    """
    count = len(waveform) // clip_samples
    return np.ascontiguousarray(np.asarray(waveform[: count * clip_samples], dtype=np.float32).reshape(count, clip_samples))


def load_split(
    clips: pd.DataFrame, *, split: str, raw_dir: Path, labels: Sequence[str], source_rate: int, sample_rate: int, clip_seconds: float
) -> ClipSet:
    """The clips of ``split`` in clips.csv, cut from the ingested WAVs and resampled to ``sample_rate``.

    ``clips``: clips.csv rows (``clip_id``, ``track_id``, ``genre``, ``split``, ``start_s``);
    the WAVs are ``raw_dir/<genre>/<track_id>.wav``, mono at ``source_rate`` Hz (the ingest stage's
    output). Each track is read and resampled once (:func:`genretag.audio.decoding.resample`, soxr HQ,
    as :func:`genretag.audio.decoding.decode` for evaluation) and its clips cut by
    :func:`genretag.audio.clips.cut_clips` at ``start_s`` over ``round(clip_seconds * sample_rate)``
    samples. Raises :class:`~genretag.core.errors.TrainingDataError` naming a WAV that is missing,
    unreadable or too short for its clips.
    """
    from genretag.audio.clips import cut_clips, start_samples
    from genretag.audio.decoding import load_wav, resample
    from genretag.core.errors import AudioError, TrainingDataError

    clip_samples = int(round(clip_seconds * sample_rate))
    lookup = {label: index for index, label in enumerate(labels)}
    rows = clips[clips["split"] == split]
    waveforms: list[np.ndarray] = []
    for (genre, track_id), track in rows.groupby(["genre", "track_id"], sort=False):
        path = raw_dir / genre / f"{track_id}.wav"
        try:
            audio = resample(load_wav(path, sample_rate=source_rate), orig_sr=source_rate, target_sr=sample_rate)
            starts = start_samples(track["start_s"].astype(float), sample_rate=sample_rate)
            waveforms.append(cut_clips(audio, starts=starts, clip_samples=clip_samples, source=path))
        except (AudioError, OSError, RuntimeError) as exc:
            reason = exc.reason if isinstance(exc, AudioError) else str(exc)
            raise TrainingDataError(f"{path}: cannot cut its clips ({reason}); rerun the ingest stage") from exc
    ordered = pd.concat([t for _, t in rows.groupby(["genre", "track_id"], sort=False)]) if len(rows) else rows
    return ClipSet(
        waveforms=np.concatenate(waveforms) if waveforms else np.zeros((0, clip_samples), np.float32),
        labels=np.array([lookup[g] for g in ordered["genre"]], dtype=np.int64),
        track_ids=tuple(ordered["track_id"]),
        clip_ids=tuple(ordered["clip_id"]),
        sample_rate=sample_rate,
    )
