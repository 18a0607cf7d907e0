"""Training: a tf.data pipeline over the spectrogram PNGs of clips.csv, Keras fit, MLflow run.

Outputs (every write atomic): the model (``.keras``), ``training.json`` (run facts),
``metrics/train.json`` (flat numbers), ``plots/history.csv`` and ``plots/training_curves.png``.
The same parameters and seed give the same history (op determinism; see
:func:`configure_runtime` for the one exception, XLA).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import genretag  # noqa: F401  - offline/quiet environment before TensorFlow loads
from genretag.atomic import atomic_path, write_csv, write_json
from genretag.config import Layout, Params
from genretag.dataset import SPLITS
from genretag.errors import TrainingDataError
from genretag.models import architecture, build_model

REQUIRED_CLIP_COLUMNS = ("clip_id", "track_id", "genre", "split", "image")
HISTORY_COLUMNS = ["epoch", "loss", "val_loss", "accuracy", "val_accuracy"]
EXPERIMENTS_DIR = "experiments"


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class TrainOutputs:
    """Where one training run writes."""

    model: Path
    training: Path
    metrics: Path
    history: Path
    curves: Path

    @classmethod
    def pipeline(cls, paths: Layout) -> TrainOutputs:
        """The DVC train stage's outs."""
        return cls(
            model=paths.keras_model,
            training=paths.models_dir / "training.json",
            metrics=paths.metrics_dir / "train.json",
            history=paths.plots_dir / "history.csv",
            curves=paths.plots_dir / "training_curves.png",
        )

    @classmethod
    def experiment(cls, paths: Layout, name: str) -> TrainOutputs:
        """A sweep run: everything under ``models/experiments/<name>/``, never the pipeline's files."""
        folder = experiment_dir(paths, name)
        return cls(
            model=folder / "model.keras",
            training=folder / "training.json",
            metrics=folder / "train.json",
            history=folder / "history.csv",
            curves=folder / "training_curves.png",
        )


def experiment_dir(paths: Layout, name: str) -> Path:
    return paths.models_dir / EXPERIMENTS_DIR / name


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    run_id: str
    experiment: str
    epochs_run: int
    best_epoch: int
    history: pd.DataFrame
    metrics: dict[str, float]
    training: dict[str, Any] = field(repr=False)


def with_experiment(params: Params, name: str, **train_overrides: Any) -> Params:
    """``params`` with ``train.experiment = name`` (and other train overrides), name checked."""
    architecture(name)
    train = params.train.model_validate({**params.train.model_dump(), **train_overrides, "experiment": name})
    return params.model_copy(update={"train": train})


# --------------------------------------------------------------------------- data


