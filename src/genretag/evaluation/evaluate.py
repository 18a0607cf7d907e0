"""Evaluation: clip- and track-level test metrics, per-genre scores, confusion matrix, t-SNE.

Every candidate (``models/candidates/<id>/model.onnx``, any family) is evaluated from the test
split's **audio**: each clip is cut from its track decoded at the model's own sample rate and fed
as a waveform through the graph (:func:`score_on_audio`), so every family is measured by the same
code on the same clips. Each candidate's clip probabilities are stored (data/scores/<id>.npz,
:mod:`genretag.evaluation.test_scores`) so that the registry's gate reads them instead of decoding again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genretag.core.atomic import write_csv, write_json
from genretag.core.config import Layout
from genretag.onnx.contract import ModelContract
from genretag.core.errors import TrainingDataError
from genretag.core.config import INT8_DIR, INT8_SUFFIX
from genretag.evaluation.paired_tests import Outcome, TestSet, outcome_from_probabilities
from genretag.evaluation.tracks import TrackGroups
from genretag.data.splits import read_clips
from genretag.core.atomic import save_figure

EPSILON = 1e-7  # Keras' clip for categorical cross-entropy

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
    groups = TrackGroups.of(track_ids)
    tracks, codes, clips, mean = groups.names, groups.codes, groups.counts, groups.means(probabilities)
    votes = np.zeros((len(groups), probabilities.shape[1]), dtype=np.int64)
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
    """The flat metrics of metrics/candidates/<id>.json and the per-track predictions.

    ``probabilities`` float [n_clips, K] in ``genres`` order, ``labels`` int [n_clips], ``track_ids`` n_clips strings.
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    labels = np.asarray(labels)
    predicted = np.asarray(probabilities).argmax(axis=1)
    classes = list(range(len(genres)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    tracks = track_predictions(probabilities, track_ids)
    tracks["actual"] = labels[TrackGroups.of(track_ids).first]
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


# --------------------------------------------------------------------------- contract-v2 candidates on audio

ONNX_BATCH = 64  # clips per onnxruntime run: bounds memory of waveform-in graphs (issue 10: 32-64)


def find_candidates(paths: Layout, *, candidates: Sequence[str]) -> dict[str, Path]:
    """Candidate id -> ``models/candidates/<id>/model.onnx`` for each of ``candidates`` (params
    ``train.candidates``) whose model exists, sorted by id. A folder left by a candidate that was
    dropped from params is ignored: DVC does not delete outputs of a stage that no longer exists.
    An int8 export beside a candidate's model (``<id>/int8/model.onnx``, :func:`genretag.export.export_int8`)
    is candidate ``<id>-int8``.
    """
    found = {}
    for c in candidates:
        found[c] = paths.candidate_dir(c) / "model.onnx"
        found[f"{c}{INT8_SUFFIX}"] = paths.candidate_dir(c) / INT8_DIR / "model.onnx"
    return {c: found[c] for c in sorted(found) if found[c].is_file()}


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
    from genretag.data.ingest import read_table

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
    (:func:`genretag.audio.decoding.decode`) by :func:`genretag.audio.clips.cut_clips` from ``start_s``.

    Raises AudioError naming a WAV that cannot be decoded or is too short for its clips (the policy of
    :mod:`genretag.audio.clips`).
    """
    from genretag.audio.clips import cut_clips, start_samples
    from genretag.audio.decoding import decode

    out = np.zeros((len(test), clip_samples), dtype=np.float32)
    for path, rows in test.clips.groupby("path", sort=False).indices.items():
        starts = start_samples(test.clips["start_s"].to_numpy()[rows], sample_rate=sample_rate)
        out[rows] = cut_clips(decode(path, sample_rate=sample_rate).waveform, starts=starts, clip_samples=clip_samples, source=path)
    return out


def onnx_predict(onnx_path: str | Path, waveforms: np.ndarray, *, batch_size: int = ONNX_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """A contract-v2 graph on float32 [n, S] waveforms, CPU: (probabilities [n, K], embedding [n, D]).

    Raises ExportError naming the file when onnxruntime cannot load or run it.
    """
    from genretag.core.errors import ExportError
    from genretag.onnx.session import cpu_session, predict_waveforms

    try:
        prediction = predict_waveforms(cpu_session(onnx_path), waveforms, batch_size=batch_size)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ExportError(f"{onnx_path}: onnxruntime cannot run it on waveforms ({str(exc).splitlines()[0]})") from exc
    return prediction.probabilities, prediction.embedding


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
    from genretag.onnx.contract import read_contract, require_v2
    from genretag.core.errors import ExportError

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


def calibration_metrics(probabilities: np.ndarray, labels: np.ndarray, contract: ModelContract) -> dict[str, float]:
    """Calibration facts of metrics/candidates/<id>.json: ``temperature`` (1 when the model records none),
    ``ece_before``/``ece_after`` on the validation clips from the ``genretag.calibration`` record (when it has
    them), and ``test_ece_after`` (the graph's own, calibrated ``probabilities`` float [n, K] against integer
    ``labels`` [n]) and ``test_ece_before`` (the same with the temperature undone:
    ``temperature_scaled(p, 1 / T)``), both over :data:`~genretag.calibration.ECE_BINS` bins."""
    from genretag.evaluation.calibration import ECE_BINS, expected_calibration_error, temperature_scaled

    record = contract.calibration
    temperature = float(record.get("temperature", 1.0))
    bins = int(record.get("bins", ECE_BINS))
    uncalibrated = temperature_scaled(probabilities=probabilities, temperature=1.0 / temperature)
    facts = {"temperature": temperature,
             "ece_before": record.get("ece_before"), "ece_after": record.get("ece_after"),
             "test_ece_before": expected_calibration_error(probabilities=uncalibrated, labels=labels, bins=bins),
             "test_ece_after": expected_calibration_error(probabilities=probabilities, labels=labels, bins=bins)}
    return {key: float(value) for key, value in facts.items() if value is not None}


def evaluate_candidate(
    candidate: str, onnx_path: Path, test: TestAudio, *, metrics_path: Path, plots_dir: Path, tsne_clips: int,
    waveforms: Mapping[tuple[int, int], np.ndarray] | None = None, scores_path: Path | None = None,
) -> dict[str, float]:
    """Score one candidate on the test audio; write its metrics JSON, confusion matrix (CSV + PNG) and t-SNE,
    and (``scores_path`` given) its clip probabilities for the register stage
    (:func:`genretag.evaluation.test_scores.write_test_scores`, keyed by the file's SHA-256).

    The metrics include :func:`calibration_metrics`: the graph's probabilities are already calibrated, so
    nothing is applied here; the uncalibrated ECE is measured by undoing the recorded temperature.
    """
    scores = score_on_audio(onnx_path, test, waveforms=waveforms)
    labels = test.test_set().clip_truth
    metrics, _ = classification_metrics(scores.probabilities, labels, test.clips["track_id"], test.genres)
    metrics["sample_rate"] = scores.contract.sample_rate
    metrics.update(calibration_metrics(scores.probabilities, labels, scores.contract))
    write_json(metrics_path, metrics)
    if scores_path is not None:
        from genretag.audio.decoding import file_sha256
        from genretag.evaluation.test_scores import write_test_scores

        write_test_scores(scores_path, probabilities=scores.probabilities, clip_ids=test.clips["clip_id"], genres=test.genres,
                          fingerprint=test.fingerprint(), onnx_sha256=file_sha256(onnx_path))
    predicted = [test.genres[i] for i in scores.outcome.clip]
    # The confusion matrix as data: `dvc plots show` draws it with vega (dvc.yaml's confusion template,
    # vega served locally); a PNG of it beside the CSV would be the same panel twice.
    write_csv(plots_dir / "confusion_matrix.csv", pd.DataFrame({"actual": test.clips["genre"], "predicted": predicted}))
    subset = slice(0, tsne_clips)
    plot_tsne(scores.embedding[subset], test.clips["genre"][subset], test.genres, plots_dir / "tsne.png",
              title=f"{candidate}: t-SNE of the embedding ({min(len(test), tsne_clips)} test clips)")
    return metrics
