"""Decode any audio file into a mono float32 waveform at the pipeline's sample rate; the file-level facts
(SHA-256, PCM hash) and the pipeline's WAV I/O. Decoding only the windows scoring needs, by seeking, is
:mod:`genretag.audio.seeking`. Which files are audio is decided by name (:data:`AUDIO_EXTENSIONS`); walking
a folder for them is :mod:`genretag.audio.folders`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from genretag.core.atomic import atomic_path
from genretag.core.errors import AudioError

# One list for every reader of audio (tagging, ingest): what soundfile (libsndfile 1.2) and
# PyAV's bundled FFmpeg decode. Matched case-insensitively; anything else is "not audio".
AUDIO_EXTENSIONS: frozenset[str] = frozenset({
    ".wav", ".wave", ".au", ".snd", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".mp2", ".aif", ".aiff", ".aifc",
    ".caf", ".w64", ".m4a", ".m4b", ".mp4", ".aac", ".wma", ".asf", ".webm", ".mka", ".mkv", ".wv", ".ape", ".ac3",
})

# Plausible sample rates of music files. Below 4 kHz nothing above 2 kHz (the Nyquist limit)
# survives, so no genre can be heard, and such a header is almost always corrupt (e.g. 1 Hz,
# which would be resampled into hundreds of millions of samples); 384 kHz is the highest rate
# of studio converters and DXD masters (and of FFmpeg's common rates).
SAMPLE_RATE_BOUNDS_HZ: tuple[int, int] = (4_000, 384_000)


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


def check_rate(path: Path, rate: float) -> int:
    low, high = SAMPLE_RATE_BOUNDS_HZ
    if not low <= rate <= high:
        raise AudioError(path, f"implausible sample rate {rate:.0f} Hz (music files use {low}..{high} Hz; the header is likely corrupt)")
    return int(rate)


def _reason(error: BaseException, path: Path) -> str:
    """A decoder's error as a short reason: first line, without the file name it repeats."""
    if isinstance(error, sf.LibsndfileError):
        text = error.error_string.strip().rstrip(".")
        # libsndfile says this for every format it does not recognise, even for a regular file
        text = text.replace("File does not exist or is not a regular file (possibly a pipe?)", "format not recognised")
    else:
        text = (str(error).strip().splitlines() or [""])[0]
    for name in (f": {str(path)!r}", f": '{path}'", f" '{path}'", str(path)):
        text = text.replace(name, "")
    text = re.sub(r"^\[Errno -?\d+\] ", "", text).strip(" :")
    return text or type(error).__name__


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    """libsndfile: WAV/FLAC/OGG/MP3/AIFF... The rate is checked before any sample is read."""
    with sf.SoundFile(path) as handle:
        rate = check_rate(path, handle.samplerate)
        if handle.seekable():
            # libsndfile 1.2.2 skips an Ogg Opus file's pre-skip (encoder priming, RFC 7845) only after a
            # seek: read from the open, the samples come 312 frames late against FFmpeg and any seek.
            handle.seek(0)
        return handle.read(dtype="float32", always_2d=True), rate


def _read_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """PyAV (its wheels bundle FFmpeg): the first audio stream as float32 (frames, channels).

    FFmpeg also reads what libsndfile refuses (AAC/ALAC in MP4, Opus, WMA, WebM, a WAV with a
    bad PEAK chunk or with RIFF/data sizes of 0 left by a crashed writer).
    """
    import av

    with av.open(str(path), mode="r") as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        rate = check_rate(path, stream.rate or stream.codec_context.sample_rate or 0)
        # Planar float32 at the stream's own rate and layout (a mid-stream change is converted).
        resampler = av.AudioResampler(format="fltp", rate=rate)
        blocks = [
            planes for frame in container.decode(stream)
            for planes in (out.to_ndarray() for out in resampler.resample(frame))
        ]
        blocks += [out.to_ndarray() for out in resampler.resample(None)]
    if not blocks:
        return np.zeros((0, 1), dtype=np.float32), rate
    return np.ascontiguousarray(np.concatenate(blocks, axis=1).T, dtype=np.float32), rate


