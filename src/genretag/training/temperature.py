"""Temperature scaling as graph surgery (any family, inside :func:`genretag.training.export.export_candidate`
once parity has passed): a temperature ``T`` fitted on the validation clips' ONNX probabilities (the maths:
:mod:`genretag.evaluation.calibration`, Guo et al. 2017) is appended to the graph as nodes named
``calibration/...``, so that ``probabilities`` = Softmax(Log(Max(p, floor)) / T); the embedding and the
top-1 class do not change, and the record (T, clips, ECE before/after) goes into ``genretag.calibration``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import onnx

from genretag.core.config import ExportParams
from genretag.core.errors import ExportError
from genretag.evaluation.calibration import ECE_BINS, PROBABILITY_FLOOR, Calibration, calibrate, temperature_scaled
from genretag.onnx.contract import OUTPUT_NAME, ModelContract
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.parity import TIE_GAP, TestClips
from genretag.training.sealing import seal

log = logging.getLogger(__name__)

CALIBRATION_PREFIX = "calibration/"  # names of the nodes and initializers that temperature scaling appends
CALIBRATION_TOLERANCE = 1e-5  # max |calibrated graph - numpy temperature_scaled| checked before writing (float32 ops)
DEFAULT_TEMPERATURE_MIN_CLIPS = ExportParams().temperature_min_clips  # the built-in default of params export.temperature_min_clips


def append_temperature(proto: onnx.ModelProto, *, temperature: float) -> onnx.ModelProto:
    """A copy of contract-v2 ``proto`` whose ``probabilities`` output is
    Softmax(Log(Max(p, PROBABILITY_FLOOR)) / ``temperature``, axis 1), p the graph's own float32 [N, K]
    probabilities (renamed ``calibration/uncalibrated``): :func:`genretag.calibration.temperature_scaled`
    in the graph. Nodes and initializers are named :data:`CALIBRATION_PREFIX` ...; the ``embedding``
    output is untouched. Raises ExportError when no node produces ``probabilities``.
    """
    scaled = onnx.ModelProto()
    scaled.CopyFrom(proto)
    graph, raw = scaled.graph, f"{CALIBRATION_PREFIX}uncalibrated"
    if not any(OUTPUT_NAME in node.output for node in graph.node):
        raise ExportError(f"graph {graph.name!r}: no node produces {OUTPUT_NAME!r}, nothing to calibrate")
    for node in graph.node:
        for names in (node.input, node.output):
            for index, name in enumerate(names):
                if name == OUTPUT_NAME:
                    names[index] = raw
    for info in graph.value_info:
        if info.name == OUTPUT_NAME:
            info.name = raw
    floor, divisor = f"{CALIBRATION_PREFIX}floor", f"{CALIBRATION_PREFIX}temperature"
    graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array(PROBABILITY_FLOOR, dtype=np.float32), floor),
        onnx.numpy_helper.from_array(np.array(temperature, dtype=np.float32), divisor),
    ])
    floored, logs, divided = (f"{CALIBRATION_PREFIX}{what}" for what in ("floored", "log", "scaled"))
    graph.node.extend([
        onnx.helper.make_node("Max", [raw, floor], [floored], name=floored),
        onnx.helper.make_node("Log", [floored], [logs], name=logs),
        onnx.helper.make_node("Div", [logs, divisor], [divided], name=divided),
        onnx.helper.make_node("Softmax", [divided], [OUTPUT_NAME], name=f"{CALIBRATION_PREFIX}softmax", axis=1),
    ])
    return scaled


def _clip_probabilities(session, clips: TestClips | None, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The graph's probabilities float32 [n, K] on ``clips`` and their label indices int64 [n] (n = 0 for None)."""
    if clips is None or not len(clips):
        return np.zeros((0, len(labels)), np.float32), np.zeros(0, np.int64)
    truth = np.array([labels.index(genre) for genre in clips.genres], dtype=np.int64)
    return predict_waveforms(session, clips.waveforms).probabilities, truth


def calibrate_sealed(
    onnx_bytes: bytes, contract: ModelContract, *, validation: TestClips | None, test: TestClips,
    min_clips: int = DEFAULT_TEMPERATURE_MIN_CLIPS, bins: int = ECE_BINS,
) -> tuple[bytes, ModelContract, Calibration]:
    """Temperature scaling of a sealed, parity-checked contract-v2 graph: T fitted on its probabilities on
    ``validation`` (:func:`genretag.calibration.calibrate`; fewer than ``min_clips`` clips: T = 1 and no
    nodes), appended by :func:`append_temperature`, the record in ``genretag.calibration``, resealed.

    Returns the new bytes, contract and :class:`~genretag.calibration.Calibration`. Checked on the
    ``test`` clips before returning: the calibrated output equals numpy's ``temperature_scaled`` within
    :data:`CALIBRATION_TOLERANCE` with the same top-1 class, else ExportError.
    """
    session = cpu_session(onnx_bytes)
    (validation_p, validation_y), (test_p, test_y) = (_clip_probabilities(session, clips, contract.labels) for clips in (validation, test))
    calibration = calibrate(validation_probabilities=validation_p, validation_labels=validation_y, test_probabilities=test_p,
                            test_labels=test_y, min_clips=min_clips, bins=bins)
    proto = onnx.load_from_string(onnx_bytes)
    if calibration.applied:
        proto = append_temperature(proto, temperature=calibration.temperature)
    contract = replace(contract, calibration=calibration.as_dict())
    sealed = seal(proto, contract, what="calibrated")
    if calibration.applied and len(test):
        got = predict_waveforms(cpu_session(sealed), test.waveforms).probabilities
        gap = float(np.abs(got - temperature_scaled(probabilities=test_p, temperature=calibration.temperature)).max())
        top_two = np.sort(test_p, axis=1)[:, -2:]
        moved = (got.argmax(axis=1) != test_p.argmax(axis=1)) & ((top_two[:, 1] - top_two[:, 0]) >= TIE_GAP)
        if gap > CALIBRATION_TOLERANCE or moved.any():
            raise ExportError(f"calibrated graph (T = {calibration.temperature:.4g}) parts from numpy's temperature scaling "
                              f"by {gap:.3g} (tolerance {CALIBRATION_TOLERANCE:g}) or changes a top-1 class. Nothing written.")
    log.info("calibration of %s: %s, T = %.4g; %s", contract.model_version, calibration.method, calibration.temperature, calibration.reason)
    return sealed, contract, calibration
