"""Candidates evaluated from audio through their ONNX graphs (real onnxruntime), each at its own sample rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.gate_support import GENRES, MEDIOCRE, PERFECT, save_candidate, tone_model, tone_project, votes

from genretag.audio.clips import END_SLACK_SAMPLES, cut_clips, start_samples
from genretag.audio.decoding import decode
from genretag.core.errors import AudioError, ExportError
from genretag.evaluation.evaluate import clip_waveforms, evaluate_candidate, find_candidates, read_test_audio, score_on_audio


def test_candidates_of_two_sample_rates_are_scored_on_the_same_clips(tmp_path) -> None:
    params, paths = tone_project(tmp_path, test_tracks=2)
    test = read_test_audio(paths, genres=params.genres)
    assert len(test) == 6 and test.test_set().n_tracks == 6
    waveforms: dict = {}
    # Labels in another order than params: probabilities come back in the test split's genre order.
    reordered = tone_model(votes(PERFECT)[:, [2, 0, 1]], labels=(GENRES[2], GENRES[0], GENRES[1]), sample_rate=16000)
    at_16k = score_on_audio(save_candidate(paths, "musicnn-msd", reordered), test, waveforms=waveforms)
    at_22k = score_on_audio(save_candidate(paths, "mfcc-logreg", tone_model(votes(MEDIOCRE))), test, waveforms=waveforms)
    assert set(waveforms) == {(16000, 48000), (22050, 66150)}
    truth = test.test_set().track_truth
    assert np.array_equal(at_16k.outcome.track, truth)
    assert np.array_equal(at_22k.outcome.track, np.where(truth == 2, 0, truth))  # rock heard as blues
    assert at_16k.probabilities.shape == (6, 3) and at_16k.embedding.shape == (6, 4)
    assert list(find_candidates(paths, candidates=["musicnn-msd", "mfcc-logreg", "compact"])) == ["mfcc-logreg", "musicnn-msd"]

    metrics = evaluate_candidate("musicnn-msd", find_candidates(paths, candidates=["musicnn-msd"])["musicnn-msd"], test,
                                 metrics_path=paths.metrics_dir / "candidates" / "musicnn-msd.json",
                                 plots_dir=paths.plots_dir / "candidates" / "musicnn-msd", tsne_clips=250)
    assert metrics["track_accuracy_mean_prob"] == 1.0 and metrics["sample_rate"] == 16000
    assert json.loads((paths.metrics_dir / "candidates" / "musicnn-msd.json").read_text())["n_test_tracks"] == 6
    assert {p.name for p in (paths.plots_dir / "candidates" / "musicnn-msd").iterdir()} == {"confusion_matrix.csv", "tsne.png"}


def test_windows_follow_start_s_and_a_window_past_the_end_is_refused(tmp_path) -> None:
    """One clip-cutting policy (genretag.audio.clips) for evaluation and training: a window that runs past its
    track's end by more than END_SLACK_SAMPLES is an AudioError naming the WAV, not silently zero-padded."""
    params, paths = tone_project(tmp_path, test_tracks=1)
    test = read_test_audio(paths, genres=params.genres)
    test.clips.loc[0, "start_s"] = 0.2  # the WAVs last 3.2 s: a 3-s window from 0.2 s ends on the last sample
    windows = clip_waveforms(test, sample_rate=8000, clip_samples=24000)
    assert windows.dtype == np.float32 and windows.shape == (3, 24000)
    whole = decode(test.clips.at[0, "path"], sample_rate=8000).waveform
    np.testing.assert_array_equal(windows[0], whole[1600:25600])
    test.clips.loc[0, "start_s"] = 1.0  # 0.8 s past the end
    with pytest.raises(AudioError, match="too short for a clip of 24000 samples at sample 8000") as refused:
        clip_waveforms(test, sample_rate=8000, clip_samples=24000)
    assert str(refused.value).startswith(test.clips.at[0, "path"]) and "\n" not in str(refused.value)


def test_cut_clips_pads_at_most_the_slack_at_the_end() -> None:
    waveform = np.arange(1, 11, dtype=np.float32)
    clips = cut_clips(waveform, starts=[0, 10 - 4 + END_SLACK_SAMPLES], clip_samples=4, source="t.wav")
    np.testing.assert_array_equal(clips, [[1, 2, 3, 4], [8, 9, 10, 0]])
    for start in (-1, 10 - 4 + END_SLACK_SAMPLES + 1):
        with pytest.raises(AudioError, match="^t.wav: 10 samples, too short"):
            cut_clips(waveform, starts=[start], clip_samples=4, source="t.wav")
    assert start_samples([0.0, 1.5, 2.99995], sample_rate=22050).tolist() == [0, 33075, 66149]


def test_a_model_with_other_labels_is_refused_in_one_line(tmp_path) -> None:
    params, paths = tone_project(tmp_path, test_tracks=1)
    test = read_test_audio(paths, genres=params.genres)
    other = save_candidate(paths, "other", tone_model(votes(PERFECT), labels=("a", "b", "c")))
    with pytest.raises(ExportError, match="are not the test split's genres") as refused:
        score_on_audio(other, test)
    assert "\n" not in str(refused.value)
