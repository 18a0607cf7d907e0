"""int8 (any family): the exported float32 graph's network nodes (the ``network/`` part that
:func:`genretag.onnx.graph.compose` names) are statically quantised with
``onnxruntime.quantization.quantize_static``, calibrated on training clips fed as waveforms; the front end
(STFT, mel, dB, image), the final Softmax and the temperature scaling (``calibration/`` nodes) stay float32.
The result is its own candidate with its own version (``<float32 version>-int8``, metadata
``genretag.quantization`` int8, ``genretag.derived_from`` the float32 version); the registry gate decides
whether it serves.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from genretag.core.atomic import atomic_open
from genretag.core.config import INT8_SUFFIX
from genretag.core.errors import ExportError
from genretag.evaluation.open_set import track_embeddings
from genretag.onnx.contract import INPUT_NAME, INT8, ModelContract, OpenSet, read_contract, require_v2
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.parity import TestClips, synthetic_clips
from genretag.training.sealing import seal

log = logging.getLogger(__name__)

NETWORK_PREFIX = "network/"  # genretag.onnx.graph.compose's prefix on the network's nodes
QUANT_FORMATS = ("qoperator", "qdq")
NOT_QUANTIZED = ("Softmax",)  # the probabilities keep float resolution (a uint8 softmax steps by 1/255)


class NothingToQuantize(ExportError):
    """The network holds no op that onnxruntime.quantization quantises (e.g. scikit-learn's ai.onnx.ml ops)."""


class Int8Refused(ExportError):
    """The int8 graph's top-1 class parts from float32's on too many clips (``export.int8_min_agreement``)."""


@dataclass(frozen=True)
class Int8Result:
    """An int8 export: where it went, its contract and how often its top-1 class is the float32 model's."""

    onnx_path: Path
    contract: ModelContract
    agreement_test: float  # fraction of test clips with the same top-1 class as float32
    agreement_synthetic: float  # the same on :func:`synthetic_clips`
    max_abs_diff: float  # largest |probability difference| to float32 over both
    calibration_clips: int
    unknown_agreement: float | None = None  # share of test tracks and synthetic clips with float32's unknown decision (None: no score)


def _calibration_reader(waveforms: np.ndarray, *, batch_size: int):
    """An ``onnxruntime.quantization.CalibrationDataReader`` feeding float32 [n, S] waveforms in batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Waveforms(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = (
                np.ascontiguousarray(waveforms[i : i + batch_size], dtype=np.float32) for i in range(0, len(waveforms), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Waveforms()


def quantize_network(
    proto: onnx.ModelProto, *, calibration: np.ndarray, quant_format: str = "qoperator", batch_size: int = 16
) -> onnx.ModelProto:
    """Static int8 quantisation of the network part of a contract-v2 graph; the front end stays float32.

    Quantised: the nodes named ``network/...`` (:func:`genretag.graph.compose`) except
    :data:`NOT_QUANTIZED` op types; weights int8 per channel, activations uint8 with MinMax ranges
    calibrated by running the float32 graph on ``calibration`` (float32 [n, S] waveforms, n >= 1)
    (onnxruntime.quantization.quantize_static). ``quant_format``: "qoperator" (QLinearConv,
    QLinearMatMul) or "qdq" (Quantize/DequantizeLinear pairs that onnxruntime fuses). Raises
    ExportError when the graph has no network nodes, no calibration clip is given, or onnxruntime
    fails; :class:`NothingToQuantize` when none of the network's ops can be quantised.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if quant_format not in QUANT_FORMATS:
        raise ExportError(f"export.quantize_format {quant_format!r}: expected one of {', '.join(QUANT_FORMATS)}")
    nodes = [n.name for n in proto.graph.node if n.name.startswith(NETWORK_PREFIX) and n.op_type not in NOT_QUANTIZED]
    if not nodes:
        raise ExportError(f"graph {proto.graph.name!r} has no {NETWORK_PREFIX} nodes: build it with genretag.graph.compose to quantise it")
    if len(calibration) == 0:
        raise ExportError("no calibration clips: int8 ranges need training clips")
    with tempfile.TemporaryDirectory(prefix="genretag-int8-") as tmp:
        source, target = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, source)
        try:
            quantize_static(
                source, target, _calibration_reader(calibration, batch_size=batch_size),
                quant_format=QuantFormat.QOperator if quant_format == "qoperator" else QuantFormat.QDQ,
                nodes_to_quantize=nodes, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises RuntimeError, ValueError, Fail...
            raise ExportError(f"onnxruntime could not quantise graph {proto.graph.name!r}: {exc}") from exc
        quantised = onnx.load(target)
    if not any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in quantised.graph.node):
        ops = sorted({proto.graph.node[[n.name for n in proto.graph.node].index(name)].op_type for name in nodes})
        raise NothingToQuantize(f"graph {proto.graph.name!r}: onnxruntime quantises none of its network's ops ({', '.join(ops)})")
    return quantised


