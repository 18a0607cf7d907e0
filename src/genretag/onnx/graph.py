"""ONNX building blocks of contract v2: the DSP front ends that run inside every exported graph.

Each front end is a pure function returning an ``onnx.ModelProto`` (opset :data:`OPSET`, IR
version :data:`IR_VERSION`) with one input ``waveform`` float32 ``[N, S]`` (``N`` dynamic) and one
output; :func:`compose` glues it in front of a network. Every constant (mel filterbank, window,
resize matrices, colour table, DCT) comes from the numpy reference it must match, never typed
again: :mod:`genretag.spectrogram` for the paper's images, :mod:`genretag.features` for MFCC
statistics and musicnn's log-mel. All ops run on onnxruntime's CPU provider (tests check it).

Public names (stable; the model families call them):

- :func:`paper_image_frontend` ``(spec)`` -> output ``mel_image`` float32 ``[N, H, W, 3]`` in
  [0, 1]: exactly :func:`genretag.spectrogram.waveform_to_images` followed by ``to_model_input``.
- :func:`log_mel_frontend` ``(*, sample_rate, clip_samples, n_fft, hop_length, n_mels, ...)`` ->
  output ``log_mel`` float32 ``[N, frames, n_mels]`` (frames = ``1 + S // hop_length``).
- :func:`mfcc_stats_frontend` ``(*, sample_rate, clip_samples, n_mfcc, ...)`` -> output
  ``features`` float32 ``[N, 3 * n_mfcc]``: per-clip mean, standard deviation and standard
  deviation of the frame-to-frame difference of the MFCCs (:func:`genretag.features.mfcc_stats`).
- :func:`musicnn_log_mel_frontend` ``()`` -> output ``log_mel`` float32 ``[N, 187, 96]`` at
  16 kHz (:func:`genretag.features.musicnn_log_mel`).
- :func:`compose` ``(frontend, network, *, network_input=None)`` -> the contract-v2 graph
  ``waveform`` -> ``probabilities``, ``embedding``.

Every front end computes its mel power with one block, :func:`_mel_power`: frames gathered by whole
hops, a two-step real DFT as MatMuls (only the FFT bins the mel filters weight), |X|^2, the mel
filterbank as one MatMul. It replaced ONNX's ``STFT`` op, which onnxruntime 1.31 ran at ~1.1 s per
64 clips (profiled: 77 % of the paper front end; numpy's whole image pipeline took 0.15 s). Peak
RSS of the paper front end at batch 256 (128x128): 1.6 GB, as with the ``STFT`` op.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from genretag.dsp import features
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME
from genretag.core.errors import ExportError
from genretag.dsp.spectrogram import (
    COLORMAPS,
    PreprocessingSpec,
    hann_window,
    bilinear_resize_matrix,
    mel_filterbank,
    mel_fmax,
    vertical_pass_first,
)

OPSET = 17  # what the families export at (tf2onnx 1.17 converts up to 18); opset 17 keeps Reduce* axes as attributes
IR_VERSION = 8  # what tf2onnx writes for opset 17; onnxruntime 1.31 reads IR <= 13
BATCH_DIM = "N"
IMAGE_NAME = "mel_image"
LOG_MEL_NAME = "log_mel"
FEATURES_NAME = "features"
AMIN = 1e-10  # librosa.power_to_db's floor on power before the log


class _Builder:
    """Nodes and constants of one graph, named deterministically (``<op>_<k>``) for stable bytes."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, array: np.ndarray | float | int) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attributes: Any) -> str:
        self._count += 1
        output = output or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=f"{op_type}_{self._count}", **attributes))
        return output

    def model(self, *, name: str, clip_samples: int, output: str, output_shape: list[int | str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, clip_samples])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="genretag")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def _fft_split(n_fft: int) -> tuple[int, int]:
    """``n_fft`` = P * Q for :func:`_mel_power`'s two-step DFT: P the power of two dividing
    ``n_fft`` nearest sqrt(2 n_fft) (2048 -> 64 x 32, 512 -> 32 x 16), which balances the MatMul
    work of step 1 (real, ~2 n_fft P per frame) and step 2 (complex, ~4 n_fft Q); odd: P = 1."""
    twos = n_fft & -n_fft  # largest power of two dividing n_fft
    p = 1
    while p * 2 <= twos and (p * 2) ** 2 <= 2 * n_fft:
        p *= 2
    return p, n_fft // p


