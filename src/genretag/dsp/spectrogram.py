"""Waveform -> mel-spectrogram colour image: the one preprocessing function of genretag.

Training renders its images with this module, and the contract-v2 front end in the ONNX graph
(`genretag.graph`) is held to it by the export parity gate. It imports nothing but numpy and
scipy.fft: no librosa, no TensorFlow, no genretag.

The mel filterbank and STFT reproduce librosa 0.11's defaults (Slaney mel scale and
normalisation, periodic Hann window, centred frames padded with zeros); a test checks it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft

if TYPE_CHECKING:
    from genretag.core.config import Params

# matplotlib's viridis, sampled at 256 levels, as RGB bytes (a test checks it against matplotlib).
_VIRIDIS_HEX = (
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769"
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a"
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85"
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b"
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d"
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e"
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e"
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d"
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88"
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81"
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74"
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863"
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d"
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32"
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a"
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725"
)
COLORMAPS: dict[str, np.ndarray] = {
    "viridis": np.frombuffer(bytes.fromhex("".join(_VIRIDIS_HEX)), dtype=np.uint8).reshape(256, 3),
}


def mel_fmax(*, sample_rate: int, fmax: float | None) -> float:
    """The mel filterbank's upper edge in Hz: ``fmax`` as a float, or the Nyquist frequency
    ``sample_rate / 2`` (``sample_rate`` in Hz) when it is None, as librosa does."""
    return float(fmax) if fmax is not None else sample_rate / 2.0


@dataclass(frozen=True)
class PreprocessingSpec:
    """Everything needed to turn audio into the model's input, stored in every ONNX file."""

    sample_rate: int = 22050
    clip_seconds: float = 3.0
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float = 80.0
    db_reference: str = "max of each clip"
    colormap: str = "viridis"
    image_size: tuple[int, int] = (128, 128)
    orientation: str = "low frequencies at the bottom row"
    scaling: str = "uint8 RGB divided by 255 -> float32 in [0, 1], NHWC"
    mel_scale: str = "slaney, slaney-normalised filters (librosa defaults)"
    window: str = "periodic hann, centred frames, zero padding"

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def upper_frequency(self) -> float:
        return mel_fmax(sample_rate=self.sample_rate, fmax=self.fmax)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessingSpec:
        raw = json.loads(text)
        raw["image_size"] = tuple(raw["image_size"])
        return cls(**raw)


def preprocessing_spec(params: Params) -> PreprocessingSpec:
    """The preprocessing contract of this configuration (travels inside every ONNX model): the audio
    section's rate and clip length, the spectrogram section's STFT, mel and image settings."""
    s = params.spectrogram
    return PreprocessingSpec(
        sample_rate=params.audio.sample_rate,
        clip_seconds=params.audio.clip_seconds,
        n_fft=s.n_fft,
        hop_length=s.hop_length,
        n_mels=s.n_mels,
        fmin=s.fmin,
        fmax=s.fmax,
        top_db=s.top_db,
        colormap=s.colormap,
        image_size=tuple(s.image_size),
    )


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asanyarray(frequencies, dtype=np.float64)
    mels = f / (200.0 / 3)
    log_region = f >= 1000.0
    mels = np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0), mels)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    m = np.asanyarray(mels, dtype=np.float64)
    freqs = m * (200.0 / 3)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), freqs)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-normalised triangular filters, shape (n_mels, 1 + n_fft // 2), float32."""
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_edges)
    ramps = np.subtract.outer(mel_edges, fft_freqs)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_edges[2:] - mel_edges[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", n_fft)``, librosa's), float32 (n_fft,)."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.flags.writeable = False
    return window


def window_starts(n_samples: int, *, clip_samples: int, max_windows: int = 0, evenly_spaced: bool = True) -> np.ndarray:
    """Start offsets of whole, non-overlapping clips; no partial clip at the end.

    ``max_windows`` = 0 keeps them all; otherwise keep that many, evenly spread over the
    track (``evenly_spaced``) or the first ones (the paper's 10 clips of a 30-s track).
    """
    count = n_samples // clip_samples
    starts = np.arange(count, dtype=np.int64) * clip_samples
    if max_windows and count > max_windows:
        if evenly_spaced:
            starts = starts[np.linspace(0, count - 1, max_windows).round().astype(np.int64)]
        else:
            starts = starts[:max_windows]
    return starts


@lru_cache(maxsize=8)
def mel_bands(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, group: int = 8
) -> tuple[tuple[int, int, int, int, np.ndarray], ...]:
    """:func:`mel_filterbank` cut into groups of ``group`` consecutive filters, each with the FFT-bin
    range its filters cover: ``(first_mel, stop_mel, first_bin, stop_bin, weights)``, weights float32
    (stop_bin - first_bin, stop_mel - first_mel). A Slaney filter is non-zero on a narrow band, so
    the groups hold ~7 % of the dense matrix (128 mels, n_fft 2048) and skip only exact zeros."""
    filters = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    nonzero = filters != 0
    bands = []
    for first in range(0, n_mels, group):
        stop = min(first + group, n_mels)
        used = np.flatnonzero(nonzero[first:stop].any(axis=0))
        lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 0)
        weights = np.ascontiguousarray(filters[first:stop, lo:hi].T)
        weights.flags.writeable = False
        bands.append((first, stop, lo, hi, weights))
    return tuple(bands)


