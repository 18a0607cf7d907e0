"""Training: one model family (``train.candidates`` id) on the audio clips of data/clips.csv, as an MLflow run,
then its parity-gated contract-v2 export.

``train_candidate`` fits the family on the train split (validation for early stopping) and saves
its state under ``models/candidates/<id>/`` with ``training.json`` (and ``training_curves.png`` for
families that learn by epochs); ``export_trained_candidate`` writes ``model.onnx`` and
``MODEL_CARD.md`` beside it through :func:`genretag.export.export_candidate`. The same parameters
and seed give the same model (TensorFlow op determinism, seeded numpy).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import genretag  # noqa: F401  - offline/quiet environment before TensorFlow loads
from genretag.core.atomic import save_figure, write_json
from genretag.core.config import Layout, Params
from genretag.core.errors import TrainingDataError
from genretag.data.splits import read_clips
from genretag.families import ClipSet, Family, from_params, load_split
from genretag.onnx.contract import ModelContract, OpenSet
from genretag.training.card import render_model_card, split_counts
from genretag.training.export import ExportResult, export_candidate
from genretag.training.int8 import Int8Refused, Int8Result, NothingToQuantize, export_int8
from genretag.core.config import INT8_DIR
from genretag.training.parity import TestClips
from genretag.training.provenance import git_commit, training_data_hash

if TYPE_CHECKING:
    from genretag.evaluation.calibration import Calibration, TrackCalibration
    from genretag.training.temperature import OutOfFold

logger = logging.getLogger(__name__)

CURVES_NAME = "training_curves.png"


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- runtime


def plot_training_curves(history: pd.DataFrame, path: str | Path, *, title: str = "", best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, training vs validation (the paper's Figure 2).

    ``history``: one row per epoch with columns epoch, loss, accuracy, val_loss, val_accuracy.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4))
    for axis, metric, label in zip(figure.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy"), strict=True):
        axis.plot(history["epoch"], history[metric], marker="o", label="training")
        axis.plot(history["epoch"], history[f"val_{metric}"], marker="o", label="validation")
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("Epoch")
        axis.set_ylabel(label)
        axis.set_title(f"Model {label.lower()}")
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)

def _flat_params(params: Params, family) -> dict[str, Any]:
    """The MLflow params of a candidate's run: train.* (but the candidate list), the family's own section
    ``families.<name>`` with its defaults filled in, and the data's facts."""
    from genretag.families import family_options

    options = family_options(type(family), params.families).model_dump()
    return {
        **{f"train.{key}": value for key, value in params.train.model_dump().items() if key != "candidates"},
        **{f"families.{type(family).name}.{key}": value for key, value in options.items()},
        "genres": ",".join(params.genres),
        "image_size": "x".join(str(v) for v in params.spectrogram.image_size),
        "split_method": params.split.method,
        "data_source": params.ingest.source,
    }


def read_training(path: str | Path) -> dict[str, Any]:
    """training.json of a run, or {} when there is none."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingDataError(f"{path}: not valid JSON: {exc}") from exc



# --------------------------------------------------------------------------- model families (train.candidates)

@dataclass(frozen=True)
class DecodedSplits:
    """The train, validation and test clips of data/clips.csv, each decoded once at one family's sample rate
    (:func:`genretag.families.load_split`): float32 [n, S] waveforms with integer labels into params.genres."""

    train: ClipSet
    validation: ClipSet
    test: ClipSet

    def clips(self, split: str, *, labels: Sequence[str]) -> TestClips:
        """Split ``split`` as :class:`~genretag.training.parity.TestClips` (genre names): the test split is the
        parity gate's clips, the validation split the calibration's."""
        return TestClips.from_clip_set(getattr(self, split), labels=labels)


def _decode(params: Params, paths: Layout, clips: pd.DataFrame, *, split: str, sample_rate: int) -> ClipSet:
    """The ``split`` rows of ``clips`` (clips.csv) cut from data/raw's WAVs at ``sample_rate`` Hz."""
    return load_split(clips, split=split, raw_dir=paths.raw_dir, labels=params.genres, source_rate=params.audio.sample_rate,
                      sample_rate=sample_rate, clip_seconds=params.audio.clip_seconds)


def decode_splits(params: Params, paths: Layout, *, sample_rate: int) -> DecodedSplits:
    """Every split of data/clips.csv decoded at ``sample_rate`` Hz (data/clips.csv read once, each track once).

    Raises TrainingDataError naming clips.csv or a WAV that is missing, unreadable or too short for its clips.
    """
    clips = read_clips(paths.clips, genres=params.genres)
    decoded = {split: _decode(params, paths, clips, split=split, sample_rate=sample_rate) for split in ("train", "validation", "test")}
    logger.info("decoded %s at %d Hz", ", ".join(f"{len(c)} {split}" for split, c in decoded.items()), sample_rate)
    return DecodedSplits(**decoded)


