"""Typed view of params.yaml and the project's file layout."""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genretag.core.errors import ConfigError

GTZAN_GENRES: tuple[str, ...] = (
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestParams(_Section):
    source: str = "demo"
    demo_tracks_per_genre: int = Field(6, ge=1)
    demo_seed: int = 2021
    feedback: str = "data/feedback/labels.csv"  # reviewed catalog labels (genretag review import); "": none


class AudioParams(_Section):
    # genretag.audio.SAMPLE_RATE_BOUNDS_HZ (4..384 kHz), written out: config must not import the decoders
    sample_rate: int = Field(22050, ge=4_000, le=384_000)
    clip_seconds: float = Field(3.0, gt=0)
    clips_per_track: int = Field(10, ge=1)

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))


class ValidateParams(_Section):
    min_duration_s: float = Field(3.0, ge=0)
    max_duration_s: float = Field(35.0, gt=0)
    silence_rms_dbfs: float = -60.0
    max_bad_fraction: float = Field(0.2, ge=0, le=1)
    max_class_imbalance: float = Field(3.0, ge=1)

    @model_validator(mode="after")
    def _duration_range(self) -> ValidateParams:
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError(f"validate.min_duration_s ({self.min_duration_s:g}) must be below "
                             f"validate.max_duration_s ({self.max_duration_s:g})")
        return self


class SplitParams(_Section):
    method: Literal["track", "clip", "filtered"] = "track"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2021

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(value) - 1.0) > 1e-6 or min(value) < 0:
            raise ValueError(f"fractions must be non-negative and sum to 1, got {list(value)}")
        return value


class SpectrogramParams(_Section):
    n_fft: int = Field(2048, gt=0)
    hop_length: int = Field(512, gt=0)
    n_mels: int = Field(128, gt=0)
    fmin: float = Field(0.0, ge=0)
    fmax: float | None = None
    top_db: float = Field(80.0, gt=0)
    colormap: Literal["viridis"] = "viridis"
    image_size: tuple[int, int] = (128, 128)

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError(f"image_size must be two positive numbers [height, width], got {list(value)}")
        return value

    @model_validator(mode="after")
    def _frames(self) -> SpectrogramParams:
        # A hop longer than the FFT window skips samples between frames (librosa allows it; no
        # spectrogram of music wants it).
        if self.hop_length > self.n_fft:
            raise ValueError(f"spectrogram.hop_length ({self.hop_length}) must not exceed spectrogram.n_fft ({self.n_fft})")
        if self.fmax is not None and self.fmin >= self.fmax:
            raise ValueError(f"spectrogram.fmin ({self.fmin:g}) must be below spectrogram.fmax ({self.fmax:g})")
        return self


class TrainParams(_Section):
    candidates: tuple[str, ...] = ("musicnn-msd", "mfcc-logreg", "paper-exp8")  # model families that dvc repro trains
    family_modules: tuple[str, ...] = ()  # modules outside genretag.families that register families (e.g. tests.toy_family)
    seed: int = 2021

    @model_validator(mode="after")
    def _distinct_candidates(self) -> TrainParams:
        value = self.candidates
        if not value or len(set(value)) != len(value):
            raise ValueError(f"train.candidates = {list(value)}: must be a non-empty list without repeats")
        return self


class EvaluateParams(_Section):
    tsne_clips: int = Field(250, ge=0)