def _unknown_decisions(prediction, open_set: OpenSet, groups: tuple[str, ...]) -> np.ndarray:
    """Per group of clips (a track), whether its embedding (the mean of its windows') is past ``open_set``'s threshold: bool [g]."""
    return np.array([open_set.is_unknown(open_set.track_score(vector)) for vector in track_embeddings(prediction.embedding, groups)[1]])


def export_int8(
    float32_path: Path,
    *,
    calibration: np.ndarray,
    onnx_path: Path,
    test: TestClips,
    quant_format: str = "qoperator",
    min_agreement: float = 0.9,
    synthetic: np.ndarray | None = None,
) -> Int8Result:
    """Quantise the exported contract-v2 model at ``float32_path`` (:func:`quantize_network`) and write it to ``onnx_path``.

    Contract: the float32 one with ``model_version`` + :data:`INT8_SUFFIX`, ``quantization`` int8
    and ``derived_from`` the float32 version. Checked before anything is written: contract-v2 IO
    (same names and shapes), and top-1 agreement with the float32 graph on the ``test`` and
    ``synthetic`` clips together (default :func:`synthetic_clips`) of at least ``min_agreement``
    (else :class:`Int8Refused`); with an out-of-taxonomy score (the embedding it reads is the int8 network's, the bank
    and threshold the float32 one's), the same unknown decision on at least
    ``min_agreement`` of the test tracks and synthetic clips (else :class:`Int8Refused`). Accuracy is the registry gate's business, not this function's.
    Raises ExportError, writing nothing, on any failure.
    """
    source = require_v2(read_contract(float32_path), source=str(float32_path))
    if source.quantization == INT8:
        raise ExportError(f"{float32_path}: already int8")
    proto = quantize_network(onnx.load(float32_path), calibration=calibration, quant_format=quant_format)
    contract = replace(source, model_version=f"{source.model_version}{INT8_SUFFIX}", quantization=INT8,
                       derived_from=source.model_version)
    onnx_bytes = seal(proto, contract, what="quantised")
    if synthetic is None:
        synthetic = synthetic_clips(sample_rate=contract.sample_rate, clip_samples=contract.clip_samples)
    float32, int8 = cpu_session(str(float32_path)), cpu_session(onnx_bytes)
    same, gap, same_unknown = [], 0.0, []
    groups = (test.track_ids if len(test.track_ids) == len(test) else test.clip_ids, tuple(map(str, range(len(synthetic)))))
    for clips, group in zip((test.waveforms, synthetic), groups, strict=True):
        reference, quantised = predict_waveforms(float32, clips), predict_waveforms(int8, clips)
        same.append(reference.probabilities.argmax(axis=1) == quantised.probabilities.argmax(axis=1) if len(clips) else np.zeros(0, bool))
        gap = max(gap, float(np.abs(reference.probabilities - quantised.probabilities).max()) if len(clips) else 0.0)
        if contract.open_set.available and len(clips):
            same_unknown.extend(_unknown_decisions(reference, contract.open_set, group) == _unknown_decisions(quantised, contract.open_set, group))
    unknown_agreement = float(np.mean(same_unknown)) if same_unknown else None
    agreement = [float(np.mean(s)) if len(s) else 1.0 for s in same]
    pooled = float(np.mean(np.concatenate(same))) if sum(map(len, same)) else 1.0
    if pooled < min_agreement:
        raise Int8Refused(
            f"{float32_path}: int8 model agrees with float32 on top-1 for {100 * pooled:.1f} % of the clips ({100 * agreement[0]:.1f} % "
            f"of {len(same[0])} test, {100 * agreement[1]:.1f} % of {len(same[1])} synthetic), below export.int8_min_agreement "
            f"{100 * min_agreement:.1f} %. Nothing written."
        )
    if unknown_agreement is not None and unknown_agreement < min_agreement:
        raise Int8Refused(
            f"{float32_path}: int8 model agrees with float32 on the unknown decision for {100 * unknown_agreement:.1f} % of "
            f"{len(same_unknown)} test tracks and synthetic clips, below export.int8_min_agreement {100 * min_agreement:.1f} %. Nothing written."
        )
    with atomic_open(onnx_path, "wb") as handle:
        handle.write(onnx_bytes)
    log.info("exported int8 %s to %s: top-1 agreement with float32 %.3f test / %.3f synthetic, max |diff| %.3g",
             contract.model_version, onnx_path, agreement[0], agreement[1], gap)
    return Int8Result(onnx_path=onnx_path, contract=contract, agreement_test=agreement[0], agreement_synthetic=agreement[1],
                      max_abs_diff=gap, calibration_clips=len(calibration), unknown_agreement=unknown_agreement)