def mel_power(
    clips: np.ndarray,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    pad_mode: str = "constant",
) -> np.ndarray:
    """Slaney mel power spectrogram of a batch of clips, as librosa.feature.melspectrogram computes it.

    ``clips``: float array (n_clips, samples), converted to float32. Centred frames (``pad_mode``
    "constant": zeros, librosa >= 0.10; "reflect": librosa < 0.10), periodic Hann, |rfft|^2 in
    float32 (``scipy.fft``, the whole batch in one call, one thread: the callers run one process
    per core), ``fmax`` None = Nyquist, the filterbank applied band by band (:func:`mel_bands`).
    Returns float32 (n_clips, n_mels, 1 + samples // hop_length), a transposed view of a
    (n_clips, frames, n_mels) array. Raises ValueError for a non-2-D ``clips``.
    """
    clips = np.asarray(clips, dtype=np.float32)
    if clips.ndim != 2:
        raise ValueError(f"clips must be 2-D (n_clips, samples), got shape {clips.shape}")
    pad = n_fft // 2
    padded = np.pad(clips, ((0, 0), (pad, pad)), mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]
    spectrum = scipy.fft.rfft(frames * hann_window(n_fft), axis=-1, overwrite_x=True, workers=1)
    power = np.abs(spectrum)
    np.square(power, out=power)
    mel = np.empty((*power.shape[:2], n_mels), dtype=np.float32)
    upper = mel_fmax(sample_rate=sample_rate, fmax=fmax)
    for first, stop, lo, hi, weights in mel_bands(sample_rate, n_fft, n_mels, fmin, upper):
        np.matmul(power[..., lo:hi], weights, out=mel[..., first:stop])
    return mel.transpose(0, 2, 1)


def power_to_db(power: np.ndarray, *, ref_max: bool, top_db: float | None) -> np.ndarray:
    """librosa.power_to_db per clip: 10 log10(max(power, 1e-10)) against 1.0 or (``ref_max``) each
    clip's maximum, floored at that clip's max dB minus ``top_db`` (None: no floor).

    ``power``: float32 (n_clips, ...). Returns float32 of the same shape.
    """
    db = 10.0 * np.log10(np.maximum(power, np.float32(1e-10)))
    axes = tuple(range(1, db.ndim))
    if ref_max:
        db -= db.max(axis=axes, keepdims=True)
    if top_db is not None:
        db = np.maximum(db, db.max(axis=axes, keepdims=True) - np.float32(top_db))
    return db.astype(np.float32)