class ExportParams(_Section):
    opset: int = Field(17, ge=13, le=18)
    parity_tolerance: float = Field(1e-3, gt=0)  # issue 10: max |probability difference|, waveform in
    quantize: Literal["none", "int8"] = "none"  # int8: also export each candidate statically quantised (<id>-int8)
    quantize_format: Literal["qoperator", "qdq"] = "qoperator"  # onnxruntime.quantization's QuantFormat
    calibration_clips: int = Field(256, ge=1)  # training clips the int8 ranges are calibrated on (at most)
    drift_reference_clips: int = Field(1000, ge=2)  # training clips (at most) whose embeddings make the drift reference
    int8_min_agreement: float = Field(0.9, gt=0, le=1)  # least top-1 agreement with float32 on test + synthetic clips
    temperature_min_clips: int = Field(30, ge=1)  # validation clips needed to fit the calibration temperature; fewer: T = 1
    track_temperature_min_tracks: int = Field(20, ge=2)  # validation tracks needed to fit the track temperature on them;
    # fewer: out-of-fold predictions over the training tracks (heads over frozen features), else T = 1
    track_temperature_folds: int = Field(5, ge=2)  # folds of those out-of-fold predictions (capped by the fewest tracks of a genre)
    embedding_dtype: Literal["float16", "float32"] = "float16"  # how catalog rows store this model's track embeddings
    unknown_accept: float = Field(0.95, gt=0, le=1)  # issue 21: share of validation tracks the unknown threshold accepts
    unknown_neighbours: int = Field(1, ge=1)  # k of the unknown score: distance to the k-th nearest train track (bench/open_set.py)
    unknown_bank_tracks: int = Field(2000, ge=1)  # train tracks (at most, seeded sample) the unknown score compares with, in the metadata


class RegisterParams(_Section):
    model_name: str = "genretag-cnn"
    alpha: float = Field(0.05, gt=0, lt=1)  # significance level of the champion gate (genretag.evaluation.gate)
    min_improvement: float = Field(0.005, ge=0, le=1)  # least track-accuracy gain (fraction) to promote
    # Candidate id of the floor every served model must not fall below; one of train.candidates (checked
    # when params load). null: no baseline, the floor checks chance only. A baseline that is listed but
    # cannot be read or scored makes the gate refuse (genretag.registry.register), never pass on chance.
    baseline: str | None = "mfcc-logreg"
    cv_below_tracks: int = Field(50, ge=0)  # a test split with fewer tracks: the gate cross-validates over every labelled track (0: never)
    cv_folds: int = Field(5, ge=2)  # k of the gate's repeated stratified track-level k-fold cross-validation
    cv_repeats: int = Field(4, ge=1)  # its repetitions (Bouckaert & Frank 2004 use 10 x 10; heads over frozen features refit in seconds)
    tracking_uri: str = "sqlite:///mlflow.db"