def parity_clips(params: Params, paths: Layout, family: Family, split: str = "test") -> TestClips:
    """The ``split`` clips decoded at ``family``'s rate as :class:`~genretag.training.parity.TestClips`
    (one split on its own; a candidate stage decodes every split once with :func:`decode_splits`).

    Raises TrainingDataError naming a WAV that is missing or too short (:func:`genretag.families.load_split`).
    """
    clips = _decode(params, paths, read_clips(paths.clips, genres=params.genres), split=split, sample_rate=family.sample_rate)
    return TestClips.from_clip_set(clips, labels=params.genres)


@dataclass(frozen=True)
class Candidate:
    """One candidate stage's working set: the family object, built once (fitted in place by
    :func:`train_candidate`, then exported, calibrated and quantised as it is), and its splits decoded once."""

    name: str  # the train.candidates id, e.g. "mfcc-logreg"
    family: Family
    splits: DecodedSplits
    folder: Path | None = None  # where its state, training.json and model.onnx go (None: models/candidates/<id>/)
    fitted_on: str = "train split"  # what ``splits.train`` holds, recorded in training.json (a refit: every labelled track)

    def directory(self, paths: Layout) -> Path:
        """:attr:`folder`, or ``models/candidates/<id>/``."""
        return self.folder or paths.candidate_dir(self.name)


def prepare_candidate(params: Params, paths: Layout, candidate: str) -> Candidate:
    """A new, untrained family for ``candidate`` (:func:`genretag.families.from_params`: its own params section)
    and every split decoded at its rate. Raises ConfigError for an unknown id, TrainingDataError as
    :func:`decode_splits`, and the family's own errors (e.g. ``PretrainedWeightsError``) as they come."""
    family = from_params(candidate, params)
    return Candidate(name=candidate, family=family, splits=decode_splits(params, paths, sample_rate=family.sample_rate))


def load_candidate(params: Params, paths: Layout, candidate: str) -> Candidate:
    """:func:`prepare_candidate` with the trained state that :func:`train_candidate` saved loaded into the family
    (to export a candidate trained by an earlier run). Raises as ``prepare_candidate`` and the family's ``load``."""
    prepared = prepare_candidate(params, paths, candidate)
    prepared.family.load(paths.candidate_dir(candidate))
    return prepared


