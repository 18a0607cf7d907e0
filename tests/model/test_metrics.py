"""Evaluation metrics and plots: track-level aggregation, cross-entropy, t-SNE with few clips."""

from __future__ import annotations

import numpy as np
import pytest

from genretag.evaluation.evaluate import classification_metrics, cross_entropy, plot_tsne, track_predictions, tsne_perplexity


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
