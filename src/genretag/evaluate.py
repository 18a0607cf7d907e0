"""Evaluation: clip- and track-level test metrics, per-genre scores, confusion matrix, t-SNE,
and the experiments table (reports/experiments.csv -> reports/experiments.md).

Contract-v2 candidates (``models/candidates/<id>/model.onnx``, any family) are evaluated from the
test split's **audio**: each clip is cut from its track decoded at the model's own sample rate and
fed as a waveform through the graph (:func:`score_on_audio`), so every family is measured by the
same code on the same clips; the registry's gate uses the same function.

``run_experiments`` trains and evaluates a list of the paper's experiments without touching
the DVC pipeline's model: each run writes under ``models/experiments/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import genretag  # noqa: F401  - offline/quiet environment before TensorFlow loads
from genretag.atomic import write_csv, write_json, write_text
from genretag.config import Layout, Params
from genretag.contract import ModelContract
from genretag.errors import ConfigError, TrainingDataError
from genretag.export import DIRTY, INT8_DIR, INT8_SUFFIX, git_commit
from genretag.gate import Outcome, TestSet, outcome_from_probabilities
from genretag.models import EXPERIMENTS, architecture
from genretag.train import (
    TrainOutputs,
    check_images,
    experiment_dir,
    image_dataset,
    read_clips,
    read_training,
    save_figure,
    train,
    with_experiment,
)

PREDICT_BATCH = 128
EPSILON = 1e-7  # Keras' clip for categorical cross-entropy

EXPERIMENT_COLUMNS = [
    "key", "experiment", "description", "split_method", "image_size", "data_source", "n_classes",
    "params_count", "build_seconds", "train_seconds", "epochs_run", "best_epoch",
    "train_loss", "train_accuracy", "validation_loss", "validation_accuracy",
    "test_loss", "test_accuracy", "track_accuracy_mean_prob", "track_accuracy_vote", "macro_f1",
    "n_train", "n_validation", "n_test_clips", "n_test_tracks",
    "batch_size", "learning_rate", "seed", "mixed_precision", "xla",
    "mlflow_run_id", "timestamp", "git_commit",
]


@dataclass(frozen=True)
class EvalOutputs:
    """Where one evaluation writes (the experiments table is always reports/experiments.*)."""

    metrics: Path
    confusion_csv: Path
    confusion_png: Path
    tsne_png: Path

    @classmethod
    def pipeline(cls, paths: Layout) -> EvalOutputs:
        """The DVC evaluate stage's outs."""
        return cls(
            metrics=paths.metrics_dir / "eval.json",
            confusion_csv=paths.plots_dir / "confusion_matrix.csv",
            confusion_png=paths.plots_dir / "confusion_matrix.png",
            tsne_png=paths.plots_dir / "tsne.png",
        )

    @classmethod
    def experiment(cls, paths: Layout, name: str) -> EvalOutputs:
        folder = experiment_dir(paths, name)
        return cls(
            metrics=folder / "eval.json",
            confusion_csv=folder / "confusion_matrix.csv",
            confusion_png=folder / "confusion_matrix.png",
            tsne_png=folder / "tsne.png",
        )


def experiments_csv(paths: Layout) -> Path:
    return paths.reports_dir / "experiments.csv"


def experiments_md(paths: Layout) -> Path:
    return paths.reports_dir / "experiments.md"


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    predictions: pd.DataFrame  # one row per test clip: clip_id, track_id, actual, predicted, p_<genre>...
    tracks: pd.DataFrame  # one row per test track: track_id, actual, mean_prob, vote
    row: dict[str, Any]


