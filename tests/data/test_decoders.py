"""Every kind of audio file a catalog holds decodes the same on every install (PyAV bundles FFmpeg),
or fails with one line naming the file and each decoder's reason."""

from __future__ import annotations

import os
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from genretag.audio import decoding as audio
from genretag.audio.folders import is_audio_name
from genretag.core.errors import AudioError
from tests.audio_files import PYAV_FORMATS, encode_with_pyav, float_wav_with_short_peak_chunk, sine, wav_with_zero_sizes


@pytest.mark.parametrize("suffix", sorted(PYAV_FORMATS))
def test_compressed_formats_decode_through_pyav(tmp_path: Path, suffix: str) -> None:
    path = encode_with_pyav(tmp_path / f"track{suffix.upper() if suffix == '.m4a' else suffix}", seconds=4.0)
    decoded = audio.decode(path, sample_rate=22050)
    assert decoded.original_sample_rate == PYAV_FORMATS[suffix][2] and decoded.channels == 2
    assert decoded.duration_s == pytest.approx(4.0, abs=0.1)  # encoder priming/padding only
    assert decoded.stats.rms_dbfs == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.5)
    assert is_audio_name(path)


def test_float_wav_with_a_short_peak_chunk_is_read_by_ffmpeg(tmp_path: Path) -> None:
    path = float_wav_with_short_peak_chunk(tmp_path / "peak.wav", seconds=4.0)
    with pytest.raises(sf.LibsndfileError, match="PEAK"):
        sf.read(path)
    decoded = audio.decode(path, sample_rate=22050)
    assert (decoded.original_sample_rate, decoded.channels) == (44100, 2)
    assert decoded.duration_s == pytest.approx(4.0, abs=1e-3)


def test_wav_with_zero_riff_and_data_sizes_is_recovered(tmp_path: Path) -> None:
    path = wav_with_zero_sizes(tmp_path / "crashed.wav", seconds=8.0)
    assert sf.info(path).frames == 0  # soundfile sees no samples and does not raise
    decoded = audio.decode(path, sample_rate=22050)
    assert decoded.duration_s == pytest.approx(8.0, abs=1e-3)
    assert decoded.stats.peak == pytest.approx(0.3, abs=1e-3)


def test_random_bytes_are_not_a_decodable_audio_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(1).bytes(20_000))
    with pytest.raises(AudioError) as caught:
        audio.decode(path, sample_rate=22050)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a decodable audio file (soundfile: ")
    assert "; ffmpeg: " in message and "possibly a pipe" not in message and "\n" not in message


@pytest.mark.parametrize("rate", [1, 1000, 1_000_000])
def test_implausible_sample_rate_is_refused_before_resampling(tmp_path: Path, rate: int) -> None:
    path = tmp_path / f"rate{rate}.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.1, 0.1, 10_000).astype(np.float32), rate)
    with pytest.raises(AudioError, match=rf"implausible sample rate {rate} Hz \(music files use 4000\.\.384000 Hz"):
        audio.decode(path, sample_rate=22050)


def test_bounds_accept_real_rates(tmp_path: Path) -> None:
    for rate in (8000, 192000):
        path = tmp_path / f"ok{rate}.wav"
        sf.write(path, sine(0.5, rate, channels=1), rate)
        assert audio.decode(path, sample_rate=22050).original_sample_rate == rate


def test_resample_is_librosa_soxr_hq_exactly() -> None:
    x = np.random.default_rng(0).standard_normal(12_345).astype(np.float32) * 0.1
    for orig, target in ((44100, 22050), (48000, 16000), (8000, 22050)):
        ours = audio.resample(x, orig_sr=orig, target_sr=target)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, librosa.resample(x, orig_sr=orig, target_sr=target, res_type="soxr_hq"))


def test_a_pipe_named_wav_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="not a regular file"):
        audio.decode(fifo, sample_rate=22050)
