"""Decode any audio file into a mono float32 waveform at the pipeline's sample rate."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from genretag.atomic import atomic_path
from genretag.errors import AudioError

AUDIO_EXTENSIONS: frozenset[str] = frozenset({".wav", ".au", ".snd", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".m4a"})


@dataclass(frozen=True)
class AudioStats:
    duration_s: float
    rms_dbfs: float
    peak: float
    nonfinite_samples: int


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded file: mono samples at ``sample_rate`` and what the file originally was."""

    path: Path
    waveform: np.ndarray
    sample_rate: int
    original_sample_rate: int
    channels: int
    stats: AudioStats

    @property
    def duration_s(self) -> float:
        return len(self.waveform) / self.sample_rate


def file_sha256(path: str | Path, *, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _read_raw(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float32 (frames, channels) and the file's rate; soundfile, then audioread."""
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        return data, int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as soundfile_error:
        first_error = soundfile_error
    try:
        import audioread

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with audioread.audio_open(str(path)) as source:
                rate, channels = int(source.samplerate), int(source.channels)
                pcm = b"".join(source)
        data = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        return data.reshape(-1, channels), rate
    except Exception as fallback_error:  # noqa: BLE001 - audioread raises many unrelated types
        raise AudioError(path, f"cannot decode audio ({first_error}; audioread: {str(fallback_error) or type(fallback_error).__name__})") from fallback_error


def decode(path: str | Path, *, sample_rate: int) -> DecodedAudio:
    """Read ``path`` (wav, au, flac, ogg, mp3, ...), downmix to mono and resample.

    Raises AudioError naming the file when it is missing, undecodable or holds no samples.
    ``stats`` describe the file as decoded, before resampling, so that non-finite samples
    are counted (the returned waveform has them replaced by silence when resampled).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    data, original_rate = _read_raw(path)
    if data.size == 0:
        raise AudioError(path, "no audio samples")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    measured = stats(mono, sample_rate=original_rate)  # before resampling hides bad samples
    if original_rate != sample_rate:
        mono = resample(np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0), orig_rate=original_rate, target_rate=sample_rate)
    return DecodedAudio(
        path=path,
        waveform=np.ascontiguousarray(mono, dtype=np.float32),
        sample_rate=sample_rate,
        original_sample_rate=original_rate,
        channels=int(data.shape[1]),
        stats=measured,
    )


def resample(waveform: np.ndarray, *, orig_rate: int, target_rate: int) -> np.ndarray:
    """Mono float32 samples at ``orig_rate`` Hz -> float32 at ``target_rate`` Hz.

    python-soxr at "HQ" quality: the resampler librosa's ``res_type="soxr_hq"`` calls (same
    samples, without librosa's zero padding to ceil(n * ratio)), and the one the handoff's
    reference client uses, so that both feed a model the same waveform.
    """
    import soxr

    if orig_rate == target_rate:
        return np.asarray(waveform, dtype=np.float32)
    return np.asarray(soxr.resample(np.asarray(waveform, dtype=np.float32), orig_rate, target_rate, quality="HQ"), dtype=np.float32)


def stats(waveform: np.ndarray, *, sample_rate: int) -> AudioStats:
    finite = np.isfinite(waveform)
    clean = waveform[finite]
    rms = float(np.sqrt(np.mean(np.square(clean, dtype=np.float64)))) if clean.size else 0.0
    return AudioStats(
        duration_s=len(waveform) / sample_rate,
        rms_dbfs=float(20.0 * np.log10(max(rms, 1e-10))),
        peak=float(np.abs(clean).max()) if clean.size else 0.0,
        nonfinite_samples=int((~finite).sum()),
    )


def to_pcm16(waveform: np.ndarray) -> np.ndarray:
    """Float samples -> 16-bit PCM; non-finite samples become silence, peaks are clipped."""
    clean = np.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0)
    return np.rint(np.clip(clean, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


def pcm_sha256(pcm: np.ndarray) -> str:
    """Hash of the normalised samples: equal for the same music in different containers."""
    return hashlib.sha256(np.ascontiguousarray(pcm).tobytes()).hexdigest()


def write_wav(path: str | Path, pcm: np.ndarray, *, sample_rate: int) -> None:
    """Write 16-bit mono PCM atomically."""
    with atomic_path(path) as tmp:
        sf.write(tmp, pcm, sample_rate, subtype="PCM_16", format="WAV")


def load_wav(path: str | Path, *, sample_rate: int) -> np.ndarray:
    """Read a normalised pipeline WAV (already mono at ``sample_rate``) as float32."""
    data, rate = sf.read(path, dtype="float32", always_2d=False)
    if rate != sample_rate or data.ndim != 1:
        raise AudioError(path, f"expected mono {sample_rate} Hz, found {data.ndim}-D at {rate} Hz")
    return data
