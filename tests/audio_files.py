"""Unusual audio files made by the tests themselves: PyAV encodings and hand-built WAV headers."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

# suffix -> (container format, codec, sample rate): what real catalogs hold besides WAV/FLAC/MP3.
PYAV_FORMATS: dict[str, tuple[str, str, int]] = {
    ".m4a": ("ipod", "aac", 44100),
    ".mp4": ("mp4", "aac", 44100),
    ".opus": ("ogg", "libopus", 48000),
    ".webm": ("webm", "libopus", 48000),
    ".wma": ("asf", "wmav2", 44100),
}


def sine(seconds: float, sample_rate: int, *, frequency: float = 440.0, channels: int = 2) -> np.ndarray:
    """float32 [frames, channels] sine at 0.3 full scale."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mono = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def encode_with_pyav(path: Path, *, seconds: float = 4.0, samples: np.ndarray | None = None) -> Path:
    """Encode ``samples`` float32 [frames, 2] at the format's rate (default: a stereo sine of ``seconds``)
    into ``path`` with FFmpeg (PyAV), the format chosen by its suffix."""
    import av

    container_format, codec, rate = PYAV_FORMATS[path.suffix.lower()]
    samples = sine(seconds, rate) if samples is None else samples
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        stream.bit_rate = 128_000
        frame_size = 960 if "opus" in codec else 1024
        for start in range(0, len(samples), frame_size):
            block = np.ascontiguousarray(samples[start : start + frame_size].T)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def float_wav_with_short_peak_chunk(path: Path, *, seconds: float = 4.0, sample_rate: int = 44100) -> Path:
    """IEEE-float stereo WAV whose PEAK chunk holds one channel's peak instead of two."""
    samples = sine(seconds, sample_rate).astype("<f4")
    data = samples.tobytes()
    fmt = struct.pack("<HHIIHH", 3, 2, sample_rate, sample_rate * 8, 8, 32)
    peak = struct.pack("<II", 1, 0) + struct.pack("<fI", 0.3, 0)  # version, time, ONE (value, position)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"PEAK" + struct.pack("<I", len(peak)) + peak
    chunks += b"data" + struct.pack("<I", len(data)) + data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


def wav_with_zero_sizes(path: Path, *, seconds: float = 8.0, sample_rate: int = 22050) -> Path:
    """A PCM WAV whose RIFF and data sizes are 0, as a crashed or streaming writer leaves it."""
    sf.write(path, sine(seconds, sample_rate, channels=1), sample_rate, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    raw[4:8] = b"\0\0\0\0"
    at = raw.find(b"data")
    raw[at + 4 : at + 8] = b"\0\0\0\0"
    path.write_bytes(bytes(raw))
    return path


def music_like(seconds: float, sample_rate: int, *, seed: int = 0, noise: bool = True) -> np.ndarray:
    """float32 [frames, 2]: gliding tones, a beat and (``noise``) noise, different in each channel.

    Unlike a steady sine, no shift of a few samples looks like the same signal, so it shows
    whether a decoder put every sample at its place. Without ``noise`` the beat is a click train:
    AAC encoders code noise as noise (PNS), which the decoder re-synthesises from a generator
    whose state depends on where decoding started.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tones = sum(np.sin(2 * np.pi * f * t * (1 + 0.05 * np.sin(2 * np.pi * 0.2 * t))) / (k + 2) for k, f in enumerate((110, 330, 620)))
    beat = (np.sin(2 * np.pi * 2.0 * t) > 0.9) * 0.3
    hiss = (lambda: 0.05 * rng.standard_normal(t.size)) if noise else (lambda: 0.0)
    left = 0.3 * tones + beat * (rng.standard_normal(t.size) if noise else np.sin(2 * np.pi * 1500 * t)) + hiss()
    right = np.roll(left, 37) * 0.8 + hiss()
    return np.clip(np.stack([left, right], axis=1), -0.99, 0.99).astype(np.float32)


def write_soundfile(path: Path, samples: np.ndarray, *, sample_rate: int) -> Path:
    """Write float32 [frames, channels] with libsndfile, the format chosen by the suffix, one second
    at a time (libsndfile 1.2.2's Vorbis encoder crashes on one long write)."""
    with sf.SoundFile(path, "w", sample_rate, samples.shape[1]) as handle:
        for start in range(0, len(samples), sample_rate):
            handle.write(samples[start : start + sample_rate])
    return path


def long_track(path: Path, *, minutes: float, sample_rate: int = 44100, channels: int = 1) -> Path:
    """A track of ``minutes`` made of one 30-s music_like block repeated (cheap to make at any length)."""
    block = music_like(30.0, sample_rate)[:, :channels]
    frames = int(minutes * 60 * sample_rate)
    with sf.SoundFile(path, "w", sample_rate, channels) as handle:
        for start in range(0, frames, len(block)):
            handle.write(block[: frames - start])
    return path
