"""Sealing a candidate: a model -> one contract-v2 ONNX graph (waveform in; probabilities and embedding
out), gated on parity with the framework's own forward pass (:mod:`genretag.training.parity`),
temperature-scaled on the validation clips (:mod:`genretag.training.temperature`), given its out-of-taxonomy
score (:mod:`genretag.training.open_set`: statistics of the train clips, threshold of the validation tracks), with its contract in
the metadata and its model card (:mod:`genretag.training.card`) beside it.

Every family goes this one way (the DVC ``candidate-<id>`` stage calls it through
:func:`genretag.training.train.export_trained_candidate`); how a family builds its graph is the family's
business. This module imports no framework.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from genretag.core.atomic import atomic_open
from genretag.core.config import ExportParams
from genretag.evaluation.calibration import Calibration, TrackCalibration
from genretag.onnx.contract import ModelContract, OpenSet
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.handoff import MODEL_CARD_NAME
from genretag.training.parity import DEFAULT_TOLERANCE, Exportable, ParityReport, TestClips, check_parity
from genretag.training.open_set import attach_open_set
from genretag.training.sealing import seal
from genretag.training.temperature import (
    DEFAULT_TEMPERATURE_MIN_CLIPS,
    DEFAULT_TRACK_MIN_TRACKS,
    OutOfFold,
    calibrate_sealed,
    calibrate_track_level,
)

log = logging.getLogger(__name__)

DEFAULT_UNKNOWN_ACCEPT = ExportParams().unknown_accept  # the built-in default of params export.unknown_accept
DEFAULT_UNKNOWN_NEIGHBOURS = ExportParams().unknown_neighbours
DEFAULT_UNKNOWN_BANK_TRACKS = ExportParams().unknown_bank_tracks


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    card_path: Path | None
    contract: ModelContract
    parity: ParityReport
    calibration: Calibration
    track_calibration: TrackCalibration
    open_set: OpenSet


def export_candidate(
    candidate: Exportable,
    *,
    contract: ModelContract,
    onnx_path: Path,
    test: TestClips,
    tolerance: float = DEFAULT_TOLERANCE,
    synthetic: np.ndarray | None = None,
    validation: TestClips | None = None,
    temperature_min_clips: int = DEFAULT_TEMPERATURE_MIN_CLIPS,
    track_min_tracks: int = DEFAULT_TRACK_MIN_TRACKS,
    out_of_fold: OutOfFold | None = None,
    out_of_fold_missing: str = "",
    train: TestClips | None = None,
    unknown_accept: float = DEFAULT_UNKNOWN_ACCEPT,
    unknown_neighbours: int = DEFAULT_UNKNOWN_NEIGHBOURS,
    unknown_bank_tracks: int = DEFAULT_UNKNOWN_BANK_TRACKS,
    seed: int = 0,
    card: Callable[[ParityReport, Calibration, TrackCalibration, OpenSet], str] | None = None,
    card_path: Path | None = None,
) -> ExportResult:
    """Convert ``candidate``, stamp ``contract``, gate on parity, calibrate on the ``validation`` clips
    (:func:`calibrate_sealed`; None: no clips, T = 1), fit the track temperature (:func:`calibrate_track_level`:
    the validation tracks when there are ``track_min_tracks``, else ``out_of_fold`` predictions over the training
    tracks, else T = 1 saying ``out_of_fold_missing``), state the embedding's dimension and storage dtype
    (``contract.embedding_dtype``, default float32) in ``genretag.embedding``, add the out-of-taxonomy score to the metadata (a track
    embedding's distance to the ``unknown_neighbours``-th nearest of at most ``unknown_bank_tracks`` ``train`` tracks, sampled with ``seed``)
    with its threshold on the ``validation`` tracks accepting ``unknown_accept`` of them
    (:func:`genretag.training.open_set.attach_open_set`; no train or too few validation tracks: none), then write ``onnx_path`` (and the ``card`` text
    at ``card_path``, default MODEL_CARD.md beside it) atomically.

    Raises ExportError, writing nothing, when the graph is not contract v2 (input ``waveform``
    [N, contract.clip_samples], outputs ``probabilities`` [N, K] and ``embedding``), fails the
    ONNX checker, fails :func:`check_parity`, or its calibrated output parts from numpy's.
    """
    onnx_bytes = seal(candidate.to_onnx(), contract, what="converted")
    parity = check_parity(candidate, onnx_bytes, test=test, labels=contract.labels, tolerance=tolerance, synthetic=synthetic)
    contract = replace(contract, embedding_dim=embedding_dim(onnx_bytes, clip_samples=contract.clip_samples),
                       embedding_dtype=contract.embedding_dtype or "float32")
    onnx_bytes, contract, calibration = calibrate_sealed(onnx_bytes, contract, validation=validation, test=test,
                                                         min_clips=temperature_min_clips)
    onnx_bytes, contract, track_calibration = calibrate_track_level(
        onnx_bytes, contract, validation=validation, test=test, min_tracks=track_min_tracks, out_of_fold=out_of_fold,
        out_of_fold_missing=out_of_fold_missing)
    onnx_bytes, contract, open_set = attach_open_set(onnx_bytes, contract, train=train, validation=validation, accept=unknown_accept,
                                                     k=unknown_neighbours, max_tracks=unknown_bank_tracks, seed=seed)
    card_path = (card_path or onnx_path.with_name(MODEL_CARD_NAME)) if card else None
    card_text = card(parity, calibration, track_calibration, open_set) if card else ""
    with atomic_open(onnx_path, "wb") as onnx_file, (
        atomic_open(card_path, "w", encoding="utf-8") if card_path else contextlib.nullcontext()
    ) as card_file:
        onnx_file.write(onnx_bytes)
        if card_file:
            card_file.write(card_text)
    log.info(
        "exported %s (%s) to %s: parity max |diff| %.3g test / %.3g synthetic",
        contract.model_name, contract.model_version, onnx_path, parity.max_abs_diff_test, parity.max_abs_diff_synthetic,
    )
    return ExportResult(onnx_path=onnx_path, card_path=card_path, contract=contract, parity=parity, calibration=calibration,
                        track_calibration=track_calibration, open_set=open_set)


def embedding_dim(onnx_bytes: bytes, *, clip_samples: int) -> int:
    """D of a contract-v2 graph's ``embedding`` output [N, D], read by running it on one silent clip."""
    return int(predict_waveforms(cpu_session(onnx_bytes), np.zeros((1, clip_samples), np.float32)).embedding.shape[1])
