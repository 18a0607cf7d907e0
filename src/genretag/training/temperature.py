"""Temperature scaling as graph surgery (any family, inside :func:`genretag.training.export.export_candidate`
once parity has passed): a temperature ``T`` fitted on the validation clips' ONNX probabilities (the maths:
:mod:`genretag.evaluation.calibration`, Guo et al. 2017) is appended to the graph as nodes named
``calibration/...``, so that ``probabilities`` = Softmax(Log(Max(p, floor)) / T); the embedding and the
top-1 class do not change, and the record (T, clips, ECE before/after) goes into ``genretag.calibration``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx

from genretag.core.config import ExportParams
from genretag.core.errors import ExportError
from genretag.evaluation.calibration import (
    ECE_BINS,
    PROBABILITY_FLOOR,
    TRACK_SOURCE_OUT_OF_FOLD,
    TRACK_SOURCE_VALIDATION,
    Calibration,
    TrackCalibration,
    calibrate,
    calibrate_tracks,
    temperature_scaled,
    track_means,
)
from genretag.onnx.contract import OUTPUT_NAME, ModelContract
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.parity import TIE_GAP, TestClips
from genretag.training.sealing import seal

log = logging.getLogger(__name__)

CALIBRATION_PREFIX = "calibration/"  # names of the nodes and initializers that temperature scaling appends
CALIBRATION_TOLERANCE = 1e-5  # max |calibrated graph - numpy temperature_scaled| checked before writing (float32 ops)
DEFAULT_TEMPERATURE_MIN_CLIPS = ExportParams().temperature_min_clips  # the built-in default of params export.temperature_min_clips
DEFAULT_TRACK_MIN_TRACKS = ExportParams().track_temperature_min_tracks  # the built-in default of export.track_temperature_min_tracks


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


OutOfFold = Callable[[], tuple[np.ndarray, np.ndarray, tuple[str, ...]]]
"""() -> (float [n, K] out-of-fold clip probabilities over the training tracks, int64 [n] labels, n track ids)."""


def _track_level(probabilities: np.ndarray, labels: np.ndarray, track_ids: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    if not len(labels) or not track_ids:  # no clips, or clips whose tracks are not known: no tracks to fit on
        return np.zeros((0, probabilities.shape[1])), np.zeros(0, np.int64)
    return track_means(probabilities, clip_tracks=np.asarray(track_ids), clip_labels=labels)


def calibrate_track_level(
    onnx_bytes: bytes, contract: ModelContract, *, validation: TestClips | None, test: TestClips, min_tracks: int,
    out_of_fold: OutOfFold | None = None, out_of_fold_missing: str = "",
) -> tuple[bytes, ModelContract, TrackCalibration]:
    """The track temperature of a sealed, clip-calibrated contract-v2 graph, recorded in ``genretag.track_calibration``
    (the graph is unchanged: :func:`genretag.onnx.contract.track_probabilities` applies it, in every consumer).

    Fitted (:func:`genretag.evaluation.calibration.calibrate_tracks`) on the validation tracks' mean window probabilities
    when there are at least ``min_tracks`` of them; otherwise on ``out_of_fold()``'s predictions over the training tracks
    (models fitted on the other folds, passed through this graph's clip temperature), when the family offers them;
    otherwise T = 1 with the reason (``out_of_fold_missing`` says why there are none). ECE before/after on the test tracks.
    Returns the resealed bytes, the contract and the record.
    """
    session = cpu_session(onnx_bytes)
    (validation_p, validation_y), (test_p, test_y) = (_clip_probabilities(session, clips, contract.labels) for clips in (validation, test))
    validation_tracks = _track_level(validation_p, validation_y, validation.track_ids if validation is not None else ())
    test_tracks = _track_level(test_p, test_y, test.track_ids) if test.track_ids else (None, None)
    fit, source = validation_tracks, TRACK_SOURCE_VALIDATION
    note = ""
    if len(validation_tracks[1]) < min_tracks:
        note = f"{len(validation_tracks[1])} validation track(s), fewer than export.track_temperature_min_tracks {min_tracks}"
        if out_of_fold is not None:
            clip_p, clip_y, clip_tracks = out_of_fold()
            scale = float(contract.calibration.get("temperature", 1.0))
            fit, source = _track_level(temperature_scaled(probabilities=clip_p, temperature=scale), clip_y, clip_tracks), TRACK_SOURCE_OUT_OF_FOLD
        else:
            note += f"; no out-of-fold predictions ({out_of_fold_missing or 'none offered'})"
    record = calibrate_tracks(fit_probabilities=fit[0], fit_labels=fit[1], source=source, min_tracks=min_tracks,
                              test_probabilities=test_tracks[0], test_labels=test_tracks[1])
    if note:
        record = replace(record, reason=f"{note}: {record.reason}" if source == TRACK_SOURCE_VALIDATION else f"{note}: out of fold; {record.reason}")
    contract = replace(contract, track_calibration=record.as_dict())
    log.info("track calibration of %s: %s, T = %.4g; %s", contract.model_version, record.method, record.temperature, record.reason)
    return seal(onnx.load_from_string(onnx_bytes), contract, what="track-calibrated"), contract, record
