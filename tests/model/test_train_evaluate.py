"""Training and evaluation on tiny learnable data: learning, determinism, outputs, MLflow, experiments table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genretag.errors import ConfigError
from genretag.evaluate import (
    EXPERIMENT_COLUMNS,
    classification_metrics,
    cross_entropy,
    plot_tsne,
    read_experiments,
    record_experiment,
    run_experiments,
    track_predictions,
    tsne_perplexity,
)
from genretag.errors import TrainingDataError
from genretag.spectrogram import to_model_input
from genretag.train import (
    HISTORY_COLUMNS,
    image_dataset,
    read_clips,
    scale_images,
    train,
    with_experiment,
)

TINY_GENRES = ("blues", "jazz", "rock")  # tests/model/conftest.py's default

EVAL_KEYS = {"test_loss", "test_accuracy", "track_accuracy_mean_prob", "track_accuracy_vote", "macro_f1",
             "n_test_clips", "n_test_tracks", *(f"f1_{g}" for g in TINY_GENRES)}
TRAIN_KEYS = {"train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "epochs",
              "best_epoch", "seconds_per_epoch", "clips_per_second", "train_seconds"}


# --------------------------------------------------------------------------- data pipeline


def test_scale_images_is_to_model_input():
    every_byte = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(scale_images(every_byte).numpy(), to_model_input(every_byte))


def test_dataset_reads_pngs_scaled_with_one_hot_labels_in_genre_order(tmp_path, tiny_project):
    params, paths = tiny_project(tmp_path, tracks_per_split={"train": 1, "validation": 1, "test": 1}, clips_per_track=2)
    frame = read_clips(paths.clips, genres=params.genres)
    train_frame = frame[frame["split"] == "train"]
    data = image_dataset(train_frame, root=paths.root, genres=params.genres, image_size=(32, 32), batch_size=4)
    images, labels = (np.concatenate(parts) for parts in zip(*[(x.numpy(), y.numpy()) for x, y in data], strict=True))
    assert images.shape == (len(train_frame), 32, 32, 3) and images.dtype == np.float32
    expected = to_model_input(np.stack([np.asarray(Image.open(paths.root / p).convert("RGB")) for p in train_frame["image"]]))
    np.testing.assert_array_equal(images, expected)
    assert labels.argmax(axis=1).tolist() == [params.genres.index(g) for g in train_frame["genre"]]
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)


def test_missing_or_wrong_sized_images_are_named(tmp_path, tiny_project, tracked):
    params, paths = tiny_project(tmp_path, tracks_per_split={"train": 1, "validation": 1, "test": 1}, clips_per_track=1)
    clips = read_clips(paths.clips)
    missing = paths.root / clips["image"].iloc[0]
    missing.unlink()
    Image.new("RGB", (16, 16)).save(paths.root / clips["image"].iloc[1])
    with pytest.raises(TrainingDataError) as error:
        train(params, paths)
    assert str(missing) in str(error.value) and "no such file" in str(error.value)
    assert "16x16, expected 32x32" in str(error.value)


def test_unknown_experiment_is_a_config_error(tmp_path, tiny_project):
    params, _ = tiny_project(tmp_path, tracks_per_split={"train": 1, "validation": 1, "test": 1}, clips_per_track=1)
    with pytest.raises(ConfigError, match="exp8"):
        with_experiment(params, "exp42")
    assert with_experiment(params, "exp7", max_epochs=1).train.max_epochs == 1


# --------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_beats_chance(trained_project):
    params, paths, trained, _ = trained_project
    history = trained.history
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert trained.metrics["validation_accuracy"] > 1 / len(params.genres) + 0.2


def test_training_writes_its_outputs(trained_project):
    params, paths, trained, _ = trained_project
    assert paths.keras_model.is_file() and not list(paths.models_dir.glob(".*.tmp*"))
    history = pd.read_csv(paths.plots_dir / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [1, 2, 3]
    assert (paths.plots_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((paths.metrics_dir / "train.json").read_text())
    assert set(metrics) == TRAIN_KEYS
    assert all(isinstance(value, int | float) for value in metrics.values())
    training = json.loads((paths.models_dir / "training.json").read_text())
    assert training["mlflow_run_id"] == trained.run_id and training["experiment"] == "exp1"
    assert training["n_train"] == 24 and training["n_validation"] == 12
    assert training["epochs_run"] == 3 and 1 <= training["best_epoch"] <= 3
    assert training["params"] == params.train.model_dump()


def test_training_and_evaluation_are_logged_to_one_mlflow_run(trained_project, tracked):
    import mlflow

    _, _, trained, evaluated = trained_project
    mlflow.set_tracking_uri(tracked)
    run = mlflow.get_run(trained.run_id)
    assert run.data.params["train.experiment"] == "exp1"
    assert run.data.params["n_train"] == "24"
    history = mlflow.MlflowClient().get_metric_history(trained.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert run.data.metrics["test_accuracy"] == pytest.approx(evaluated.metrics["test_accuracy"])
    artifacts = {a.path for folder in ("train", "evaluate") for a in mlflow.MlflowClient().list_artifacts(trained.run_id, folder)}
    assert {"train/history.csv", "train/training_curves.png", "evaluate/eval.json", "evaluate/tsne.png"} <= artifacts
    assert evaluated.row["mlflow_run_id"] == trained.run_id


def test_same_seed_gives_the_same_history(tmp_path, tiny_project, tracked):
    """A conv model with dropout and a shuffled pipeline, trained twice from scratch."""
    histories = []
    for attempt, seed in (("first", 7), ("second", 7), ("other-seed", 8)):
        params, paths = tiny_project(tmp_path / attempt, experiment="exp4", max_epochs=2, seed=seed)
        histories.append(train(params, paths).history)
    pd.testing.assert_frame_equal(histories[0], histories[1], check_exact=True)
    assert not histories[0].equals(histories[2])  # the seed matters: equality above is not trivial


# --------------------------------------------------------------------------- evaluation


def test_evaluate_writes_eval_json_and_plots(trained_project):
    _, paths, _, evaluated = trained_project
    metrics = json.loads((paths.metrics_dir / "eval.json").read_text())
    assert EVAL_KEYS <= set(metrics)
    assert all(isinstance(value, int | float) for value in metrics.values())
    assert metrics["n_test_clips"] == 12 and metrics["n_test_tracks"] == 3
    assert metrics["test_accuracy"] > 1 / 3
    for plot in ("confusion_matrix.png", "tsne.png"):
        assert (paths.plots_dir / plot).read_bytes()[:4] == b"\x89PNG"


def test_confusion_matrix_has_one_row_per_test_clip(trained_project):
    params, paths, _, evaluated = trained_project
    confusion = pd.read_csv(paths.plots_dir / "confusion_matrix.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    matrix = pd.crosstab(confusion["actual"], confusion["predicted"])
    assert matrix.to_numpy().sum() == evaluated.metrics["n_test_clips"] == 12
    assert set(confusion["actual"]) <= set(params.genres) and set(confusion["predicted"]) <= set(params.genres)
    assert (confusion["actual"] == confusion["predicted"]).mean() == pytest.approx(evaluated.metrics["test_accuracy"])


def test_track_vote_and_mean_probability_can_disagree():
    # track a: two clips narrowly for class 1, one clip certain of class 0:
    #   mean probability (0.6, 0.4) -> class 0; majority vote 2:1 -> class 1.
    # track b: a 1:1 vote tie goes to the class of the higher mean probability (0.325, 0.675) -> 1.
    probabilities = np.array([[0.4, 0.6], [0.1, 0.9], [0.4, 0.6], [0.55, 0.45], [1.0, 0.0]])
    tracks = ["a", "b", "a", "b", "a"]
    result = track_predictions(probabilities, tracks)
    assert result["track_id"].tolist() == ["a", "b"]
    assert result["clips"].tolist() == [3, 2]
    assert result["mean_prob"].tolist() == [0, 1]
    assert result["vote"].tolist() == [1, 1]


def test_track_accuracies_follow_the_predictions():
    probabilities = np.array([[0.4, 0.6], [0.4, 0.6], [1.0, 0.0], [0.1, 0.9], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 1, 1])
    metrics, tracks = classification_metrics(probabilities, labels, ["a", "a", "a", "b", "b"], ["x", "y"])
    assert metrics["track_accuracy_mean_prob"] == 1.0  # a -> 0 by mean, b -> 1
    assert metrics["track_accuracy_vote"] == 0.5  # a -> 1 by vote: wrong
    assert metrics["test_accuracy"] == pytest.approx(3 / 5)
    assert metrics["n_test_tracks"] == 2 and tracks["actual"].tolist() == [0, 1]


def test_cross_entropy_matches_keras():
    import keras

    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(4), size=20).astype(np.float32)
    labels = rng.integers(0, 4, size=20)
    expected = keras.losses.CategoricalCrossentropy()(np.eye(4)[labels], probabilities)
    assert cross_entropy(probabilities, labels) == pytest.approx(float(expected), rel=1e-5)


def test_tsne_copes_with_few_clips(tmp_path):
    genres = ["x", "y"]
    assert tsne_perplexity(2) is None and tsne_perplexity(4) == 1.0 and tsne_perplexity(1000) == 30.0
    for count in (0, 2, 5):
        target = plot_tsne(np.random.default_rng(0).random((count, 128)), ["x", "y", "x", "y", "x"][:count], genres,
                           tmp_path / f"tsne{count}.png")
        assert target.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- experiments table


def _row(key: str, experiment: str, accuracy: float) -> dict:
    return {column: None for column in EXPERIMENT_COLUMNS} | {
        "key": key, "experiment": experiment, "test_accuracy": accuracy, "timestamp": "2026-01-01T00:00:00+00:00",
        "git_commit": "", "description": "", "image_size": "64x64", "split_method": "track",
    }


def test_experiments_rows_are_replaced_by_key_not_duplicated(tmp_path):
    csv, md = tmp_path / "experiments.csv", tmp_path / "experiments.md"
    record_experiment(_row("k8", "exp8", 0.5), csv_path=csv, md_path=md)
    record_experiment(_row("k1", "exp1", 0.3), csv_path=csv, md_path=md)
    record_experiment(_row("k8", "exp8", 0.7), csv_path=csv, md_path=md)
    table = read_experiments(csv)
    assert table["key"].tolist() == ["k1", "k8"]  # paper order, one row per key
    assert table.loc[table["key"] == "k8", "test_accuracy"].item() == pytest.approx(0.7)
    assert list(table.columns) == EXPERIMENT_COLUMNS
    text = md.read_text()
    assert "| exp1 |" in text and text.count("| exp8 |") == 1 and "70.0" in text


def test_evaluating_again_replaces_the_row(trained_project, tracked):
    from genretag.evaluate import evaluate

    params, paths, _, first = trained_project
    again = evaluate(params, paths)
    table = read_experiments(paths.reports_dir / "experiments.csv")
    assert again.row["key"] == first.row["key"]
    assert (table["key"] == first.row["key"]).sum() == 1
    assert "| exp1 |" in (paths.reports_dir / "experiments.md").read_text()


def test_run_experiments_keeps_the_pipeline_model(trained_project, tracked):
    params, paths, _, _ = trained_project
    before = paths.keras_model.read_bytes()
    rows = run_experiments(["exp1", "exp2"], params=params, paths=paths, max_epochs=1)
    assert paths.keras_model.read_bytes() == before
    assert rows["experiment"].tolist() == ["exp1", "exp2"] and (rows["epochs_run"] == 1).all()
    for name in ("exp1", "exp2"):
        folder = paths.models_dir / "experiments" / name
        assert (folder / "model.keras").is_file() and (folder / "eval.json").is_file()
    table = read_experiments(paths.reports_dir / "experiments.csv")
    assert not table["key"].duplicated().any()
    assert set(table["experiment"]) == {"exp1", "exp2"} and len(table) == 3  # exp1 x 3 epochs, exp1 x 1, exp2 x 1


def test_run_experiments_checks_every_name_first(trained_project):
    params, paths, _, _ = trained_project
    with pytest.raises(ConfigError, match="exp99"):
        run_experiments(["exp1", "exp99"], params=params, paths=paths)
    assert not (paths.models_dir / "experiments" / "exp99").exists()


# --------------------------------------------------------------------------- flows


@pytest.mark.slow
def test_train_and_evaluate_flows(prefect_api, tmp_path, tiny_project, tracked, monkeypatch):
    """The thin Prefect flows: a transient fault is retried, outputs land where DVC expects them."""
    import flows.common
    from flows.evaluate import evaluate_flow
    from flows.train import train_flow

    params, paths = tiny_project(tmp_path, max_epochs=2)
    monkeypatch.setenv("GENRETAG_ROOT", str(paths.root))
    monkeypatch.setenv("GENRETAG_FAULTS", "train.fit=1")
    flows.common._fault_counts.clear()
    summary = train_flow()
    assert summary["experiment"] == "exp1" and summary["epochs"] == 2
    assert paths.keras_model.is_file() and (paths.metrics_dir / "train.json").is_file()

    monkeypatch.setenv("GENRETAG_FAULTS", "evaluate.predict=permanent")
    with pytest.raises(flows.common.PermanentFault):
        evaluate_flow()
    assert not (paths.metrics_dir / "eval.json").exists()

    monkeypatch.delenv("GENRETAG_FAULTS")
    metrics = evaluate_flow()
    assert metrics["mlflow_run_id"] == summary["mlflow_run_id"]
    assert EVAL_KEYS <= set(json.loads((paths.metrics_dir / "eval.json").read_text()))
    assert len(read_experiments(paths.reports_dir / "experiments.csv")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["mixed_precision", "xla"])
def test_mixed_precision_and_xla_are_params_only(tmp_path, tiny_project, tracked, switch):
    params, paths = tiny_project(tmp_path, max_epochs=2, **{switch: True})
    result = train(params, paths)
    assert result.training["params"][switch] is True
    assert result.training["deterministic"] is (switch != "xla")
    assert np.isfinite(result.history["loss"]).all()
    from genretag.evaluate import evaluate

    assert evaluate(params, paths).metrics["n_test_clips"] == 12  # the saved model loads back


def test_cli_experiments_run(tmp_path, tiny_project, tracked, monkeypatch):
    from typer.testing import CliRunner

    from genretag.cli import app

    _, paths = tiny_project(tmp_path, tracks_per_split={"train": 1, "validation": 1, "test": 1}, clips_per_track=2)
    monkeypatch.setenv("GENRETAG_ROOT", str(paths.root))
    outcome = CliRunner().invoke(app, ["experiments", "run", "exp1", "--max-epochs", "1"])
    assert outcome.exit_code == 0, outcome.output
    assert "exp1: test accuracy" in outcome.output
    assert not paths.keras_model.exists() and (paths.models_dir / "experiments" / "exp1" / "model.keras").is_file()
    assert "| exp1 |" in (paths.reports_dir / "experiments.md").read_text()
    failed = CliRunner().invoke(app, ["experiments", "run", "exp0"])
    assert failed.exit_code == 1 and "valid: exp1" in failed.output
