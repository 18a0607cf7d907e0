"""Decoding only the windows (genretag.audio.seeking.decode_windows) gives the samples of decoding the whole
file then cutting it, while reading a number of frames set by the windows, not by the track's length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genretag.audio import decoding, seeking
from genretag.core.errors import AudioError
from genretag.dsp.spectrogram import window_starts
from tests.audio_files import encode_with_pyav, long_track, music_like, write_soundfile

# A range resampled alone (with RESAMPLER_MARGIN_FRAMES each side) vs the whole file resampled once:
# soxr's output differs by float rounding only (measured <= 4e-7 on full-scale noise); decoded
# samples themselves are identical (libsndfile and FFmpeg seeks are sample-exact for these formats).
TOLERANCE = 1e-5
RATE_IN = 44100


def whole_then_cut(path: Path, *, sample_rate: int, clip_samples: int, max_windows: int) -> tuple[np.ndarray, np.ndarray]:
    waveform = decoding.decode(path, sample_rate=sample_rate).waveform
    starts = window_starts(len(waveform), clip_samples=clip_samples, max_windows=max_windows, evenly_spaced=True)
    return starts, np.stack([waveform[s : s + clip_samples] for s in starts])


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    return music_like(30.0, RATE_IN)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
@pytest.mark.parametrize("sample_rate", [22050, 16000])
def test_seeking_equals_decoding_the_whole_file(tmp_path: Path, music: np.ndarray, suffix: str, sample_rate: int) -> None:
    path = write_soundfile(tmp_path / f"track{suffix}", music, sample_rate=RATE_IN)
    clip = 3 * sample_rate
    decoded = seeking.decode_windows(path, sample_rate=sample_rate, clip_samples=clip, max_windows=3)
    starts, expected = whole_then_cut(path, sample_rate=sample_rate, clip_samples=clip, max_windows=3)
    assert decoded.seeked and decoded.frames_read < decoded.track_frames / 2
    np.testing.assert_array_equal(decoded.starts, starts)
    assert decoded.windows.shape == (3, clip) and decoded.windows.dtype == np.float32
    assert float(np.abs(decoded.windows - expected).max()) <= TOLERANCE
    assert float(np.abs(expected).max()) > 0.1  # the comparison is on music, not on silence
    assert (decoded.original_sample_rate, decoded.channels) == (RATE_IN, 2)


def test_opus_seeks_equal_the_whole_file(tmp_path: Path) -> None:
    """libsndfile reads Ogg Opus; its first read skips the encoder's pre-skip only after a seek, so the
    whole-file read seeks first too (without it, every sample here came 312 frames late: 0.3 apart)."""
    path = encode_with_pyav(tmp_path / "track.opus", samples=music_like(30.0, 48000))
    decoded = seeking.decode_windows(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    starts, expected = whole_then_cut(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    assert decoded.seeked and decoded.original_sample_rate == 48000
    np.testing.assert_array_equal(decoded.starts, starts)
    assert float(np.abs(decoded.windows - expected).max()) <= TOLERANCE


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / max(float(np.sum((other - reference) ** 2)), 1e-30)))


def test_pyav_seeks_aac_to_the_same_samples(tmp_path: Path) -> None:
    """MP4/AAC (libsndfile cannot read it): PyAV seeks. FFmpeg's AAC decoder is not bit-identical after a
    seek (measured here 45 dB SNR against the whole-file decode on this noise-free music); a window one
    sample off scores about 14 dB, so 35 dB shows every sample is in its place."""
    path = encode_with_pyav(tmp_path / "track.m4a", samples=music_like(30.0, RATE_IN, noise=False))
    decoded = seeking.decode_windows(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    starts, expected = whole_then_cut(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    assert decoded.seeked and decoded.frames_read < decoded.track_frames / 2
    np.testing.assert_array_equal(decoded.starts, starts)
    assert all(snr_db(e, d) >= 35.0 for e, d in zip(expected, decoded.windows, strict=True))
    assert snr_db(expected[1], np.roll(expected[1], 1)) < 35.0  # the check can fail


def test_frames_decoded_for_a_long_file_are_bounded_by_the_windows(tmp_path: Path) -> None:
    minutes, max_windows, rate, clip = 10, 2, 22050, 66150
    path = long_track(tmp_path / "long.flac", minutes=minutes, sample_rate=RATE_IN)
    decoded = seeking.decode_windows(path, sample_rate=rate, clip_samples=clip, max_windows=max_windows)
    assert decoded.track_frames == minutes * 60 * RATE_IN and decoded.seeked
    # each window: its 3 s at the file's rate plus well under 0.5 s of resampler margins
    assert decoded.frames_read <= max_windows * 3.5 * RATE_IN
    assert decoded.frames_read >= max_windows * 3 * RATE_IN
    assert len(decoded.windows) == max_windows and decoded.starts[-1] + clip <= decoded.track_samples
    # all windows: nothing to save by seeking, the whole file is read once
    every = seeking.decode_windows(path, sample_rate=rate, clip_samples=clip, max_windows=0)
    assert not every.seeked and every.frames_read == every.track_frames and len(every.windows) == minutes * 20


def test_a_file_shorter_than_its_header_says_falls_back_to_the_whole_file(tmp_path: Path, music: np.ndarray) -> None:
    path = write_soundfile(tmp_path / "cut.mp3", music, sample_rate=RATE_IN)
    with open(path, "r+b") as handle:  # a download cut short: the Xing header still claims 30 s
        handle.truncate(path.stat().st_size * 6 // 10)
    decoded = seeking.decode_windows(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    starts, expected = whole_then_cut(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    assert not decoded.seeked
    np.testing.assert_array_equal(decoded.starts, starts)
    np.testing.assert_array_equal(decoded.windows, expected)


def test_a_corrupt_file_is_still_one_line_naming_it(tmp_path: Path, music: np.ndarray) -> None:
    path = write_soundfile(tmp_path / "cut.flac", music, sample_rate=RATE_IN)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size * 6 // 10)
    assert sf.info(path).frames == len(music)  # the header still promises every frame
    with pytest.raises(AudioError) as caught:
        seeking.decode_windows(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a decodable audio file (soundfile: ") and "\n" not in message


def test_coarse_timestamps_are_not_seeked(tmp_path: Path) -> None:
    """WebM counts time in milliseconds, which do not name one 48 kHz sample: the whole file is decoded."""
    path = encode_with_pyav(tmp_path / "track.webm", samples=music_like(30.0, 48000, noise=False))
    decoded = seeking.decode_windows(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    starts, expected = whole_then_cut(path, sample_rate=22050, clip_samples=66150, max_windows=3)
    assert not decoded.seeked and decoded.frames_read == decoded.track_frames
    np.testing.assert_array_equal(decoded.starts, starts)
    np.testing.assert_array_equal(decoded.windows, expected)
