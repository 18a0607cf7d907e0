"""Numpy references for the non-image front ends: MFCC statistics and musicnn's log-mel patch.

Built on :mod:`genretag.spectrogram`'s mel power (Slaney filters, periodic Hann, centred frames),
no librosa at run time; tests check both against librosa and against the ONNX blocks of
:mod:`genretag.graph`, which take their constants (DCT matrix, sizes) from here.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from genretag.dsp.spectrogram import mel_power, power_to_db

N_MFCC = 20  # librosa.feature.mfcc's default
MFCC_TOP_DB = 80.0  # librosa.feature.mfcc calls power_to_db(S) with its default top_db
MFCC_STATISTICS = 3  # mean, std and delta std per coefficient (:func:`mfcc_stats`)

# musicnn 0.1.0 (Pons & Serra), musicnn/configuration.py and extractor.batch_data
MUSICNN_SAMPLE_RATE = 16000
MUSICNN_CLIP_SAMPLES = 48000  # 3 s
MUSICNN_N_FFT = 512
MUSICNN_HOP = 256
MUSICNN_N_MELS = 96
MUSICNN_FRAMES = 187  # int(3 s * 16000 / 256): the patch length the network takes
MUSICNN_PAD_MODE = "reflect"  # librosa 0.7 (musicnn's pin) padded centred frames by reflection


@lru_cache(maxsize=8)
def dct_ii_ortho(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix, float32 (n_out, n_in): ``scipy.fft.dct(x, type=2, norm="ortho")[:n_out]``.

    Row k: sqrt(2 / n_in) cos(pi k (2 m + 1) / (2 n_in)), row 0 scaled by 1 / sqrt(2).
    Raises ValueError when ``n_out`` exceeds ``n_in``.
    """
    if not 0 < n_out <= n_in:
        raise ValueError(f"cannot keep {n_out} DCT coefficients of {n_in} inputs")
    k = np.arange(n_out)[:, None]
    m = np.arange(n_in)[None, :]
    matrix = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * m + 1) / (2 * n_in))
    matrix[0] /= np.sqrt(2.0)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def mfcc(
    clips: np.ndarray, *, sample_rate: int, n_mfcc: int = N_MFCC, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128
) -> np.ndarray:
    """librosa.feature.mfcc with its defaults, per clip: float32 (n_clips, n_mfcc, frames).

    ``clips``: float (n_clips, samples) at ``sample_rate`` Hz. Mel power -> dB (ref 1.0, floored
    80 dB under each clip's max) -> orthonormal DCT-II over the mel bands.
    """
    power = mel_power(clips, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    db = power_to_db(power, ref_max=False, top_db=MFCC_TOP_DB)
    return np.einsum("km,cmt->ckt", dct_ii_ortho(n_mels, n_mfcc), db).astype(np.float32)


def mfcc_stats(
    clips: np.ndarray, *, sample_rate: int, n_mfcc: int = N_MFCC, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128
) -> np.ndarray:
    """Per-clip MFCC statistics over frames: float32 (n_clips, 3 n_mfcc) = mean, standard deviation, delta standard deviation.

    Mean and (population) standard deviation of each coefficient are the classic MFCC baseline's
    clip vector (Tzanetakis & Cook 2002); the third block is the standard deviation of the
    frame-to-frame difference ``c[t + 1] - c[t]`` (a first-order delta), which adds how fast the
    timbre moves, the role delta MFCCs play in genre baselines. (librosa.feature.delta's 9-frame
    Savitzky-Golay filter is not used: its edge rule has no plain ONNX form.)
    :func:`genretag.graph.mfcc_stats_frontend` computes the same.
    """
    coefficients = mfcc(clips, sample_rate=sample_rate, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    delta = np.diff(coefficients, axis=2)
    return np.concatenate([coefficients.mean(axis=2), coefficients.std(axis=2), delta.std(axis=2)], axis=1).astype(np.float32)


def musicnn_log_mel(clips: np.ndarray) -> np.ndarray:
    """musicnn's input patches: float32 (n_clips, 187, 96), time-major, from 3-s clips at 16 kHz.

    ``clips``: float (n_clips, 48000). librosa.feature.melspectrogram(sr=16000, n_fft=512,
    hop_length=256, n_mels=96) with reflect-padded centred frames, then log10(10000 x + 1) in
    float32 (musicnn's own code does it in float16, which overflows: see
    ``shared/notes/musicnn-facts.md``), first 187 frames. Raises ValueError for another clip length.
    """
    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim != 2 or clips.shape[1] != MUSICNN_CLIP_SAMPLES:
        raise ValueError(f"musicnn takes clips of shape (n, {MUSICNN_CLIP_SAMPLES}), got {clips.shape}")
    power = mel_power(
        clips, sample_rate=MUSICNN_SAMPLE_RATE, n_fft=MUSICNN_N_FFT, hop_length=MUSICNN_HOP, n_mels=MUSICNN_N_MELS,
        pad_mode=MUSICNN_PAD_MODE,
    )
    patch = power[:, :, :MUSICNN_FRAMES].transpose(0, 2, 1)
    return np.log10(np.float32(10000.0) * patch + np.float32(1.0)).astype(np.float32)