def mel_db(clips: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Mel power spectrogram in dB against each clip's own maximum, floored at -top_db.

    ``clips``: float array (n_clips, samples). Returns float32 (n_clips, n_mels, frames) in [-top_db, 0].
    """
    power = mel_power(
        clips, sample_rate=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length, n_mels=spec.n_mels,
        fmin=spec.fmin, fmax=spec.upper_frequency,
    )
    return power_to_db(power, ref_max=True, top_db=spec.top_db)


@lru_cache(maxsize=16)
def bilinear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's BILINEAR resampling along one axis as a matrix: float64 (out_size, in_size).

    ``out = matrix @ x`` summed in float64 and stored as float32 is what Pillow 13 computes for a
    mode-"F" image (``libImaging/Resample.c``, ``precompute_coeffs``): the triangle filter of
    support 1 is widened by the downsampling ratio ``in_size / out_size`` when that is above 1,
    centred at ``(i + 0.5) * in_size / out_size``, cut to the input, normalised to sum 1. The
    identity when the sizes are equal (Pillow skips that pass). Raises ValueError for sizes < 1.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    if in_size == out_size:
        np.fill_diagonal(matrix, 1.0)
    else:
        scale = in_size / out_size
        filterscale = max(scale, 1.0)
        support = filterscale  # bilinear support 1.0, widened
        inverse = 1.0 / filterscale  # Pillow multiplies by the inverse: dividing differs in the last bit
        for row in range(out_size):
            centre = (row + 0.5) * scale
            first = max(int(centre - support + 0.5), 0)
            last = min(int(centre + support + 0.5), in_size)
            taps = np.arange(first, last)
            weights = np.maximum(0.0, 1.0 - np.abs((taps - centre + 0.5) * inverse))
            total = weights.sum()
            matrix[row, first:last] = weights / total if total != 0.0 else weights
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=16)
def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero entries of :func:`bilinear_resize_matrix` per output, in input order:
    int64 columns and float64 weights, both (out_size, most taps), padded with weight 0."""
    matrix = bilinear_resize_matrix(in_size, out_size)
    width = int((matrix != 0).sum(axis=1).max())
    columns = np.zeros((out_size, width), dtype=np.int64)
    weights = np.zeros((out_size, width), dtype=np.float64)
    for row, line in enumerate(matrix):
        nonzero = np.flatnonzero(line)
        columns[row, : len(nonzero)], weights[row, : len(nonzero)] = nonzero, line[nonzero]
    return columns, weights


def _resample_last_axis(x: np.ndarray, out_size: int) -> np.ndarray:
    """One Pillow pass along the last axis: float64 sum tap by tap in Pillow's order, stored as float32."""
    columns, weights = _taps(x.shape[-1], out_size)
    total = x[..., columns[:, 0]].astype(np.float64) * weights[:, 0]
    for tap in range(1, columns.shape[1]):
        total += x[..., columns[:, tap]] * weights[:, tap]
    return total.astype(np.float32)


def vertical_pass_first(*, in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Whether Pillow 13 resizes rows (vertical pass) before columns: when both passes run and that
    keeps the intermediate image smaller (out_h x in_w < in_h x out_w; ties go horizontal first).
    Measured against Pillow on every combination of up- and downsampling (tests/code/test_graph.py)."""
    (in_h, in_w), (out_h, out_w) = in_size, out_size
    return in_h != out_h and in_w != out_w and out_h * in_w < in_h * out_w


def resize_unit(unit: np.ndarray, *, image_size: tuple[int, int]) -> np.ndarray:
    """Flip dB-in-[0, 1] matrices vertically and resize them exactly as Pillow 13's BILINEAR does.

    ``unit``: float32 (n, n_mels, frames), low frequencies first. Returns float32
    (n, height, width), low frequencies at the bottom row. Each pass (skipped when that size does
    not change) sums in float64 in Pillow's order and stores float32, in Pillow's pass order
    (:func:`vertical_pass_first`).
    """
    height, width = image_size
    image = np.ascontiguousarray(unit[:, ::-1, :])
    passes = ["horizontal", "vertical"]
    if vertical_pass_first(in_size=image.shape[1:], out_size=(height, width)):
        passes.reverse()
    for direction in passes:
        if direction == "horizontal" and image.shape[2] != width:
            image = _resample_last_axis(image, width)
        elif direction == "vertical" and image.shape[1] != height:
            image = _resample_last_axis(image.transpose(0, 2, 1), height).transpose(0, 2, 1)
    return np.ascontiguousarray(image)


def db_to_levels(db: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """dB matrices float32 (n, n_mels, frames) -> colour-map indices uint8 (n, height, width).

    The whole batch at once: scale to [0, 1], flip, Pillow-exact bilinear resize
    (:func:`resize_unit`), round to 256 levels. ``COLORMAPS[spec.colormap][levels]`` is the image.
    """
    unit = (np.asarray(db, dtype=np.float32) + np.float32(spec.top_db)) / np.float32(spec.top_db)
    resized = resize_unit(unit, image_size=spec.image_size)
    return np.clip(np.rint(resized * np.float32(255.0)), 0, 255).astype(np.uint8)


def levels_to_image(levels: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Colour-map indices uint8 (n, height, width) -> uint8 RGB images (n, height, width, 3)."""
    return np.take(COLORMAPS[spec.colormap], levels, axis=0)  # a gather, ~5x faster than fancy indexing


def db_to_image(db: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """Colour-map dB matrices float32 (n, n_mels, frames) into uint8 RGB images (n, height, width, 3)."""
    return levels_to_image(db_to_levels(db, spec), spec)


def clips_to_images(clips: np.ndarray, spec: PreprocessingSpec) -> np.ndarray:
    """float (n_clips, samples) at ``spec.sample_rate`` -> uint8 RGB images (n_clips, height, width, 3)."""
    return db_to_image(mel_db(clips, spec), spec)


def waveform_to_images(
    waveform: np.ndarray,
    spec: PreprocessingSpec,
    *,
    max_windows: int = 0,
    evenly_spaced: bool = True,
) -> np.ndarray:
    """Cut a mono waveform at ``spec.sample_rate`` into clips and render each as an image.

    Returns uint8 (n_clips, height, width, 3); n_clips is 0 for audio shorter than one clip.
    Raises ValueError for a waveform that is not 1-D.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be mono (1-D), got shape {waveform.shape}")
    starts = window_starts(
        len(waveform), clip_samples=spec.clip_samples, max_windows=max_windows, evenly_spaced=evenly_spaced
    )
    if len(starts) == 0:
        return np.empty((0, *spec.image_size, 3), dtype=np.uint8)
    return clips_to_images(np.stack([waveform[s : s + spec.clip_samples] for s in starts]), spec)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 RGB images -> the model's float32 input in [0, 1]."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)