class ScoreParams(_Section):
    model: str = "champion"  # a path, champion | challenger, a version number (2 or "2"), models:/...
    max_windows: int = Field(20, ge=0)
    early_exit: bool = False  # score a track's windows in rounds and stop when the rest cannot change its genre
    early_exit_round: int = Field(4, ge=1)  # windows of a track per round
    early_exit_risk: float = Field(0.05, gt=0, lt=1)  # per track: the chance that stopping early changes the genre
    batch_size: int = Field(256, ge=1)
    batch_memory_mb: int = Field(384, ge=0)  # cap on a session run's activations: fewer windows per run for a big model; 0: none
    commit_every: int = Field(16, ge=1)
    max_pending: int = Field(10000, ge=1)  # tracks (copies included) a tagging round holds before it scores them: a run's memory
    workers: int = Field(0, ge=0)
    database_url: str = "sqlite:///catalog.db"
    dask_address: str | None = None
    dask_chunk: int = Field(64, ge=1)  # tracks per Dask task: decoded and scored on one worker
    dask_session_threads: int = Field(0, ge=0)  # onnxruntime threads of each worker's session; 0: its default (every core)
    drift_psi_warn: float = Field(0.25, gt=0)  # warn when a run's predicted genres drift this far (PSI) from training
    drift_embedding_warn: float = Field(0.5, gt=0)  # warn when the run's mean embedding is this far (mean |delta|/sd) from training
    drift_loudness_warn_db: float = Field(6.0, gt=0)  # warn when the run's mean level differs this much (dB) from the training clips'
    drift_min_tracks: int = Field(100, ge=1)  # a run tagging fewer tracks records its drift but warns on none (sampling noise)
    review_below: float = Field(0.5, ge=0, le=1)  # tags with a lower confidence are flagged needs_review (0: none)
    progress_every_s: float = Field(30.0, gt=0)  # off a terminal, a progress line every this many seconds (genretag.tagging.progress)

    @field_validator("model", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        """``model: 2`` (YAML reads an int) is registry version "2", as the README allows."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SimilarParams(_Section):
    exact_below: int = Field(20000, ge=0)  # a model version with fewer track embeddings is searched exactly (numpy), not by the index
    index_dir: str | None = None  # where the similarity indexes live (null: <catalog file>.index beside SQLite, <root>/catalog.index/<db> else)


class Params(_Section):
    genres: tuple[str, ...] = GTZAN_GENRES
    ingest: IngestParams = IngestParams()
    audio: AudioParams = AudioParams()
    validation: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    spectrogram: SpectrogramParams = SpectrogramParams()
    train: TrainParams = TrainParams()
    families: dict[str, dict[str, Any]] = {}  # families.<name>: each family's own section (its options model)
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    registry: RegisterParams = Field(RegisterParams(), alias="register")
    score: ScoreParams = ScoreParams()
    similar: SimilarParams = SimilarParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _distinct_genres(self) -> Params:
        if len(set(self.genres)) != len(self.genres) or not self.genres:
            raise ValueError(f"genres must be a non-empty list of distinct names, got {list(self.genres)}")
        return self

    @model_validator(mode="after")
    def _registered_checks(self) -> Params:
        """The checks that capabilities above core register for their own params (the model families check
        ``train.candidates`` and their ``families.<name>`` sections): entry points of group
        :data:`PARAMS_CHECKS`, each a callable ``(params) -> None`` raising ValueError naming its key."""
        for check in params_checks():
            check(self)
        return self

    @model_validator(mode="after")
    def _below_nyquist(self) -> Params:
        nyquist = self.audio.sample_rate / 2
        fmax = self.spectrogram.fmax
        if fmax is not None and fmax > nyquist:
            raise ValueError(f"spectrogram.fmax ({fmax:g}) must not exceed audio.sample_rate / 2 ({nyquist:g} Hz)")
        if self.spectrogram.fmin >= nyquist:
            raise ValueError(f"spectrogram.fmin ({self.spectrogram.fmin:g}) must be below audio.sample_rate / 2 ({nyquist:g} Hz)")
        if self.audio.clip_samples < self.spectrogram.n_fft:
            raise ValueError(f"audio.clip_seconds ({self.audio.clip_seconds:g}) holds {self.audio.clip_samples} samples, "
                             f"fewer than spectrogram.n_fft ({self.spectrogram.n_fft})")
        return self

    @model_validator(mode="after")
    def _baseline_is_a_candidate(self) -> Params:
        baseline = self.registry.baseline
        if baseline is not None and baseline not in self.train.candidates:
            raise ValueError(f"register.baseline ({baseline!r}) is not one of train.candidates "
                             f"({', '.join(self.train.candidates)}); null: chance only")
        return self


PARAMS_ENV = "GENRETAG_PARAMS"


def project_root() -> Path:
    """The project root: $GENRETAG_ROOT, else the folder of $GENRETAG_PARAMS (what ``--params FILE``
    sets: relative paths in a parameters file, such as ``sqlite:///catalog.db``, are relative to its
    folder, wherever the command runs), else the nearest folder above cwd holding params.yaml, else cwd."""
    if env := os.environ.get("GENRETAG_ROOT"):
        return Path(env).resolve()
    if params := os.environ.get(PARAMS_ENV):
        return Path(params).expanduser().resolve().parent
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder
    return here


def worker_count(requested: int) -> int:
    """Worker processes to use: ``requested``, or every core this process may use when 0."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def params_file(explicit: str | Path | None = None) -> Path | None:
    """Which parameters file applies: ``explicit`` (``--params``), else $GENRETAG_PARAMS, else the
    project's params.yaml (see :func:`project_root`), else None: the built-in defaults of :class:`Params`."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get(PARAMS_ENV):
        return Path(env)
    found = project_root() / "params.yaml"
    return found if found.is_file() else None


PARAMS_CHECKS = "genretag.params_checks"  # entry-point group (pyproject.toml) of params checks above core


@functools.cache
def params_checks() -> tuple[Callable[[Params], None], ...]:
    """The registered params checks (entry-point group :data:`PARAMS_CHECKS`), loaded once per process.

    Core imports no subpackage above it; a capability registers its check in pyproject.toml instead.
    Raises ConfigError when none is registered: genretag is then not installed (``pip install -e .``).
    """
    checks = tuple(entry.load() for entry in importlib.metadata.entry_points(group=PARAMS_CHECKS))
    if not checks:
        raise ConfigError(f"no {PARAMS_CHECKS} entry points: install genretag (pip install -e .) to check params")
    return checks


def load_params(path: str | Path | None = None) -> Params:
    """Read and check a parameters file (default: :func:`params_file`); with none, the built-in
    defaults. A wrong key or value, or a named file that is missing, raises ConfigError naming it."""
    file = Path(path) if path else params_file()
    if file is None:
        return Params()
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: no such parameters file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"{file}: {problems}") from exc


def _describe(error: dict) -> str:
    """One pydantic error as "key = value: reason" (cross-field rules name their keys themselves)."""
    key = ".".join(str(part) for part in error["loc"])
    reason = str(error["msg"]).removeprefix("Value error, ")
    if isinstance(error.get("input"), dict):  # a whole section
        # a rule across its keys names them and their values itself
        return reason if error["type"] == "value_error" else f"{key}: {reason}"
    return f"{key} = {error.get('input')!r}: {reason}"


CANDIDATES_DIR = "candidates"  # models/candidates/<id>/
SERVED_DIR = "served"  # models/served/<id>/: a candidate refitted on every labelled track (the cross-validated gate)
INT8_SUFFIX = "-int8"  # model version (and candidate id) of the int8 model of a float32 one
INT8_DIR = "int8"  # models/candidates/<id>/int8/model.onnx: inside the candidate's DVC output


@dataclass(frozen=True)
class Layout:
    """Where every stage reads and writes, relative to the project root."""

    root: Path

    @property
    def raw_dir(self) -> Path: return self.root / "data" / "raw"
    @property
    def manifest(self) -> Path: return self.raw_dir / "manifest.csv"
    @property
    def tracks(self) -> Path: return self.root / "data" / "tracks.csv"
    @property
    def quarantine(self) -> Path: return self.root / "data" / "quarantine.csv"
    @property
    def clips(self) -> Path: return self.root / "data" / "clips.csv"
    @property
    def models_dir(self) -> Path: return self.root / "models"

    def candidate_dir(self, candidate: str) -> Path:
        """``models/candidates/<candidate>/``: the family's trained state, training.json, model.onnx, card;
        its int8 derivative in ``<that>/int8/`` (:data:`INT8_DIR`)."""
        return self.models_dir / CANDIDATES_DIR / candidate
    def served_dir(self, candidate: str) -> Path:
        """``models/served/<candidate>/``: the candidate's family refitted on every labelled track by the register stage's
        cross-validated gate (:mod:`genretag.training.cross_validation`), the model it registers as champion."""
        return self.models_dir / SERVED_DIR / candidate
    @property
    def metrics_dir(self) -> Path: return self.root / "metrics"
    @property
    def plots_dir(self) -> Path: return self.root / "plots"
    @property
    def reports_dir(self) -> Path: return self.root / "reports"

    def feedback(self, params: Params) -> Path | None:
        """The reviewed-labels file of ``ingest.feedback`` (relative: to the root), None when unset."""
        return (self.root / params.ingest.feedback) if params.ingest.feedback else None


def layout(root: Path | None = None) -> Layout:
    return Layout((root or project_root()).resolve())


def resolve_sqlite_url(url: str, root: Path) -> str:
    """Make a relative ``sqlite:///file.db`` URL absolute against the project root."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return prefix + str((root / url[len(prefix):]).resolve())
    return url