def read_clips(path: str | Path, *, genres: Sequence[str] | None = None) -> pd.DataFrame:
    """clips.csv, checked: required columns, known splits (and genres, when given)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={c: str for c in REQUIRED_CLIP_COLUMNS}, keep_default_na=False)
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


def check_images(frame: pd.DataFrame, *, root: Path, image_size: Sequence[int]) -> None:
    """Every listed PNG exists, is RGB (or indexed RGB) and has ``image_size`` (height, width); reads headers only."""
    from PIL import Image, UnidentifiedImageError

    expected = (int(image_size[0]), int(image_size[1]))
    problems: list[str] = []
    for relative in frame["image"]:
        path = root / relative
        try:
            with Image.open(path) as image:
                size, mode = (image.height, image.width), image.mode
        except FileNotFoundError:
            problems.append(f"{path}: no such file")
            continue
        except (OSError, UnidentifiedImageError) as exc:
            problems.append(f"{path}: not a readable image ({exc})")
            continue
        if size != expected:
            problems.append(f"{path}: size {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}")
        elif mode not in ("RGB", "P"):  # the spectrogram stage writes indexed colour (genretag.images.png_bytes)
            problems.append(f"{path}: mode {mode}, expected RGB or an RGB palette")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
        raise TrainingDataError(f"{len(problems)} of {len(frame)} images unusable (rerun the spectrograms stage): {shown}")


def scale_images(images):
    """uint8 image tensor -> float32 in [0, 1]: ``spectrogram.to_model_input`` inside the graph."""
    import tensorflow as tf

    return tf.cast(images, tf.float32) / tf.constant(255.0, tf.float32)


def label_indices(frame: pd.DataFrame, genres: Sequence[str]) -> np.ndarray:
    lookup = {genre: index for index, genre in enumerate(genres)}
    return np.array([lookup[g] for g in frame["genre"]], dtype=np.int32)


def image_dataset(
    frame: pd.DataFrame,
    *,
    root: Path,
    genres: Sequence[str],
    image_size: Sequence[int],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = True,
):
    """Batched ``(images float32 [0,1], one-hot labels)`` from the PNGs of ``frame``, in params' genre order.

    Decoded uint8 images are cached (4x smaller than float32), shuffled with ``seed`` each
    epoch when ``shuffle``, batched, then scaled and one-hot encoded per batch, prefetched.
    """
    import tensorflow as tf

    height, width = int(image_size[0]), int(image_size[1])
    files = [str(root / relative) for relative in frame["image"]]
    labels = label_indices(frame, genres)
    autotune = tf.data.AUTOTUNE

    def decode(path, label):
        image = tf.io.decode_png(tf.io.read_file(path), channels=3, dtype=tf.uint8)
        return tf.ensure_shape(image, (height, width, 3)), label

    def to_model(images, label):
        return scale_images(images), tf.one_hot(label, len(genres), dtype=tf.float32)

    dataset = tf.data.Dataset.from_tensor_slices((files, labels)).map(decode, num_parallel_calls=autotune)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(max(len(files), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(to_model, num_parallel_calls=autotune)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(autotune)


# --------------------------------------------------------------------------- runtime


def configure_runtime(*, seed: int, xla: bool) -> bool:
    """Fresh Keras state, every seed set; op determinism unless XLA. Returns whether deterministic.

    Keras silently drops ``jit_compile`` when TensorFlow op determinism is on, so an XLA run
    is seeded but not bit-reproducible.
    """
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    if xla:
        tf_config.disable_op_determinism()
        return False
    tf.config.experimental.enable_op_determinism()
    return True


def save_model(model, path: str | Path) -> Path:
    """Save a Keras model atomically (Keras insists on a ``.keras`` suffix, so stage it beside)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        staged = tmp.with_name(tmp.name + ".keras")
        try:
            model.save(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return target


def save_figure(figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write a matplotlib Figure as PNG, atomically."""
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return target


def plot_training_curves(history: pd.DataFrame, path: str | Path, *, title: str = "", best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, training vs validation (the paper's Figure 2)."""
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


# --------------------------------------------------------------------------- training


def _flat_params(params: Params) -> dict[str, Any]:
    return {
        **{f"train.{key}": value for key, value in params.train.model_dump().items()},
        "genres": ",".join(params.genres),
        "image_size": "x".join(str(v) for v in params.spectrogram.image_size),
        "split_method": params.split.method,
        "data_source": params.ingest.source,
    }


def train(
    params: Params,
    paths: Layout,
    *,
    outputs: TrainOutputs | None = None,
    log: Callable[[str], None] | None = None,
    verbose: int = 0,
) -> TrainResult:
    """Train ``params.train.experiment`` on the train split, early-stopping on validation loss.

    Logs params, per-epoch metrics and artifacts to a new MLflow run (``use_tracking``).
    Writes ``outputs`` (default: the DVC stage's files) and returns what it wrote.
    """
    import keras
    import mlflow

    from genretag.tracking import use_tracking

    outputs = outputs or TrainOutputs.pipeline(paths)
    say = log or (lambda message: None)
    settings = params.train
    name = settings.experiment
    spec = architecture(name)
    image_size = tuple(int(v) for v in params.spectrogram.image_size)

    clips = read_clips(paths.clips, genres=params.genres)
    train_frame = clips[clips["split"] == "train"]
    validation_frame = clips[clips["split"] == "validation"]
    if train_frame.empty or validation_frame.empty:
        raise TrainingDataError(
            f"{paths.clips}: {len(train_frame)} train and {len(validation_frame)} validation clips; "
            "training needs both (early stopping watches validation loss)"
        )
    check_images(pd.concat([train_frame, validation_frame]), root=paths.root, image_size=image_size)

    deterministic = configure_runtime(seed=settings.seed, xla=settings.xla)
    common = dict(root=paths.root, genres=params.genres, image_size=image_size, batch_size=settings.batch_size)
    train_data = image_dataset(train_frame, shuffle=True, seed=settings.seed, **common)
    validation_data = image_dataset(validation_frame, **common)

    started = time.perf_counter()
    model = build_model(
        name,
        input_shape=(*image_size, 3),
        n_classes=len(params.genres),
        learning_rate=settings.learning_rate,
        mixed_precision=settings.mixed_precision,
        jit_compile=settings.xla,
    )
    build_seconds = time.perf_counter() - started
    say(
        f"{name} ({spec.description}): {model.count_params():,} parameters, input {image_size[0]}x{image_size[1]}, "
        f"{len(train_frame)} train / {len(validation_frame)} validation clips"
    )

    use_tracking(params, root=paths.root)
    with mlflow.start_run(run_name=name, tags={"genretag.stage": "train", "genretag.experiment": name}) as run:
        mlflow.log_params({
            **_flat_params(params),
            "params_count": model.count_params(),
            "n_train": len(train_frame),
            "n_validation": len(validation_frame),
            "deterministic": deterministic,
        })
        timer = _epoch_logger(say)
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.patience, restore_best_weights=True
        )
        started = time.perf_counter()
        fitted = model.fit(
            train_data,
            validation_data=validation_data,
            epochs=settings.max_epochs,
            callbacks=[stopper, timer],
            shuffle=False,  # the dataset shuffles itself (seeded)
            verbose=verbose,
        )
        train_seconds = time.perf_counter() - started

        history = pd.DataFrame({"epoch": range(1, len(fitted.history["loss"]) + 1)})
        for column in HISTORY_COLUMNS[1:]:
            history[column] = [float(v) for v in fitted.history[column]]
        epochs_run = len(history)
        best_index = int(np.argmin(history["val_loss"].to_numpy()))
        best = history.iloc[best_index]
        best_epoch = best_index + 1
        # The first epoch also traces the graph and fills the image cache: leave it out when we can.
        steady = timer.seconds[1:] or timer.seconds
        seconds_per_epoch = float(np.mean(steady))
        metrics = {
            "train_loss": float(best["loss"]),
            "train_accuracy": float(best["accuracy"]),
            "validation_loss": float(best["val_loss"]),
            "validation_accuracy": float(best["val_accuracy"]),
            "best_epoch": best_epoch,
            "epochs": epochs_run,
            "train_seconds": round(train_seconds, 3),
            "seconds_per_epoch": round(seconds_per_epoch, 4),
            "clips_per_second": round(len(train_frame) / seconds_per_epoch, 2),
        }
        training = {
            "mlflow_run_id": run.info.run_id,
            "experiment": name,
            "description": spec.description,
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "stopped_early": epochs_run < settings.max_epochs,
            "train_seconds": round(train_seconds, 3),
            "build_seconds": round(build_seconds, 3),
            "params_count": int(model.count_params()),
            "n_train": len(train_frame),
            "n_validation": len(validation_frame),
            "image_size": list(image_size),
            "split_method": params.split.method,
            "data_source": params.ingest.source,
            "deterministic": deterministic,
            "genres": list(params.genres),
            "params": params.train.model_dump(),
            "metrics": metrics,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

        save_model(model, outputs.model)
        write_csv(outputs.history, history[HISTORY_COLUMNS])
        plot_training_curves(history, outputs.curves, title=f"{name}: {spec.description}", best_epoch=best_epoch)
        write_json(outputs.metrics, metrics)
        write_json(outputs.training, training)

        mlflow.log_metrics({f"best_{k}": float(v) for k, v in metrics.items()})
        for artifact in (outputs.history, outputs.curves, outputs.training):
            mlflow.log_artifact(str(artifact), artifact_path="train")
    say(
        f"{name}: {epochs_run} epochs (best {best_epoch}), validation accuracy "
        f"{metrics['validation_accuracy']:.3f}, {seconds_per_epoch:.2f} s/epoch"
    )
    return TrainResult(
        model_path=outputs.model,
        run_id=training["mlflow_run_id"],
        experiment=name,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        history=history[HISTORY_COLUMNS],
        metrics=metrics,
        training=training,
    )


def read_training(path: str | Path) -> dict[str, Any]:
    """training.json of a run, or {} when there is none."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingDataError(f"{path}: not valid JSON: {exc}") from exc


def _epoch_logger(say: Callable[[str], None]):
    """A Keras callback that times epochs and logs each epoch's metrics to MLflow and ``say``."""
    import keras
    import mlflow

    class EpochLogger(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self._started
            self.seconds.append(elapsed)
            values = {key: float(value) for key, value in (logs or {}).items()}
            mlflow.log_metrics({**values, "epoch_seconds": elapsed}, step=epoch + 1)
            shown = ", ".join(f"{key} {value:.4f}" for key, value in values.items())
            say(f"epoch {epoch + 1}: {shown} ({elapsed:.1f} s)")

    return EpochLogger()


# --------------------------------------------------------------------------- model families (train.candidates)

CANDIDATES_DIR = "candidates"


def candidate_dir(paths: Layout, candidate: str) -> Path:
    """``models/candidates/<candidate>/``: the family's trained state, training.json, model.onnx, card."""
    return paths.models_dir / CANDIDATES_DIR / candidate


def family_options(params: Params, candidate: str) -> dict[str, Any]:
    """Constructor options of a candidate from params.yaml: Keras families take train.* and the image size."""
    from genretag.families import parse_candidate

    family, _ = parse_candidate(candidate)
    if family in ("paper", "compact"):
        s = params.train
        return {"image_size": tuple(params.spectrogram.image_size), "max_epochs": s.max_epochs, "patience": s.patience,
                "batch_size": s.batch_size, "learning_rate": s.learning_rate, "opset": params.export.opset}
    return {"opset": params.export.opset}


def candidate_split(params: Params, paths: Layout, family, split: str):
    """The ``split`` clips of data/clips.csv as a ClipSet at the family's sample rate."""
    from genretag.families import load_split

    return load_split(read_clips(paths.clips, genres=params.genres), split=split, raw_dir=paths.raw_dir,
                      labels=params.genres, source_rate=params.audio.sample_rate, sample_rate=family.sample_rate,
                      clip_seconds=params.audio.clip_seconds)


def train_candidate(params: Params, paths: Layout, candidate: str, *, log: Callable[[str], None]) -> dict[str, Any]:
    """Train one candidate on the train split (validation for early stopping) as its own MLflow run.

    Writes ``models/candidates/<candidate>/`` (the family's state and ``training.json``); returns
    the training facts with ``mlflow_run_id``. Raises TrainingDataError for an empty split and the
    family's errors (e.g. ``PretrainedWeightsError``) as they come.
    """
    import mlflow

    from genretag.families import create
    from genretag.tracking import use_tracking

    family = create(candidate, **family_options(params, candidate))
    train_set = candidate_split(params, paths, family, "train")
    validation_set = candidate_split(params, paths, family, "validation")
    if not len(train_set):
        raise TrainingDataError(f"{paths.clips}: no train clips for candidate {candidate}")
    folder = candidate_dir(paths, candidate)
    use_tracking(params, root=paths.root)
    with mlflow.start_run(run_name=candidate, tags={"genretag.stage": "train", "genretag.candidate": candidate,
                                                    "genretag.family": family.name}) as run:
        mlflow.log_params({**_flat_params(params), "candidate": candidate, "n_train": len(train_set),
                           "n_validation": len(validation_set), "sample_rate": family.sample_rate})
        started = time.perf_counter()
        facts = family.fit(train_set, validation_set, labels=tuple(params.genres), seed=params.train.seed, log=log)
        seconds = round(time.perf_counter() - started, 3)
        family.save(folder)
        training = {"candidate": candidate, "mlflow_run_id": run.info.run_id, "fit_seconds": seconds,
                    "n_train": len(train_set), "n_validation": len(validation_set), "genres": list(params.genres),
                    "describe": family.describe(), "preprocessing": family.preprocessing(), **facts,
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        write_json(folder / "training.json", training)
        mlflow.log_metrics({k: float(v) for k, v in facts.items() if isinstance(v, int | float) and v is not None})
        mlflow.log_artifact(str(folder / "training.json"), artifact_path="train")
    return training


def candidate_test_clips(params: Params, paths: Layout, family):
    """The test split's clips at the family's rate as :class:`genretag.export.TestClips` (the export checks' input)."""
    from genretag.export import TestClips

    test_set = candidate_split(params, paths, family, "test")
    return TestClips(waveforms=test_set.waveforms, genres=tuple(params.genres[i] for i in test_set.labels),
                     clip_ids=test_set.clip_ids, sample_rate=family.sample_rate)


def load_candidate(params: Params, paths: Layout, candidate: str):
    """The trained family that :func:`train_candidate` saved."""
    from genretag.families import create

    family = create(candidate, **family_options(params, candidate))
    family.load(candidate_dir(paths, candidate))
    return family


def export_trained_candidate(params: Params, paths: Layout, candidate: str, family=None):
    """Export a trained candidate to ``models/candidates/<candidate>/model.onnx`` (+ MODEL_CARD.md) through the
    generic parity-gated :func:`genretag.export.export_candidate` on the test split's clips at the family's rate.

    Raises ExportError (nothing written) when the graph does not match the family's own predict.
    """
    from genretag.contract import ModelContract
    from genretag.export import export_candidate, git_commit, training_data_hash

    family = family or load_candidate(params, paths, candidate)
    test = candidate_test_clips(params, paths, family)
    training = read_training(candidate_dir(paths, candidate) / "training.json")
    contract = ModelContract(
        labels=tuple(params.genres), model_name=params.registry.model_name, model_version=f"{candidate}-{training.get('mlflow_run_id', '')[:12]}",
        sample_rate=family.sample_rate, clip_samples=family.clip_samples, family=family.name,
        preprocessing=family.preprocessing(), training_data_hash=training_data_hash(paths), git_commit=git_commit(paths.root),
    )
    return export_candidate(family, contract=contract, onnx_path=candidate_dir(paths, candidate) / "model.onnx", test=test,
                            tolerance=max(params.export.parity_tolerance, 1e-3))


def quantize_trained_candidate(params: Params, paths: Layout, candidate: str, family=None):
    """``export.quantize: int8``: quantise the exported ``models/candidates/<candidate>/model.onnx`` into
    ``models/candidates/<candidate>/int8/model.onnx`` (candidate ``<candidate>-int8``) with
    :func:`genretag.export.export_int8`, calibrated on up to ``export.calibration_clips`` training clips
    (a seeded random choice) at the family's rate. ``none``, a network with nothing onnxruntime can
    quantise (mfcc-logreg's scikit-learn ops; logged) or an int8 graph refused for its agreement with
    float32 (a warning naming the numbers): no int8 candidate, a stale one removed; the float32
    candidate is not affected. Returns the :class:`~genretag.export.Int8Result` or None; other
    ExportErrors (nothing written) are raised as export_int8 raises them.
    """
    import logging
    import shutil

    from genretag.export import INT8_DIR, Int8Refused, NothingToQuantize, export_int8

    folder = candidate_dir(paths, candidate) / INT8_DIR
    if params.export.quantize != "int8":
        shutil.rmtree(folder, ignore_errors=True)
        return None
    family = family or load_candidate(params, paths, candidate)
    train_set = candidate_split(params, paths, family, "train")
    rng = np.random.default_rng(params.train.seed)
    chosen = np.sort(rng.choice(len(train_set), size=min(len(train_set), params.export.calibration_clips), replace=False))
    try:
        return export_int8(candidate_dir(paths, candidate) / "model.onnx", calibration=train_set.waveforms[chosen],
                           onnx_path=folder / "model.onnx", test=candidate_test_clips(params, paths, family),
                           quant_format=params.export.quantize_format, min_agreement=params.export.int8_min_agreement)
    except (NothingToQuantize, Int8Refused) as exc:
        level = logging.INFO if isinstance(exc, NothingToQuantize) else logging.WARNING
        logging.getLogger(__name__).log(level, "%s: no int8 candidate: %s", candidate, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
