"""The one preprocessing function: librosa parity, colour map, orientation, shapes."""

import librosa
import matplotlib
import numpy as np
import pytest

from genretag.dsp.spectrogram import (
    COLORMAPS,
    PreprocessingSpec,
    mel_bands,
    mel_db,
    mel_filterbank,
    to_model_input,
    waveform_to_images,
    window_starts,
)
from tests.conftest import tone

SPEC = PreprocessingSpec(image_size=(128, 128))


def test_mel_filterbank_equals_librosa():
    ours = mel_filterbank(22050, 2048, 128, 0.0, 11025.0)
    theirs = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=128)
    np.testing.assert_allclose(ours, theirs, atol=1e-7)


def test_mel_bands_hold_every_nonzero_filter_weight():
    dense = mel_filterbank(22050, 2048, 128, 0.0, 11025.0)
    rebuilt = np.zeros_like(dense)
    for first, stop, lo, hi, weights in mel_bands(22050, 2048, 128, 0.0, 11025.0):
        rebuilt[first:stop, lo:hi] = weights.T
    np.testing.assert_array_equal(rebuilt, dense)
    assert sum(w.size for *_, w in mel_bands(22050, 2048, 128, 0.0, 11025.0)) < 0.1 * dense.size


def test_mel_db_equals_librosa_per_clip():
    rng = np.random.default_rng(3)
    clips = (rng.standard_normal((3, SPEC.clip_samples)) * [[0.01], [0.1], [0.5]]).astype(np.float32)
    ours = mel_db(clips, SPEC)
    power = librosa.feature.melspectrogram(y=clips, sr=22050, n_fft=2048, hop_length=512, n_mels=128)
    theirs = np.stack([librosa.power_to_db(p, ref=np.max, top_db=80.0) for p in power])
    assert ours.shape == (3, 128, 130)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert ours.max() == 0.0 and ours.min() >= -80.0


def test_viridis_table_is_matplotlibs():
    expected = np.round(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(COLORMAPS["viridis"], expected)


def test_low_frequencies_are_at_the_bottom():
    images = waveform_to_images(tone(3.0, frequency=100.0, amplitude=0.5), SPEC)
    brightness = images[0].astype(float).sum(axis=(1, 2))  # yellow (loud) is brighter than purple
    assert int(np.argmax(brightness)) >= 128 - 10  # the 100 Hz band is near the bottom row


def test_shapes_types_and_partial_clips():
    spec = PreprocessingSpec(image_size=(64, 48))
    images = waveform_to_images(tone(10.5), spec)
    assert images.shape == (3, 64, 48, 3) and images.dtype == np.uint8  # 10.5 s -> 3 whole clips
    assert waveform_to_images(tone(2.0), spec).shape == (0, 64, 48, 3)
    model_input = to_model_input(images)
    assert model_input.dtype == np.float32 and 0.0 <= model_input.min() and model_input.max() <= 1.0


def test_window_selection():
    clip = 100
    assert window_starts(1050, clip_samples=clip).tolist() == list(range(0, 1000, 100))
    assert window_starts(1050, clip_samples=clip, max_windows=3, evenly_spaced=False).tolist() == [0, 100, 200]
    spread = window_starts(10_000, clip_samples=clip, max_windows=5)
    assert spread[0] == 0 and spread[-1] == 9900 and len(spread) == 5


def test_spec_json_round_trip():
    spec = PreprocessingSpec(image_size=(220, 216), fmax=8000.0)
    assert PreprocessingSpec.from_json(spec.to_json()) == spec


def test_rejects_stereo():
    with pytest.raises(ValueError, match="mono"):
        waveform_to_images(np.zeros((2, 66150), dtype=np.float32), SPEC)