def _read_raw(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float32 (frames, channels) and the file's rate: soundfile, then FFmpeg.

    soundfile is tried first because it is about 2x faster on WAV/FLAC (bench in the report);
    FFmpeg takes over when it fails or finds no samples (a WAV whose sizes are 0).
    Raises AudioError "not a decodable audio file (soundfile: ...; ffmpeg: ...)".
    """
    try:
        data, rate = _read_soundfile(path)
        if data.size:
            return data, rate
        first_reason = "0 frames"
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as soundfile_error:
        first_reason = _reason(soundfile_error, path)
    try:
        return _read_ffmpeg(path)
    except AudioError:
        raise
    except Exception as ffmpeg_error:  # noqa: BLE001 - PyAV raises FFmpeg's many error types
        raise AudioError(
            path, f"not a decodable audio file (soundfile: {first_reason}; ffmpeg: {_reason(ffmpeg_error, path)})"
        ) from ffmpeg_error


def resample(waveform: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Mono float32 [n] -> float32 [ceil(n * target_sr / orig_sr)] with soxr's HQ filter.

    Exactly what ``librosa.resample(..., res_type="soxr_hq")`` computes (soxr, then the
    length fixed to ceil(n * ratio)), without importing librosa. Non-finite samples must
    be removed first (soxr spreads them over the whole filter length).
    """
    if orig_sr == target_sr:
        return waveform
    import soxr

    wanted = int(np.ceil(len(waveform) * float(target_sr) / orig_sr))
    out = soxr.resample(waveform, orig_sr, target_sr, quality="soxr_hq")
    if len(out) < wanted:
        out = np.pad(out, (0, wanted - len(out)))
    return np.asarray(out[:wanted], dtype=np.float32)


def regular_file(path: str | Path) -> Path:
    """``path`` as a Path; AudioError when it is missing, not a regular file or empty."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "not a regular file" if path.exists() else "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return path


def to_mono(data: np.ndarray) -> np.ndarray:
    """float32 (frames, channels) -> float32 [frames], the channels' mean.

    The channels are summed in order, then divided: numpy's ``mean(axis=1, dtype=float32)`` to the
    bit for up to 7 channels (8 differ by rounding), and 2-20x faster than that reduction along a
    short axis (measured here).
    """
    if data.shape[1] == 1:
        return data[:, 0]
    total = data[:, 0].astype(np.float32, copy=True)
    for channel in range(1, data.shape[1]):
        total += data[:, channel]
    total /= np.float32(data.shape[1])
    return total


def to_finite(mono: np.ndarray) -> np.ndarray:
    """Non-finite samples as silence (soxr would spread them over its whole filter length)."""
    return np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)


def decode(path: str | Path, *, sample_rate: int) -> DecodedAudio:
    """Read ``path`` (any of AUDIO_EXTENSIONS), downmix to mono and resample to ``sample_rate``.

    Raises AudioError naming the file when it is missing, not a regular file, undecodable,
    has an implausible sample rate (SAMPLE_RATE_BOUNDS_HZ) or holds no samples.
    ``stats`` describe the file as decoded, before resampling, so that non-finite samples
    are counted (the returned waveform has them replaced by silence when resampled).
    """
    path = regular_file(path)
    data, original_rate = _read_raw(path)
    if data.size == 0:
        raise AudioError(path, "no audio samples")
    mono = to_mono(data)
    measured = stats(mono, sample_rate=original_rate)  # before resampling hides bad samples
    if original_rate != sample_rate:
        mono = resample(to_finite(mono), orig_sr=original_rate, target_sr=sample_rate)
    return DecodedAudio(
        path=path,
        waveform=np.ascontiguousarray(mono, dtype=np.float32),
        sample_rate=sample_rate,
        original_sample_rate=original_rate,
        channels=int(data.shape[1]),
        stats=measured,
    )


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



def is_silent(window: np.ndarray, *, silence_rms_dbfs: float) -> bool:
    """True for an all-zero window or one whose RMS (``genretag.audio.stats``) is below ``silence_rms_dbfs`` dBFS.

    An all-zero window would become one flat image after "dB against its own max" (issue 12 item 4),
    so it carries no genre and is never scored.
    """
    measured = stats(window, sample_rate=1)  # the rate only sets the duration, unused here
    return measured.peak == 0.0 or measured.rms_dbfs < silence_rms_dbfs

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
