"""Numpy references of the non-image front ends (genretag.features) against librosa."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.fft

from genretag.dsp import features
from tests.clips_support import KINDS, real_looking_clips


def test_dct_matrix_is_scipys_orthonormal_dct_ii() -> None:
    x = np.random.default_rng(0).standard_normal((128, 5))
    expected = scipy.fft.dct(x, type=2, norm="ortho", axis=0)[:20]
    np.testing.assert_allclose(features.dct_ii_ortho(128, 20) @ x, expected, atol=1e-5)
    with pytest.raises(ValueError, match="cannot keep"):
        features.dct_ii_ortho(10, 20)


def test_mfcc_and_its_statistics_equal_librosa() -> None:
    clips = real_looking_clips(sample_rate=22050, samples=66150)
    ours = features.mfcc(clips, sample_rate=22050)
    theirs = np.stack([librosa.feature.mfcc(y=clip, sr=22050, n_mfcc=20) for clip in clips])
    assert ours.shape == theirs.shape == (len(KINDS), 20, 130)
    np.testing.assert_allclose(ours, theirs, atol=2e-2, rtol=1e-4)  # coefficients up to ~1000
    stats = features.mfcc_stats(clips, sample_rate=22050)
    delta_std = np.diff(theirs, axis=2).std(axis=2)
    assert stats.shape == (len(KINDS), 60)
    np.testing.assert_allclose(stats, np.concatenate([theirs.mean(axis=2), theirs.std(axis=2), delta_std], axis=1), atol=1e-2, rtol=1e-4)


def test_musicnn_log_mel_is_musicnns_preprocessing_in_float32() -> None:
    clips = real_looking_clips(sample_rate=16000, samples=48000)
    ours = features.musicnn_log_mel(clips)
    # musicnn/extractor.py batch_data, with librosa 0.7's reflect padding and the log in float32
    mel = np.stack([librosa.feature.melspectrogram(y=c, sr=16000, hop_length=256, n_fft=512, n_mels=96, pad_mode="reflect").T for c in clips])
    expected = np.log10(10000 * mel[:, :187] + 1).astype(np.float32)
    assert ours.shape == expected.shape == (len(KINDS), 187, 96) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="48000"):
        features.musicnn_log_mel(clips[:, :16000])