# --------------------------------------------------------------------------- metrics


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy of integer ``labels`` under ``probabilities`` (Keras' clipping)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0 - EPSILON)
    return float(-np.mean(np.log(picked)))


def track_predictions(probabilities: np.ndarray, track_ids: Sequence[str]) -> pd.DataFrame:
    """Per track (first-seen order): class of the mean clip probability, and of the majority vote.

    A tied vote goes to the tied class with the highest mean probability.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    codes, tracks = pd.factorize(pd.Series(list(track_ids), dtype=object), sort=False)
    n_tracks, n_classes = len(tracks), probabilities.shape[1]
    sums = np.zeros((n_tracks, n_classes))
    np.add.at(sums, codes, probabilities)
    clips = np.bincount(codes, minlength=n_tracks)
    mean = sums / clips[:, None]
    votes = np.zeros((n_tracks, n_classes), dtype=np.int64)
    np.add.at(votes, (codes, probabilities.argmax(axis=1)), 1)
    tied = votes == votes.max(axis=1, keepdims=True)
    vote = np.where(tied, mean, -np.inf).argmax(axis=1)
    return pd.DataFrame({
        "track_id": list(tracks),
        "clips": clips,
        "mean_prob": mean.argmax(axis=1),
        "vote": vote,
    })


def classification_metrics(
    probabilities: np.ndarray,
    labels: np.ndarray,
    track_ids: Sequence[str],
    genres: Sequence[str],
) -> tuple[dict[str, float], pd.DataFrame]:
    """The flat metrics of eval.json and the per-track predictions."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    labels = np.asarray(labels)
    predicted = np.asarray(probabilities).argmax(axis=1)
    classes = list(range(len(genres)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    tracks = track_predictions(probabilities, track_ids)
    truth = pd.Series(labels).groupby(pd.factorize(pd.Series(list(track_ids), dtype=object), sort=False)[0]).first()
    tracks["actual"] = truth.to_numpy()
    metrics: dict[str, float] = {
        "test_loss": cross_entropy(probabilities, labels),
        "test_accuracy": float(np.mean(predicted == labels)),
        "track_accuracy_mean_prob": float(np.mean(tracks["mean_prob"] == tracks["actual"])),
        "track_accuracy_vote": float(np.mean(tracks["vote"] == tracks["actual"])),
        "macro_f1": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        "n_test_clips": int(len(labels)),
        "n_test_tracks": int(len(tracks)),
    }
    for index, genre in enumerate(genres):
        metrics[f"f1_{genre}"] = float(f1[index])
        metrics[f"precision_{genre}"] = float(precision[index])
        metrics[f"recall_{genre}"] = float(recall[index])
    return metrics, tracks


# --------------------------------------------------------------------------- plots


def plot_confusion_matrix(actual: Sequence[str], predicted: Sequence[str], genres: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Counts of test clips, actual genre (rows) by predicted genre (columns): the paper's Figure 3."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(list(actual), list(predicted), labels=list(genres))
    size = max(4.0, 0.6 * len(genres) + 2)
    figure = Figure(figsize=(size + 1, size))
    axis = figure.subplots()
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black", fontsize=8)
    axis.set_xticks(range(len(genres)), labels=list(genres), rotation=45, ha="right")
    axis.set_yticks(range(len(genres)), labels=list(genres))
    axis.set_xlabel("Predicted genre")
    axis.set_ylabel("Actual genre")
    axis.set_title(title or f"Confusion matrix ({int(matrix.sum())} test clips)")
    return save_figure(figure, path)


def tsne_perplexity(n_points: int) -> float | None:
    """A perplexity t-SNE accepts for ``n_points`` (sklearn's default 30 when there are enough), else None."""
    if n_points < 3:
        return None
    return float(min(30.0, max(1.0, (n_points - 1) / 3.0)))


def plot_tsne(embeddings: np.ndarray, labels: Sequence[str], genres: Sequence[str], path: str | Path, *, seed: int = 0, title: str = "") -> Path:
    """2-D t-SNE of embedding-layer activations, coloured by actual genre: the paper's Figure 4.

    Too few points for t-SNE still give a PNG (a note), so the DVC plot always exists.
    """
    from matplotlib.figure import Figure

    embeddings = np.asarray(embeddings, dtype=np.float32)
    figure = Figure(figsize=(8, 7))
    axis = figure.subplots()
    perplexity = tsne_perplexity(len(embeddings))
    if perplexity is None:
        axis.text(0.5, 0.5, f"t-SNE needs at least 3 test clips, got {len(embeddings)}", ha="center", va="center")
        axis.set_axis_off()
        return save_figure(figure, path)
    from sklearn.manifold import TSNE

    points = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(embeddings)
    labels = np.asarray(list(labels))
    colours = _genre_colours(len(genres))
    for index, genre in enumerate(genres):
        chosen = labels == genre
        if chosen.any():
            axis.scatter(points[chosen, 0], points[chosen, 1], s=14, color=colours[index], label=genre, alpha=0.8)
    axis.legend(loc="best", fontsize=8, markerscale=1.5)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title or f"t-SNE of the 128-unit dense layer ({len(embeddings)} test clips, perplexity {perplexity:.3g})")
    return save_figure(figure, path)


def _genre_colours(count: int) -> list:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(index % palette.N) for index in range(count)]


# --------------------------------------------------------------------------- evaluation


def load_model(path: str | Path):
    """A trained ``.keras`` model (uncompiled: evaluation only predicts)."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such model (run the train stage first)")
    return keras.models.load_model(path, compile=False)


def evaluate(
    params: Params,
    paths: Layout,
    *,
    model_path: str | Path | None = None,
    training_path: str | Path | None = None,
    outputs: EvalOutputs | None = None,
    record: bool = True,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Score the test split: write eval.json, the confusion matrix (CSV + PNG) and the t-SNE plot,
    log them to the training's MLflow run, and (``record``) upsert its row of the experiments table.
    """
    from genretag.models import embed

    say = log or (lambda message: None)
    outputs = outputs or EvalOutputs.pipeline(paths)
    model_path = Path(model_path or paths.keras_model)
    training = read_training(training_path or model_path.parent / "training.json")
    genres = list(params.genres)

    model = load_model(model_path)
    n_outputs = int(model.output_shape[-1])
    if n_outputs != len(genres):
        raise ConfigError(f"{model_path}: the model has {n_outputs} outputs but params list {len(genres)} genres")
    image_size = tuple(int(v) for v in model.input_shape[1:3])

    clips = read_clips(paths.clips, genres=genres)
    test = clips[clips["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise TrainingDataError(f"{paths.clips}: no test clips to evaluate")
    check_images(test, root=paths.root, image_size=image_size)
    dataset = image_dataset(test, root=paths.root, genres=genres, image_size=image_size, batch_size=PREDICT_BATCH)
    probabilities = np.asarray(model.predict(dataset, verbose=0), dtype=np.float64)
    labels = np.array([genres.index(g) for g in test["genre"]])
    metrics, tracks = classification_metrics(probabilities, labels, test["track_id"], genres)
    tracks["actual"] = [genres[i] for i in tracks["actual"]]
    tracks["mean_prob"] = [genres[i] for i in tracks["mean_prob"]]
    tracks["vote"] = [genres[i] for i in tracks["vote"]]

    predictions = pd.DataFrame({
        "clip_id": test["clip_id"],
        "track_id": test["track_id"],
        "actual": test["genre"],
        "predicted": [genres[i] for i in probabilities.argmax(axis=1)],
    })
    for index, genre in enumerate(genres):
        predictions[f"p_{genre}"] = probabilities[:, index]

    name = training.get("experiment") or model.name
    write_json(outputs.metrics, metrics)
    write_csv(outputs.confusion_csv, predictions[["actual", "predicted"]])
    plot_confusion_matrix(predictions["actual"], predictions["predicted"], genres, outputs.confusion_png,
                          title=f"{name}: confusion matrix ({len(test)} test clips)")
    subset = test.head(params.evaluate.tsne_clips)
    if len(subset) >= 3:
        subset_data = image_dataset(subset, root=paths.root, genres=genres, image_size=image_size, batch_size=PREDICT_BATCH, cache=False)
        embeddings = embed(model, subset_data.map(lambda images, labels: images))
    else:
        embeddings = np.zeros((len(subset), 128), dtype=np.float32)
    plot_tsne(embeddings, subset["genre"], genres, outputs.tsne_png, seed=int(training.get("params", {}).get("seed", 0)))

    row = experiment_row(params, training=training, metrics=metrics, model=model, root=paths.root)
    run_id = _log_to_mlflow(params, paths, training=training, metrics=metrics, outputs=outputs, say=say)
    row["mlflow_run_id"] = run_id
    if record:
        record_experiment(row, csv_path=experiments_csv(paths), md_path=experiments_md(paths))
    say(
        f"{name}: test accuracy {metrics['test_accuracy']:.3f} on {metrics['n_test_clips']} clips, "
        f"track accuracy {metrics['track_accuracy_mean_prob']:.3f} (mean prob) / "
        f"{metrics['track_accuracy_vote']:.3f} (vote), macro F1 {metrics['macro_f1']:.3f}"
    )
    return EvalResult(metrics=metrics, predictions=predictions, tracks=tracks, row=row)


def _log_to_mlflow(params: Params, paths: Layout, *, training: dict, metrics: dict, outputs: EvalOutputs, say) -> str:
    """Log to the training's run when the store has it; otherwise to a new run (said so)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from genretag.tracking import use_tracking

    use_tracking(params, root=paths.root)
    run_id = training.get("mlflow_run_id")
    run = None
    if run_id:
        try:
            run = mlflow.start_run(run_id=run_id)
        except MlflowException as exc:
            say(f"MLflow run {run_id} of training.json not found in this store ({exc}); logging to a new run")
    if run is None:
        name = training.get("experiment", "model")
        run = mlflow.start_run(run_name=f"evaluate-{name}", tags={"genretag.stage": "evaluate"})
    with run:
        mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
        for artifact in (outputs.metrics, outputs.confusion_csv, outputs.confusion_png, outputs.tsne_png):
            mlflow.log_artifact(str(artifact), artifact_path="evaluate")
        return run.info.run_id


# --------------------------------------------------------------------------- experiments table


def commit_label(root: Path) -> str:
    """HEAD's short hash (with ``+dirty`` for local changes), or "" outside a repository."""
    commit = git_commit(root)
    if commit == "unknown":
        return ""
    return commit[:12] + (DIRTY if commit.endswith(DIRTY) else "")


def config_key(config: dict[str, Any]) -> str:
    """A short stable hash of an experiment's configuration: the experiments table's row key."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def experiment_row(params: Params, *, training: dict, metrics: dict, model, root: Path) -> dict[str, Any]:
    """One experiments.csv row: configuration (from training.json, else params), timings, metrics."""
    train_params = {**params.train.model_dump(), **training.get("params", {})}
    name = training.get("experiment") or train_params["experiment"]
    image_size = training.get("image_size") or list(model.input_shape[1:3])
    config = {
        "experiment": name,
        "train": train_params,
        "image_size": list(image_size),
        "genres": training.get("genres") or list(params.genres),
        "split_method": training.get("split_method", params.split.method),
        "data_source": training.get("data_source", params.ingest.source),
    }
    trained = training.get("metrics", {})
    description = EXPERIMENTS[name].description if name in EXPERIMENTS else ""
    return {
        "key": config_key(config),
        "experiment": name,
        "description": description,
        "split_method": config["split_method"],
        "image_size": "x".join(str(v) for v in image_size),
        "data_source": config["data_source"],
        "n_classes": len(config["genres"]),
        "params_count": int(model.count_params()),
        "build_seconds": training.get("build_seconds"),
        "train_seconds": training.get("train_seconds"),
        "epochs_run": training.get("epochs_run"),
        "best_epoch": training.get("best_epoch"),
        "train_loss": trained.get("train_loss"),
        "train_accuracy": trained.get("train_accuracy"),
        "validation_loss": trained.get("validation_loss"),
        "validation_accuracy": trained.get("validation_accuracy"),
        "test_loss": metrics["test_loss"],
        "test_accuracy": metrics["test_accuracy"],
        "track_accuracy_mean_prob": metrics["track_accuracy_mean_prob"],
        "track_accuracy_vote": metrics["track_accuracy_vote"],
        "macro_f1": metrics["macro_f1"],
        "n_train": training.get("n_train"),
        "n_validation": training.get("n_validation"),
        "n_test_clips": metrics["n_test_clips"],
        "n_test_tracks": metrics["n_test_tracks"],
        "batch_size": train_params["batch_size"],
        "learning_rate": train_params["learning_rate"],
        "seed": train_params["seed"],
        "mixed_precision": train_params["mixed_precision"],
        "xla": train_params["xla"],
        "mlflow_run_id": training.get("mlflow_run_id", ""),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit_label(root),
    }


def read_experiments(path: str | Path) -> pd.DataFrame:
    """experiments.csv (empty table with the standard columns when absent)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=EXPERIMENT_COLUMNS)
    frame = pd.read_csv(path, dtype={"key": str, "git_commit": str, "mlflow_run_id": str}, keep_default_na=False, na_values=[""])
    for column in ("key", "git_commit", "mlflow_run_id"):
        if column in frame:
            frame[column] = frame[column].fillna("")
    return frame


def _experiment_order(name: str) -> tuple[int, str]:
    names = list(EXPERIMENTS)
    return (names.index(name) if name in names else len(names), name)


def record_experiment(row: dict[str, Any], *, csv_path: str | Path, md_path: str | Path) -> pd.DataFrame:
    """Upsert ``row`` into experiments.csv by its ``key`` (same experiment + configuration:
    replaced, never duplicated), then rebuild experiments.md from the whole table."""
    frame = read_experiments(csv_path)
    kept = frame[frame["key"].astype(str) != str(row["key"])] if len(frame) else frame
    new = pd.DataFrame([row])
    frame = new if kept.empty else pd.concat([kept, new], ignore_index=True)
    extra = [column for column in frame.columns if column not in EXPERIMENT_COLUMNS]
    frame = frame.reindex(columns=EXPERIMENT_COLUMNS + extra)
    order = frame["experiment"].map(_experiment_order)
    frame = frame.iloc[sorted(range(len(frame)), key=lambda i: (order.iloc[i], str(frame["timestamp"].iloc[i])))]
    frame = frame.reset_index(drop=True)
    write_csv(csv_path, frame)
    write_text(md_path, experiments_markdown(frame))
    return frame


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


def _pct(value: Any) -> str:
    number = _float(value)
    return "" if number is None else f"{100 * number:.1f}"


def _num(value: Any, digits: int = 3) -> str:
    number = _float(value)
    return "" if number is None else f"{number:.{digits}f}"


def experiments_markdown(frame: pd.DataFrame) -> str:
    """The paper's results table, one line per experiment and configuration (accuracies in %)."""
    lines = [
        "# Experiments (Holst 2021, reproduced)",
        "",
        "Generated from `reports/experiments.csv` by `genretag` after every evaluation: do not edit.",
        "One row per experiment and configuration; accuracies in %, losses are categorical cross-entropy.",
        "Data: `ingest.source` of the run (`demo` rows come from the synthetic demo corpus, not music).",
        "Train and validation figures are at the best epoch (early stopping on validation loss).",
        "",
        "| Experiment | Data | Architecture | Split | Image | Parameters | Epochs (best) | Train acc | Val acc | Test acc "
        "| Track acc mean prob / vote | Macro F1 | Train loss | Val loss | Test loss | Train s | Commit |",
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    frame = frame.astype(object).where(frame.notna(), "")
    for _, r in frame.iterrows():
        params_count = f"{int(_float(r['params_count'])):,}" if _float(r["params_count"]) is not None else ""
        epochs = f"{_num(r['epochs_run'], 0)} ({_num(r['best_epoch'], 0)})" if _float(r["epochs_run"]) is not None else ""
        lines.append(
            f"| {r['experiment']} | {r['data_source']} | {r['description']} | {r['split_method']} | {r['image_size']} | {params_count} "
            f"| {epochs} | {_pct(r['train_accuracy'])} | {_pct(r['validation_accuracy'])} | {_pct(r['test_accuracy'])} "
            f"| {_pct(r['track_accuracy_mean_prob'])} / {_pct(r['track_accuracy_vote'])} | {_num(r['macro_f1'])} "
            f"| {_num(r['train_loss'])} | {_num(r['validation_loss'])} | {_num(r['test_loss'])} "
            f"| {_num(r['train_seconds'], 0)} | {r['git_commit']} |"
        )
    if frame.empty:
        lines.append("| (no experiments evaluated yet) |" + " |" * 16)
    return "\n".join(lines) + "\n"


def rebuild_experiments_markdown(paths: Layout) -> Path:
    """Regenerate reports/experiments.md from reports/experiments.csv."""
    target = experiments_md(paths)
    write_text(target, experiments_markdown(read_experiments(experiments_csv(paths))))
    return target


def run_experiments(
    names: Sequence[str],
    *,
    params: Params,
    paths: Layout,
    log: Callable[[str], None] | None = None,
    verbose: int = 0,
    **train_overrides: Any,
) -> pd.DataFrame:
    """Train and evaluate each experiment (params.yaml with ``train.experiment`` overridden, plus
    ``train_overrides``); outputs under ``models/experiments/<name>/``, rows in the experiments table.
    All names are checked before anything trains."""
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError("no experiments given; valid: " + ", ".join(EXPERIMENTS))
    for name in names:
        architecture(name)
    rows = []
    for name in names:
        configured = with_experiment(params, name, **train_overrides)
        trained = train(configured, paths, outputs=TrainOutputs.experiment(paths, name), log=log, verbose=verbose)
        result = evaluate(
            configured, paths,
            model_path=trained.model_path,
            training_path=TrainOutputs.experiment(paths, name).training,
            outputs=EvalOutputs.experiment(paths, name),
            log=log,
        )
        rows.append(result.row)
    return pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)


# --------------------------------------------------------------------------- contract-v2 candidates on audio

CANDIDATES_DIR = "candidates"
ONNX_BATCH = 64  # clips per onnxruntime run: bounds memory of waveform-in graphs (issue 10: 32-64)


def candidates_dir(paths: Layout) -> Path:
    """``models/candidates``: one folder per candidate id (musicnn-msd, mfcc-logreg, paper-exp8, ...) holding model.onnx."""
    return paths.models_dir / CANDIDATES_DIR


def find_candidates(paths: Layout) -> dict[str, Path]:
    """Candidate id -> ``models/candidates/<id>/model.onnx``, sorted by id (empty when there is none);
    an int8 export beside it (``<id>/int8/model.onnx``, :func:`genretag.export.export_int8`) is candidate ``<id>-int8``."""
    folder = candidates_dir(paths)
    if not folder.is_dir():
        return {}
    found = {p.parent.name: p for p in folder.glob("*/model.onnx")}
    found |= {f"{p.parent.parent.name}{INT8_SUFFIX}": p for p in folder.glob(f"*/{INT8_DIR}/model.onnx")}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class TestAudio:
    """The test split as audio: one row per test clip of data/clips.csv, with its track's WAV.

    ``clips`` columns: clip_id, track_id, genre, start_s (float seconds), path (absolute WAV path).
    ``genres``: the label order of every probability matrix built from it.
    """

    clips: pd.DataFrame
    genres: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def track_ids(self) -> list[str]:
        return list(pd.unique(self.clips["track_id"]))

    def test_set(self) -> TestSet:
        """The gate's truth arrays (tracks in first-seen order)."""
        codes, tracks = pd.factorize(self.clips["track_id"], sort=False)
        index = {g: i for i, g in enumerate(self.genres)}
        clip_truth = np.array([index[g] for g in self.clips["genre"]], dtype=np.int64)
        track_truth = np.zeros(len(tracks), dtype=np.int64)
        track_truth[codes] = clip_truth
        return TestSet(clip_truth=clip_truth, clip_track=codes.astype(np.int64), track_truth=track_truth, n_classes=len(self.genres))

    def fingerprint(self) -> str:
        """Short hash of the test clips (ids and windows): equal fingerprints mean the same test split."""
        text = "\n".join(f"{c}|{s}" for c, s in zip(self.clips["clip_id"], self.clips["start_s"], strict=True))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_test_audio(paths: Layout, *, genres: Sequence[str]) -> TestAudio:
    """Test rows of data/clips.csv joined with their WAVs (data/tracks.csv ``path``).

    Raises TrainingDataError naming the file when there is no test clip or a test track has no WAV.
    """
    from genretag.dataset import read_table

    clips = read_clips(paths.clips, genres=genres)
    test = clips[clips["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise TrainingDataError(f"{paths.clips}: no test clips to evaluate")
    if not paths.tracks.is_file():
        raise TrainingDataError(f"{paths.tracks}: no such file (run the validate stage first)")
    tracks = read_table(paths.tracks).set_index("track_id")["path"]
    missing = sorted(set(test["track_id"]) - set(tracks.index))
    if missing:
        raise TrainingDataError(f"{paths.tracks}: no WAV listed for test tracks {', '.join(missing[:5])}")
    return TestAudio(
        clips=pd.DataFrame({
            "clip_id": test["clip_id"],
            "track_id": test["track_id"],
            "genre": test["genre"],
            "start_s": pd.to_numeric(test["start_s"]).astype(float),
            "path": [str(paths.root / tracks[t]) for t in test["track_id"]],
        }),
        genres=tuple(genres),
    )


def clip_waveforms(test: TestAudio, *, sample_rate: int, clip_samples: int) -> np.ndarray:
    """float32 [n_clips, clip_samples]: each test clip cut from its track decoded at ``sample_rate`` Hz
    (:func:`genretag.audio.decode`), window starting at ``start_s``; a window past the end is zero-padded.

    Raises AudioError naming a WAV that cannot be decoded.
    """
    from genretag.audio import decode

    out = np.zeros((len(test), clip_samples), dtype=np.float32)
    for path, rows in test.clips.groupby("path", sort=False).groups.items():
        waveform = decode(path, sample_rate=sample_rate).waveform
        for row in rows:
            start = int(round(float(test.clips.at[row, "start_s"]) * sample_rate))
            window = waveform[start : start + clip_samples]
            out[row, : len(window)] = window
    return out


def onnx_predict(onnx_path: str | Path, waveforms: np.ndarray, *, batch_size: int = ONNX_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """A contract-v2 graph on float32 [n, S] waveforms, CPU: (probabilities [n, K], embedding [n, D]).

    Integration point: once ``genretag.scoring.ScoringModel.predict(waveforms)`` is on main, this is
    that call. Raises ExportError naming the file when onnxruntime cannot load or run it.
    """
    import onnxruntime as ort

    from genretag.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME
    from genretag.errors import ExportError

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        runs = [session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: waveforms[i : i + batch_size]})
                for i in range(0, len(waveforms), batch_size)]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ExportError(f"{onnx_path}: onnxruntime cannot run it on waveforms ({str(exc).splitlines()[0]})") from exc
    if not runs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])


@dataclass(frozen=True)
class AudioScores:
    """One model on the test audio: clip probabilities float64 [n_clips, K] in ``TestAudio.genres``
    order, embedding float32 [n_clips, D], and the gate's outcome (clip and track argmax)."""

    contract: ModelContract
    probabilities: np.ndarray
    embedding: np.ndarray
    outcome: Outcome


def score_on_audio(onnx_path: str | Path, test: TestAudio, *, waveforms: Mapping[tuple[int, int], np.ndarray] | None = None) -> AudioScores:
    """Feed the test clips' waveforms at the model's own sample rate through its graph.

    ``waveforms``: a cache keyed by (sample_rate, clip_samples), filled here, so that models of
    one rate share one decoding. Raises ExportError for a v1 (image-input) model or labels that
    are not the test genres, AudioError for an undecodable WAV.
    """
    from genretag.contract import read_contract, require_v2
    from genretag.errors import ExportError

    contract = require_v2(read_contract(onnx_path), source=str(onnx_path))
    if sorted(contract.labels) != sorted(test.genres):
        raise ExportError(f"{onnx_path}: labels {list(contract.labels)} are not the test split's genres {list(test.genres)}")
    cache = {} if waveforms is None else waveforms
    key = (contract.sample_rate, contract.clip_samples)
    if key not in cache:
        cache[key] = clip_waveforms(test, sample_rate=contract.sample_rate, clip_samples=contract.clip_samples)
    probabilities, embedding = onnx_predict(onnx_path, cache[key])
    order = [contract.labels.index(g) for g in test.genres]
    probabilities = np.asarray(probabilities, dtype=np.float64)[:, order]
    return AudioScores(contract, probabilities, embedding, outcome_from_probabilities(probabilities, test=test.test_set()))


def evaluate_candidate(
    candidate: str, onnx_path: Path, test: TestAudio, *, metrics_path: Path, plots_dir: Path, tsne_clips: int,
    waveforms: Mapping[tuple[int, int], np.ndarray] | None = None,
) -> dict[str, float]:
    """Score one candidate on the test audio; write its metrics JSON, confusion matrix (CSV + PNG) and t-SNE."""
    scores = score_on_audio(onnx_path, test, waveforms=waveforms)
    labels = test.test_set().clip_truth
    metrics, _ = classification_metrics(scores.probabilities, labels, test.clips["track_id"], test.genres)
    metrics["sample_rate"] = scores.contract.sample_rate
    write_json(metrics_path, metrics)
    predicted = [test.genres[i] for i in scores.outcome.clip]
    write_csv(plots_dir / "confusion_matrix.csv", pd.DataFrame({"actual": test.clips["genre"], "predicted": predicted}))
    plot_confusion_matrix(test.clips["genre"], predicted, test.genres, plots_dir / "confusion_matrix.png",
                          title=f"{candidate}: confusion matrix ({len(test)} test clips, from audio)")
    subset = slice(0, tsne_clips)
    plot_tsne(scores.embedding[subset], test.clips["genre"][subset], test.genres, plots_dir / "tsne.png",
              title=f"{candidate}: t-SNE of the embedding ({min(len(test), tsne_clips)} test clips)")
    return metrics
