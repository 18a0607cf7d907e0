"""Model families: every way genretag can turn a 3-s clip into genre probabilities.

One interface for all families, one module per family (``genretag.families.<module>``). A family
trains on the clips of a split, predicts with its own framework (the parity reference), and
exports a contract-v2 ONNX graph (waveform in; probabilities and embedding out; see
:mod:`genretag.contract`). The gate, the tagger and the handoff only ever see that graph, so they
never branch on the family. Adding a family is one module: a class decorated with
:func:`register_family` in this package, in a module named by params.yaml ``train.family_modules``, or
behind an entry point of the :data:`FAMILY_ENTRY_POINTS` group. Its DVC stage (``candidate-<id>``,
written by :mod:`genretag.training.stages`) depends on that module, the modules it imports and its own
params section, so editing one family retrains only that family.
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

    name: ClassVar[str]  # the candidate id, or its prefix when the family has variants
    options: ClassVar[type]  # pydantic model of params.yaml ``families.<name>``
    dvc_params: ClassVar[tuple[str, ...]]  # other params keys its candidates read (their DVC stages depend on them)
    variants: ClassVar[tuple[str, ...]]  # candidate ``<name>-<variant>``; empty: the candidate is ``<name>``
    sample_rate: int  # Hz, the rate of the contract's ``waveform`` input
    clip_samples: int  # S

    @classmethod
    def from_params(cls, options: Any, *, params: Any, variant: str | None) -> Family:
        """A new family from its validated ``options`` and the :class:`~genretag.core.config.Params` keys in ``dvc_params``."""

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


FAMILY_ENTRY_POINTS = "genretag.families"
"""Entry-point group of families that live in other distributions (each entry point names a module)."""

_REGISTRY: dict[str, type] = {}


def register_family(cls: type) -> type:
    """Class decorator: make ``cls`` the family ``cls.name`` (one module is one capability).

    A family class declares, besides the :class:`Family` methods: ``name`` (the candidate id, or its
    prefix when it has ``variants``), ``options`` (the pydantic model of its params.yaml section
    ``families.<name>``), ``dvc_params`` (the other params keys its candidates read, which their DVC
    stages depend on), ``variants`` (valid suffixes: candidate ``<name>-<variant>``; empty: none) and
    ``from_params(options, *, params, variant)``; optionally ``check_input(params, *, variant)``, a classmethod
    raising ValueError (naming the params key) when the params cannot feed the family (checked when params
    load: :func:`check_params`). Registering two different classes under one name
    raises :class:`~genretag.core.errors.ConfigError`.
    """
    for attribute in ("name", "options", "dvc_params", "variants", "from_params"):
        if not hasattr(cls, attribute):
            raise ConfigError(f"{cls.__module__}.{cls.__qualname__}: a family must declare {attribute!r}")
    known = _REGISTRY.get(cls.name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ConfigError(f"{cls.__module__}: family {cls.name!r} is already registered by {known.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def _import(module: str, *, origin: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{origin}: cannot import family module {module!r} ({exc})") from exc


def registry(modules: Sequence[str] = ()) -> Mapping[str, type]:
    """Every registered family class by name: the modules of this package, the modules named by the
    :data:`FAMILY_ENTRY_POINTS` entry points, and ``modules`` (``train.family_modules``, e.g.
    ``tests.toy_family``), each imported once; a family registered by another module imported earlier in this
    process (another project's ``family_modules``) is not one of them. Family modules import no framework at import time.

    Raises :class:`~genretag.core.errors.ConfigError` naming a module that cannot be imported.
    """
    import importlib.metadata
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        _import(f"{__name__}.{info.name}", origin="genretag.families")
    named = {entry.value.partition(":")[0] for entry in importlib.metadata.entry_points(group=FAMILY_ENTRY_POINTS)}
    for entry in importlib.metadata.entry_points(group=FAMILY_ENTRY_POINTS):
        _import(entry.value.partition(":")[0], origin=f"entry point {FAMILY_ENTRY_POINTS}:{entry.name}")
    for module in modules:
        _import(module, origin="train.family_modules")
    named |= set(modules)
    return {name: cls for name, cls in _REGISTRY.items()
            if cls.__module__ == __name__ or cls.__module__.startswith(f"{__name__}.") or cls.__module__ in named}


def candidate_ids(family: type) -> tuple[str, ...]:
    """The candidate ids of a family class: its name, or ``<name>-<variant>`` per variant."""
    return tuple(f"{family.name}-{v}" for v in family.variants) if family.variants else (family.name,)


def parse_candidate(candidate: str, *, modules: Sequence[str] = ()) -> tuple[type, str | None]:
    """Candidate id -> (family class, variant or None): ``paper-exp8`` -> (Paper, "exp8").

    ``modules``: ``train.family_modules``. Raises ValueError naming the valid ids for an unknown id.
    """
    families = registry(modules)
    for family in families.values():
        if candidate in candidate_ids(family):
            return family, (candidate[len(family.name) + 1:] if family.variants else None)
    valid = ", ".join(f"{f.name}-<{'|'.join(f.variants)}>" if f.variants else f.name for f in families.values())
    raise ValueError(f"unknown candidate {candidate!r}; valid: {valid}")


def family_options(family: type, sections: Mapping[str, Any]) -> Any:
    """The family's options: its ``options`` model validated from params.yaml's ``families.<name>`` section.

    ``sections``: the whole ``families`` mapping. Raises ValueError naming ``families.<name>.<key>``.
    """
    from pydantic import ValidationError

    try:
        return family.options.model_validate(sections.get(family.name) or {})
    except ValidationError as exc:
        problems = "; ".join(f"families.{family.name}.{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(problems) from None


def check_params(params: Any) -> None:
    """The families' part of loading params (registered as a ``genretag.params_checks`` entry point, so that
    genretag.core.config imports no family): every ``train.candidates`` id names a registered family
    (:func:`parse_candidate`), and every ``families.<name>`` section is a registered family's and valid for
    its options model; a family with a ``check_input(params, *, variant)`` classmethod checks its own input
    constraints on the params it reads. Raises ValueError naming the key and the reason."""
    candidates, modules = params.train.candidates, params.train.family_modules
    for candidate in candidates:
        try:
            parse_candidate(candidate, modules=modules)
        except ValueError as exc:
            raise ValueError(f"train.candidates = {list(candidates)}: {exc}") from None
        check_candidate(params, candidate)
    known = registry(modules)
    for name in params.families:
        if name not in known:
            raise ValueError(f"families.{name}: no such family; registered: {', '.join(known)}")
        family_options(known[name], params.families)  # ValueError naming families.<name>.<key>


def check_candidate(params: Any, candidate: str) -> None:
    """The family of ``candidate`` checks its own input constraints on ``params`` (its optional
    ``check_input(params, *, variant)`` classmethod, e.g. the paper CNNs' least image size).
    Raises ValueError naming the params key, or the unknown candidate."""
    family, variant = parse_candidate(candidate, modules=params.train.family_modules)
    check_input = getattr(family, "check_input", None)
    if check_input is not None:
        check_input(params, variant=variant)


def create(candidate: str, *, modules: Sequence[str] = (), **options: Any) -> Family:
    """A new, untrained family for candidate id ``candidate`` (see :func:`parse_candidate`), built with
    the constructor ``options`` directly (tests, benchmarks; the pipeline uses :func:`from_params`).

    Raises :class:`~genretag.core.errors.ConfigError` for an unknown id.
    """
    try:
        family, variant = parse_candidate(candidate, modules=modules)
    except ValueError as exc:
        raise ConfigError(f"train.candidates: {exc}") from None
    return family(variant=variant, **options) if variant else family(**options)


def from_params(candidate: str, params: Any) -> Family:
    """A new, untrained family for ``candidate`` as params.yaml configures it: its ``families.<name>``
    section (its ``options`` model) and the keys it declares in ``dvc_params``.

    ``params``: a :class:`~genretag.core.config.Params`. Raises ConfigError for an unknown id.
    """
    try:
        family, variant = parse_candidate(candidate, modules=params.train.family_modules)
    except ValueError as exc:
        raise ConfigError(f"train.candidates: {exc}") from None
    return family.from_params(family_options(family, params.families), params=params, variant=variant)


def track_folds(track_ids: Sequence[str], labels: np.ndarray, *, folds: int, repeats: int = 1, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Repeated stratified track-level k-fold splits of clips: ``repeats`` x ``folds`` pairs of int64 clip
    indices (fit, held out), every clip of a track on one side, the tracks stratified by genre
    (scikit-learn ``RepeatedStratifiedKFold`` over the tracks). ``track_ids``: [n] per clip; ``labels``: int [n].
    ``folds`` is capped by the fewest tracks of any genre; fewer than two: ``[]`` (no cross-validation possible).
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    tracks = np.asarray(track_ids)
    names, first, index = np.unique(tracks, return_index=True, return_inverse=True)
    genre = np.asarray(labels)[first]
    counts = np.bincount(genre) if len(genre) else np.zeros(0, np.int64)
    k = min(folds, int(counts[counts > 0].min())) if counts.any() else 0
    if k < 2:
        return []
    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    return [(np.flatnonzero(np.isin(index, fit)), np.flatnonzero(np.isin(index, held)))
            for fit, held in splitter.split(np.zeros(len(names)), genre)]


def clip_subset(clips: ClipSet, index: np.ndarray) -> ClipSet:
    """The clips at int ``index`` of ``clips`` (same rate)."""
    index = np.asarray(index, dtype=np.int64)
    return ClipSet(clips.waveforms[index], clips.labels[index], tuple(np.asarray(clips.track_ids)[index]),
                   tuple(np.asarray(clips.clip_ids)[index]), clips.sample_rate)


def cross_fitted(family: Family, clips: ClipSet, *, folds: Sequence[tuple[np.ndarray, np.ndarray]], labels: tuple[str, ...],
                 seed: int) -> list[np.ndarray] | None:
    """Held-out clip probabilities for each (fit, held-out) fold of ``clips``: float [len(held), K] per fold, each
    from a model of ``family``'s kind fitted on the fold's fit clips only (``family`` itself is not changed).
    Only for families that refit cheaply (a ``fold_probabilities`` method: the heads over frozen features embed
    every clip once and refit the head per fold); None for the others (the Keras families: a refit is a training run).
    """
    refit = getattr(family, "fold_probabilities", None)
    if refit is None:
        return None
    return refit(clips, folds=folds, labels=labels, seed=seed)


def clip_windows(waveform: np.ndarray, *, clip_samples: int) -> np.ndarray:
    """Consecutive whole clips of one track: float32 [n, clip_samples], n = len // clip_samples (may be 0).

    The clip rule of :func:`genretag.data.splits.clips_for_tracks` (a partial clip at the end is dropped).
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