def _frames(b: _Builder, *, clip_samples: int, n_fft: int, hop_length: int, frames: int, pad_mode: str) -> str:
    """``waveform`` [N, clip_samples] -> the first ``frames`` centred frames [N + 1, frames, n_fft] at
    ``hop_length``, padded by ``n_fft // 2`` each side (``pad_mode``), plus one spare clip of zeros
    last (see :func:`_mel_power`). When the hop divides ``n_fft``, the padded signal is cut into
    hops and a Gather picks whole hops (a Gather of samples copies one by one: ~9x slower on
    onnxruntime 1.31, profiled); else a Gather of samples."""
    pad = n_fft // 2
    signal = INPUT_NAME
    if pad_mode != "constant":  # the spare clip by the time Pad where it pads with zeros
        signal = b.op("Concat", INPUT_NAME, b.const("spare_clip", np.zeros((1, clip_samples), np.float32)), axis=0)
    spare = 1 if pad_mode == "constant" else 0
    if n_fft % hop_length:
        padded = b.op("Pad", signal, b.const("pads", np.array([0, pad, spare, pad], np.int64)), mode=pad_mode)
        starts = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
        return b.op("Gather", padded, b.const("frame_samples", starts.astype(np.int64)), axis=1)
    per_frame = n_fft // hop_length
    blocks = frames - 1 + per_frame
    right = blocks * hop_length - clip_samples - pad  # at most pad: the last frame ends there
    padded = b.op("Pad", signal, b.const("pads", np.array([0, pad, spare, max(right, 0)], np.int64)), mode=pad_mode)
    if right < 0:
        padded = b.op(
            "Slice", padded, b.const("blocks_start", np.array([0], np.int64)), b.const("blocks_end", np.array([blocks * hop_length], np.int64)),
            b.const("blocks_axis", np.array([1], np.int64)),
        )
    by_block = b.op("Reshape", padded, b.const("block_shape", np.array([-1, blocks, hop_length], np.int64)))
    which = np.arange(frames)[:, None] + np.arange(per_frame)[None, :]
    picked = b.op("Gather", by_block, b.const("frame_blocks", which.astype(np.int64)), axis=1)  # [N + 1, frames, per_frame, hop]
    return b.op("Reshape", picked, b.const("frame_shape", np.array([-1, frames, n_fft], np.int64)))


def _kept_frames(*, clip_samples: int, hop_length: int, frames: int | None) -> int:
    """Frames a front end keeps: the first ``frames``, at most all ``1 + clip_samples // hop_length``
    centred frames (None: all)."""
    all_frames = 1 + clip_samples // hop_length
    return all_frames if frames is None else min(frames, all_frames)