def train_candidate(params: Params, paths: Layout, stage: Candidate, *, log: Callable[[str], None]) -> dict[str, Any]:
    """Fit ``stage.family`` on the decoded train split (validation for early stopping) as its own MLflow run.

    Writes ``models/candidates/<id>/`` (the family's state and ``training.json``); returns the training
    facts with ``mlflow_run_id``. The family is fitted in place: hand the same ``stage`` to
    :func:`export_trained_candidate` and :func:`quantize_trained_candidate`. Raises TrainingDataError
    for an empty train split and the family's errors as they come.
    """
    import mlflow

    from genretag.core.tracking import use_tracking

    candidate, family, train_set, validation_set = stage.name, stage.family, stage.splits.train, stage.splits.validation
    if not len(train_set):
        raise TrainingDataError(f"{paths.clips}: no train clips for candidate {candidate}")
    folder = stage.directory(paths)
    use_tracking(params, root=paths.root)
    with mlflow.start_run(run_name=candidate, tags={"genretag.stage": "train", "genretag.candidate": candidate,
                                                    "genretag.family": family.name, "genretag.fitted_on": stage.fitted_on}) as run:
        mlflow.log_params({**_flat_params(params, family), "candidate": candidate, "n_train": len(train_set),
                           "n_validation": len(validation_set), "sample_rate": family.sample_rate})
        started = time.perf_counter()
        facts = family.fit(train_set, validation_set, labels=tuple(params.genres), seed=params.train.seed, log=log)
        seconds = round(time.perf_counter() - started, 3)
        family.save(folder)
        training = {"candidate": candidate, "mlflow_run_id": run.info.run_id, "fit_seconds": seconds,
                    "n_train": len(train_set), "n_validation": len(validation_set), "genres": list(params.genres),
                    "fitted_on": stage.fitted_on, "train_tracks": len(set(train_set.track_ids)),
                    "describe": family.describe(), "preprocessing": family.preprocessing(), **facts,
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        write_json(folder / "training.json", training)
        if facts.get("history"):
            plot_training_curves(pd.DataFrame(facts["history"]), folder / CURVES_NAME, title=candidate, best_epoch=facts.get("best_epoch"))
            mlflow.log_artifact(str(folder / CURVES_NAME), artifact_path="train")
        log_curves(facts)
        mlflow.log_metrics({k: float(v) for k, v in facts.items() if isinstance(v, int | float) and v is not None})
        mlflow.log_artifact(str(folder / "training.json"), artifact_path="train")
    return training


def log_curves(facts: dict[str, Any]) -> None:
    """Log a family's curves to the active MLflow run, one metric point per step, so that MLflow draws them:
    ``facts["history"]`` (one row per epoch, the Keras families: loss, accuracy, val_*, learning_rate; step = its
    ``epoch``) and ``facts["cv_curve"]`` (the heads' inner cross-validation: one row per C of the grid, step = its
    index in the grid, with the ``C`` itself logged as ``cv_C``)."""
    import mlflow

    for row in facts.get("history") or ():
        mlflow.log_metrics({key: float(value) for key, value in row.items() if key != "epoch" and isinstance(value, int | float)},
                           step=int(row["epoch"]))
    for step, row in enumerate(facts.get("cv_curve") or ()):
        mlflow.log_metrics({f"cv_{key}": float(value) for key, value in row.items() if isinstance(value, int | float)}, step=step)


def export_trained_candidate(params: Params, paths: Layout, stage: Candidate) -> ExportResult:
    """Export the trained ``stage.family`` to ``models/candidates/<id>/model.onnx`` (+ MODEL_CARD.md) through the
    generic parity-gated :func:`genretag.training.export.export_candidate` on the decoded test split, within
    ``export.parity_tolerance`` (max |probability difference|, as configured), temperature-scaled on the decoded
    validation split (``export.temperature_min_clips``), given the unknown score (train split's statistics, threshold on the
    validation tracks, ``export.unknown_accept``); the drift reference from the decoded train split; the
    calibration's numbers go to the candidate's MLflow training run (:func:`log_export_facts`).

    Raises ExportError (nothing written) when the graph does not match the family's own predict.
    """
    from genretag.evaluation.drift import training_reference

    candidate, family, labels = stage.name, stage.family, tuple(params.genres)
    test = stage.splits.clips("test", labels=labels)
    training = read_training(stage.directory(paths) / "training.json")
    contract = ModelContract(
        labels=labels, model_name=params.registry.model_name, model_version=f"{candidate}-{training.get('mlflow_run_id', '')[:12]}",
        sample_rate=family.sample_rate, clip_samples=family.clip_samples, family=family.name,
        preprocessing=family.preprocessing(), training_data_hash=training_data_hash(paths), git_commit=git_commit(paths.root),
        drift_reference=training_reference(family, train=stage.splits.train, tracks_csv=paths.tracks,
                                           max_clips=params.export.drift_reference_clips, seed=params.train.seed),
        embedding_dtype=params.export.embedding_dtype,
    )
    counts = split_counts(paths.clips)
    out_of_fold, missing = training_out_of_fold(stage, labels=labels, folds=params.export.track_temperature_folds, seed=params.train.seed)
    result = export_candidate(
        family, contract=contract, onnx_path=stage.directory(paths) / "model.onnx", test=test,
        tolerance=params.export.parity_tolerance, validation=stage.splits.clips("validation", labels=labels),
        temperature_min_clips=params.export.temperature_min_clips, track_min_tracks=params.export.track_temperature_min_tracks,
        out_of_fold=out_of_fold, out_of_fold_missing=missing,
        train=stage.splits.clips("train", labels=labels), unknown_accept=params.export.unknown_accept,
        unknown_neighbours=params.export.unknown_neighbours, unknown_bank_tracks=params.export.unknown_bank_tracks, seed=params.train.seed,
        card=lambda parity, calibration, track, open_set: render_model_card(
            params, contract, parity=parity, test=test, counts=counts, description=family.describe(), calibration=calibration,
            track_calibration=track, open_set=open_set))
    log_export_facts(params, paths, training.get("mlflow_run_id"), result.calibration, result.track_calibration, result.open_set)
    return result


def training_out_of_fold(stage: Candidate, *, labels: tuple[str, ...], folds: int, seed: int) -> tuple[OutOfFold | None, str]:
    """(out-of-fold predictor, why none): held-out clip probabilities over ``stage``'s training tracks, each fold's
    model of the same family fitted on the other folds (:func:`genretag.families.cross_fitted`, stratified track-level
    ``folds``-fold). None, with the reason, for a family that does not refit cheaply (the Keras families: each fold
    would be a training run; their track temperature is then fitted on enough validation tracks, or T = 1) or too few
    training tracks per genre for two folds."""
    from genretag.families import cross_fitted, track_folds

    train = stage.splits.train
    if not hasattr(stage.family, "fold_probabilities"):
        return None, f"{stage.name} does not refit cheaply (a refit is a training run): no out-of-fold predictions"
    splits = track_folds(train.track_ids, train.labels, folds=folds, seed=seed)
    if not splits:
        return None, "fewer than two training tracks in some genre: no out-of-fold predictions"

    def predict() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        held = np.concatenate([h for _, h in splits])
        probabilities = np.concatenate(cross_fitted(stage.family, train, folds=splits, labels=labels, seed=seed))
        return probabilities, train.labels[held], tuple(np.asarray(train.track_ids)[held])

    return predict, ""


def log_export_facts(params: Params, paths: Layout, run_id: str | None, calibration: Calibration,
                     track_calibration: TrackCalibration | None, open_set: OpenSet) -> None:
    """Log a :class:`~genretag.calibration.Calibration`'s numbers (temperature, calibration_clips, ece_before/after
    on validation, test_ece_before/after), the track calibration's (when fitted) and their methods as metrics and tags,
    and the out-of-taxonomy record
    (:class:`~genretag.onnx.contract.OpenSet`: metrics ``unknown_threshold``, ``unknown_validation_accepted``,
    ``unknown_validation_tracks``; params ``unknown_method``, ``unknown_accept``, ``unknown_neighbours``,
    ``unknown_bank_tracks``; none when it is absent) of the MLflow run ``run_id``
    (the candidate's training run); nothing without a run id (a family exported without training.json) or
    when that run is not in this tracking store (logged as a warning: the ONNX metadata keeps the record)."""
    if not run_id:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    from genretag.onnx.contract import KEY_CALIBRATION, KEY_TRACK_CALIBRATION
    from genretag.core.tracking import use_tracking

    use_tracking(params, root=paths.root)
    stamp = int(time.time() * 1000)
    metrics = {**calibration.metrics(), **(track_calibration.metrics() if track_calibration else {}), **open_set.metrics()}
    tags = [RunTag(KEY_CALIBRATION, calibration.method),
            *([RunTag(KEY_TRACK_CALIBRATION, track_calibration.method)] if track_calibration is not None else [])]
    try:  # MlflowClient.log_batch: the finished training run is not reopened (its end time stays the end of training)
        MlflowClient().log_batch(run_id, metrics=[Metric(key, float(value), stamp, 0) for key, value in metrics.items()],
                                 params=[Param(key, str(value)) for key, value in open_set.params().items()], tags=tags)
    except MlflowException as exc:
        logger.warning("calibration not logged to MLflow run %s: %s", run_id, exc)


def quantize_trained_candidate(params: Params, paths: Layout, stage: Candidate) -> Int8Result | None:
    """``export.quantize: int8``: quantise the exported ``models/candidates/<id>/model.onnx`` into
    ``models/candidates/<id>/int8/model.onnx`` (candidate ``<id>-int8``) with
    :func:`genretag.training.int8.export_int8`, calibrated on up to ``export.calibration_clips`` clips of the
    decoded train split (a seeded random choice), checked on the decoded test split. ``none``, a network with
    nothing onnxruntime can quantise (mfcc-logreg's scikit-learn ops; logged) or an int8 graph refused for its
    agreement with float32 (a warning naming the numbers): no int8 candidate, a stale one removed; the float32
    candidate is not affected. Returns the :class:`~genretag.training.int8.Int8Result` or None; other
    ExportErrors (nothing written) are raised as export_int8 raises them.
    """
    import shutil

    folder = paths.candidate_dir(stage.name) / INT8_DIR
    if params.export.quantize != "int8":
        shutil.rmtree(folder, ignore_errors=True)
        return None
    train_set = stage.splits.train
    rng = np.random.default_rng(params.train.seed)
    chosen = np.sort(rng.choice(len(train_set), size=min(len(train_set), params.export.calibration_clips), replace=False))
    try:
        return export_int8(paths.candidate_dir(stage.name) / "model.onnx", calibration=train_set.waveforms[chosen],
                           onnx_path=folder / "model.onnx", test=stage.splits.clips("test", labels=params.genres),
                           quant_format=params.export.quantize_format, min_agreement=params.export.int8_min_agreement)
    except (NothingToQuantize, Int8Refused) as exc:
        level = logging.INFO if isinstance(exc, NothingToQuantize) else logging.WARNING
        logger.log(level, "%s: no int8 candidate: %s", stage.name, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