def _mel_power(
    b: _Builder, *, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float, fmax: float, pad_mode: str,
    clip_samples: int, frames: int | None = None,
) -> str:
    """``waveform`` -> mel power float32 [N, frames, n_mels]: centred frames (``pad_mode`` "constant"
    = zeros, librosa >= 0.10; "reflect", librosa < 0.10), periodic Hann, one-sided |STFT|^2, Slaney mel
    (the numpy reference is :func:`genretag.spectrogram.mel_power`). ``frames`` keeps the first frames
    (None: all ``1 + clip_samples // hop_length``).

    The one STFT block of every front end. Not ONNX's ``STFT`` op: onnxruntime 1.31 runs it ~6x
    slower than numpy's whole image pipeline (profiled: 77 % of the front end). Instead a two-step
    DFT as MatMuls (Cooley-Tukey, ``n = Q a + b``, :func:`_fft_split`): step 1, one matrix for all
    frames, the real DFT over ``a`` of the windowed frame seen as [P, Q], only its P/2 + 1
    non-redundant outputs ``c`` (real input: U[P - c] = conj U[c]); step 2, one matrix per ``c``,
    the complex DFT over ``b`` with the twiddle e^(-2 pi i b k / n_fft) folded in, only for the FFT
    bins ``k`` (k mod P = c or P - c) that some mel filter weights; then |X|^2 and the filterbank
    as one MatMul over those slots. Both transposes move whole rows, never single values.
    One zero clip rides along and is cut off at the end: onnxruntime 1.31's MatMul fails to
    broadcast over an empty batch.
    """
    if pad_mode not in ("constant", "reflect"):
        raise ValueError(f"pad_mode must be 'constant' or 'reflect', got {pad_mode!r}")
    kept = _kept_frames(clip_samples=clip_samples, hop_length=hop_length, frames=frames)
    framed = _frames(b, clip_samples=clip_samples, n_fft=n_fft, hop_length=hop_length, frames=kept, pad_mode=pad_mode)
    p, q = _fft_split(n_fft)
    half = p // 2 + 1
    windowed = b.op("Mul", framed, b.const("window", hann_window(n_fft)))
    grid = b.op("Reshape", windowed, b.const("frame_grid", np.array([-1, kept, p, q], np.int64)))  # [N + 1, T, P, Q]: n = Q a + b
    angle = 2.0 * np.pi * np.outer(np.arange(half), np.arange(p)) / p  # (c, a)
    step1 = np.stack([np.cos(angle), -np.sin(angle)], axis=1).reshape(2 * half, p)  # rows (c, re/im)
    inner = b.op("MatMul", b.const("dft_step1", step1.astype(np.float32)), grid)  # [N + 1, T, 2 half, Q]: the largest tensor
    rows = b.op("Reshape", inner, b.const("step1_rows", np.array([-1, half, 2 * q], np.int64)))
    by_c = b.op("Transpose", rows, perm=[1, 0, 2])  # [half, (N + 1) T, 2 Q]: (re, im) x b per c

    mel_weights = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)  # (n_mels, 1 + n_fft // 2)
    slots: list[list[tuple[int, float]]] = [[] for _ in range(half)]  # per c: (bin, sign of U's imaginary part)
    for k in np.flatnonzero((mel_weights != 0).any(axis=0)).tolist():
        r = k % p
        slots[min(r, p - r)].append((k, 1.0 if r <= p // 2 else -1.0))
    width = max(1, max(len(s) for s in slots))
    step2 = np.zeros((2, half, 2 * q, width))  # real, imaginary part: per c, (re, im) x b -> slot
    filters = np.zeros((half * width, n_mels), np.float32)  # slot -> mel
    for c, entries in enumerate(slots):
        for j, (k, sign) in enumerate(entries):
            theta = 2.0 * np.pi * np.arange(q) * k / n_fft
            cos, sin = np.cos(theta), np.sin(theta)
            step2[0, c, :q, j], step2[0, c, q:, j] = cos, sign * sin  # Re X = sum Ur cos + s Ui sin
            step2[1, c, :q, j], step2[1, c, q:, j] = -sin, sign * cos  # Im X = sum s Ui cos - Ur sin
            filters[c * width + j] = mel_weights[:, k]
    real, imag = (b.op("MatMul", by_c, b.const(f"dft_step2_{part}", step2[i].astype(np.float32))) for i, part in enumerate(("re", "im")))
    summed = b.op("Add", b.op("Mul", real, real), b.op("Mul", imag, imag))  # |X|^2 [half, (N + 1) T, width]
    power = b.op("Transpose", summed, perm=[1, 0, 2])  # [(N + 1) T, half, width]
    flat = b.op("Reshape", power, b.const("power_rows", np.array([-1, half * width], np.int64)))
    mel = b.op("Reshape", b.op("MatMul", flat, b.const("mel_filters", filters)), b.const("mel_shape", np.array([-1, kept, n_mels], np.int64)))
    return b.op(
        "Slice", mel, b.const("clips_start", np.array([0], np.int64)), b.const("clips_end", np.array([-1], np.int64)),
        b.const("clip_axis", np.array([0], np.int64)),
    )  # [N, T, n_mels]: the spare clip cut off


def _power_to_db(b: _Builder, mel: str, *, ref_max: bool, top_db: float | None) -> str:
    """librosa.power_to_db: 10 log10(max(x, 1e-10)), minus the clip's max dB when ``ref_max``
    (else ref 1.0), floored at the clip's max minus ``top_db`` (None: no floor). [N, T, M] -> same."""
    log = b.op("Log", b.op("Max", mel, b.const("amin", np.float32(AMIN))))
    db = b.op("Mul", log, b.const("db_per_neper", np.float32(10.0 / math.log(10.0))))
    if not ref_max and top_db is None:
        return db
    peak = b.op("ReduceMax", db, axes=[1, 2], keepdims=1)
    if ref_max:
        db = b.op("Sub", db, peak)
        peak = b.const("zero_db", np.float32(0.0))
    if top_db is None:
        return db
    floor = b.op("Sub", peak, b.const("top_db", np.float32(top_db)))
    return b.op("Max", db, floor)


def _resample_last_axis(b: _Builder, x: str, matrix: np.ndarray, *, rows: int) -> str:
    """[N, rows, B] -> [N, rows, C] = x @ matrix.T in float64, stored float32. Written as a 2-D
    MatMul between Reshapes: onnxruntime 1.31 fails to broadcast a 3-D MatMul (or its fused
    Transpose) over an empty batch."""
    out_size, in_size = matrix.shape
    flat = b.op("Reshape", x, b.const(f"rows_{rows}x{in_size}", np.array([-1, in_size], np.int64)))
    product = b.op("MatMul", b.op("Cast", flat, to=TensorProto.DOUBLE), b.const(f"resize_{in_size}_to_{out_size}_t", np.ascontiguousarray(matrix.T)))
    return b.op("Reshape", b.op("Cast", product, to=TensorProto.FLOAT), b.const(f"shape_{rows}x{out_size}", np.array([-1, rows, out_size], np.int64)))


def log_mel_frontend(
    *,
    sample_rate: int,
    clip_samples: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    pad_mode: str = "constant",
    scale: str = "db",
    ref_max: bool = False,
    top_db: float | None = 80.0,
    frames: int | None = None,
) -> onnx.ModelProto:
    """``waveform`` float32 [N, clip_samples] -> ``log_mel`` float32 [N, frames, n_mels].

    ``scale`` "db": :func:`librosa.power_to_db` with ref 1.0 (``ref_max``: each clip's max) and
    ``top_db`` (None: no floor); "log10_1p10000": log10(10000 x + 1) (musicnn, in float32).
    ``frames`` keeps the first frames only (None: all ``1 + clip_samples // hop_length``).
    ``fmax`` None is the Nyquist frequency. Raises ValueError for an unknown ``scale`` or ``pad_mode``.
    """
    b = _Builder()
    mel = _mel_power(
        b, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin,
        fmax=mel_fmax(sample_rate=sample_rate, fmax=fmax), pad_mode=pad_mode, clip_samples=clip_samples, frames=frames,
    )
    if scale == "db":
        b.op("Identity", _power_to_db(b, mel, ref_max=ref_max, top_db=top_db), output=LOG_MEL_NAME)
    elif scale == "log10_1p10000":
        scaled = b.op("Add", b.op("Mul", mel, b.const("gain", np.float32(10000.0))), b.const("one", np.float32(1.0)))
        b.op("Mul", b.op("Log", scaled), b.const("log10_per_neper", np.float32(1.0 / math.log(10.0))), output=LOG_MEL_NAME)
    else:
        raise ValueError(f"scale must be 'db' or 'log10_1p10000', got {scale!r}")
    kept = _kept_frames(clip_samples=clip_samples, hop_length=hop_length, frames=frames)
    return b.model(name="log_mel", clip_samples=clip_samples, output=LOG_MEL_NAME, output_shape=[BATCH_DIM, kept, n_mels])


def paper_image_frontend(spec: PreprocessingSpec) -> onnx.ModelProto:
    """``waveform`` float32 [N, spec.clip_samples] -> ``mel_image`` float32 [N, H, W, 3] in [0, 1].

    The chain of :func:`genretag.spectrogram.waveform_to_images` + ``to_model_input``: mel dB
    against each clip's max floored at -top_db, scaled to [0, 1], flipped (low frequencies at the
    bottom), Pillow's bilinear resize as constant matrices (each pass only when that size changes,
    in Pillow's pass order, summed in float64), Round (half to even, as ``np.rint``) to 256 levels,
    colour table / 255. Measured: images within 2/255 of numpy (float32 FFT rounding moves a
    level now and then); without the Round most values would differ.
    """
    if spec.colormap not in COLORMAPS:
        raise ExportError(f"colormap {spec.colormap!r} is not one of {sorted(COLORMAPS)}")
    height, width = spec.image_size
    b = _Builder()
    mel = _mel_power(
        b, sample_rate=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length, n_mels=spec.n_mels,
        fmin=spec.fmin, fmax=spec.upper_frequency, pad_mode="constant", clip_samples=spec.clip_samples,
    )
    db = _power_to_db(b, mel, ref_max=True, top_db=spec.top_db)  # [N, T, M]
    top_db = b.const("top_db_scale", np.float32(spec.top_db))
    unit = b.op("Div", b.op("Add", db, top_db), top_db)
    by_mel = b.op("Transpose", unit, perm=[0, 2, 1])  # [N, M, T]
    flipped = b.op(
        "Slice", by_mel, b.const("flip_start", np.array([-1], np.int64)), b.const("flip_end", np.array([-(2**62)], np.int64)),
        b.const("flip_axis", np.array([1], np.int64)), b.const("flip_step", np.array([-1], np.int64)),
    )
    frames = 1 + spec.clip_samples // spec.hop_length
    passes = ["horizontal", "vertical"]
    if vertical_pass_first(in_size=(spec.n_mels, frames), out_size=(height, width)):
        passes.reverse()
    resized, rows, columns = flipped, spec.n_mels, frames  # [N, M, T] -> [N, H, W], float64 sums as in Pillow
    for direction in passes:
        if direction == "horizontal" and columns != width:
            resized, columns = _resample_last_axis(b, resized, bilinear_resize_matrix(columns, width), rows=rows), width
        elif direction == "vertical" and rows != height:
            by_column = b.op("Transpose", resized, perm=[0, 2, 1])
            resampled = _resample_last_axis(b, by_column, bilinear_resize_matrix(rows, height), rows=columns)
            resized, rows = b.op("Transpose", resampled, perm=[0, 2, 1]), height
    levels = b.op("Round", b.op("Mul", resized, b.const("levels", np.float32(255.0))))
    index = b.op("Cast", b.op("Clip", levels, b.const("level_min", np.float32(0.0)), b.const("level_max", np.float32(255.0))), to=TensorProto.INT64)
    table = COLORMAPS[spec.colormap].astype(np.float32) / np.float32(255.0)
    b.op("Gather", b.const("colour_table", table), index, axis=0, output=IMAGE_NAME)
    return b.model(name="paper_image", clip_samples=spec.clip_samples, output=IMAGE_NAME, output_shape=[BATCH_DIM, height, width, 3])


def mfcc_stats_frontend(
    *, sample_rate: int, clip_samples: int, n_mfcc: int = features.N_MFCC, n_fft: int = 2048, hop_length: int = 512, n_mels: int = 128
) -> onnx.ModelProto:
    """``waveform`` [N, clip_samples] -> ``features`` float32 [N, 3 * n_mfcc]: MFCC mean, std and delta std over frames.

    librosa.feature.mfcc's defaults (power_to_db ref 1.0, top_db 80, DCT-II ortho on the mel
    axis); the numpy reference is :func:`genretag.features.mfcc_stats`.
    """
    b = _Builder()
    mel = _mel_power(
        b, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=0.0,
        fmax=sample_rate / 2.0, pad_mode="constant", clip_samples=clip_samples,
    )
    db = _power_to_db(b, mel, ref_max=False, top_db=features.MFCC_TOP_DB)
    mfcc = b.op("MatMul", db, b.const("dct_t", np.ascontiguousarray(features.dct_ii_ortho(n_mels, n_mfcc).T)))  # [N, T, K]
    frame_axis = b.const("frame_axis", np.array([1], np.int64))
    later = b.op("Slice", mfcc, b.const("delta_later_start", np.array([1], np.int64)), b.const("delta_later_end", np.array([2**62], np.int64)), frame_axis)
    earlier = b.op("Slice", mfcc, b.const("delta_earlier_start", np.array([0], np.int64)), b.const("delta_earlier_end", np.array([-1], np.int64)), frame_axis)
    mean, std = _mean_and_std_over_frames(b, mfcc, frame_axis=frame_axis)
    _, delta_std = _mean_and_std_over_frames(b, b.op("Sub", later, earlier), frame_axis=frame_axis)
    b.op("Concat", mean, std, delta_std, axis=1, output=FEATURES_NAME)
    return b.model(name="mfcc_stats", clip_samples=clip_samples, output=FEATURES_NAME,
                   output_shape=[BATCH_DIM, features.MFCC_STATISTICS * n_mfcc])


def _mean_and_std_over_frames(b: _Builder, x: str, *, frame_axis: str) -> tuple[str, str]:
    """[N, T, K] -> (mean, population standard deviation) over T, each [N, K]; ``frame_axis``: the constant [1]."""
    mean = b.op("ReduceMean", x, axes=[1], keepdims=1)
    centred = b.op("Sub", x, mean)
    std = b.op("Sqrt", b.op("ReduceMean", b.op("Mul", centred, centred), axes=[1], keepdims=0))
    return b.op("Squeeze", mean, frame_axis), std


def musicnn_log_mel_frontend() -> onnx.ModelProto:
    """``waveform`` [N, 48000] at 16 kHz -> ``log_mel`` [N, 187, 96]: musicnn's input patch
    (:func:`genretag.features.musicnn_log_mel` is the numpy reference and gives the sources)."""
    return log_mel_frontend(
        sample_rate=features.MUSICNN_SAMPLE_RATE, clip_samples=features.MUSICNN_CLIP_SAMPLES, n_fft=features.MUSICNN_N_FFT,
        hop_length=features.MUSICNN_HOP, n_mels=features.MUSICNN_N_MELS, pad_mode=features.MUSICNN_PAD_MODE,
        scale="log10_1p10000", top_db=None, frames=features.MUSICNN_FRAMES,
    )


def compose(frontend: onnx.ModelProto, network: onnx.ModelProto, *, network_input: str | None = None) -> onnx.ModelProto:
    """Front end + network -> the contract-v2 graph: ``waveform`` [N, S] -> ``probabilities``, ``embedding``.

    ``network`` must have one (non-initializer) input, fed by the front end's single output, and
    outputs named ``probabilities`` and ``embedding`` (other outputs are dropped). Node, edge and
    initializer names get the prefixes ``frontend/`` and ``network/``; the batch dimension of
    every graph input/output is ``N``. Both must use opset :data:`OPSET` of the default domain.
    Raises :class:`~genretag.errors.ExportError` when they cannot be joined.
    """
    initializers = {init.name for init in network.graph.initializer}
    inputs = [value.name for value in network.graph.input if value.name not in initializers]
    wanted = network_input or (inputs[0] if len(inputs) == 1 else None)
    if wanted is None or wanted not in inputs:
        raise ExportError(f"network has inputs {inputs}; cannot tell which one the front end feeds")
    outputs = {value.name for value in network.graph.output}
    if not {OUTPUT_NAME, EMBEDDING_NAME} <= outputs:
        raise ExportError(f"network outputs {sorted(outputs)} lack {OUTPUT_NAME!r} and {EMBEDDING_NAME!r}")
    versions = [{o.domain or "": o.version for o in m.opset_import}.get("", 0) for m in (frontend, network)]
    if versions[0] != versions[1]:
        raise ExportError(f"front end uses opset {versions[0]} but the network opset {versions[1]}; export with opset {OPSET}")
    front = onnx.compose.add_prefix(frontend, "frontend/")
    net = onnx.compose.add_prefix(network, "network/")
    front.ir_version = net.ir_version = max(frontend.ir_version, network.ir_version)
    merged = onnx.compose.merge_models(
        front, net, io_map=[(front.graph.output[0].name, f"network/{wanted}")],
        outputs=[f"network/{OUTPUT_NAME}", f"network/{EMBEDDING_NAME}"], producer_name="genretag",
    )
    for old, new in ((f"frontend/{INPUT_NAME}", INPUT_NAME), (f"network/{OUTPUT_NAME}", OUTPUT_NAME), (f"network/{EMBEDDING_NAME}", EMBEDDING_NAME)):
        rename_tensor(merged.graph, old, new)
    for value in (*merged.graph.input, *merged.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH_DIM
    merged.graph.name = f"{frontend.graph.name}+{network.graph.name}"
    opsets = {o.domain: o.version for o in merged.opset_import}  # merge_models lists a shared domain twice
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items()))
    onnx.checker.check_model(merged)
    return merged


def rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere in ``graph`` (node edges, inputs, outputs, value infos)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
