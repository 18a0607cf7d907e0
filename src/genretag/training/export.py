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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genretag.core.atomic import atomic_open
from genretag.core.config import ExportParams
from genretag.evaluation.calibration import Calibration
from genretag.onnx.contract import ModelContract, OpenSet
from genretag.handoff import MODEL_CARD_NAME
from genretag.training.parity import DEFAULT_TOLERANCE, Exportable, ParityReport, TestClips, check_parity
from genretag.training.open_set import attach_open_set
from genretag.training.sealing import seal
from genretag.training.temperature import DEFAULT_TEMPERATURE_MIN_CLIPS, calibrate_sealed

log = logging.getLogger(__name__)

DEFAULT_UNKNOWN_ACCEPT = ExportParams().unknown_accept  # the built-in default of params export.unknown_accept
DEFAULT_UNKNOWN_NEIGHBOURS = ExportParams().unknown_neighbours
DEFAULT_UNKNOWN_BANK_CLIPS = ExportParams().unknown_bank_clips


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    card_path: Path | None
    contract: ModelContract
    parity: ParityReport
    calibration: Calibration
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
    train: TestClips | None = None,
    unknown_accept: float = DEFAULT_UNKNOWN_ACCEPT,
    unknown_neighbours: int = DEFAULT_UNKNOWN_NEIGHBOURS,
    unknown_bank_clips: int = DEFAULT_UNKNOWN_BANK_CLIPS,
    seed: int = 0,
    card: Callable[[ParityReport, Calibration, OpenSet], str] | None = None,
    card_path: Path | None = None,
) -> ExportResult:
    """Convert ``candidate``, stamp ``contract``, gate on parity, calibrate on the ``validation`` clips
    (:func:`calibrate_sealed`; None: no clips, T = 1), append the ``unknown_score`` output (distance to the
    ``unknown_neighbours``-th nearest of at most ``unknown_bank_clips`` ``train`` clips, sampled with ``seed``)
    with its threshold on the ``validation`` tracks accepting ``unknown_accept`` of them
    (:func:`genretag.training.open_set.attach_open_set`; no train or too few validation tracks: none), then write ``onnx_path`` (and the ``card`` text
    at ``card_path``, default MODEL_CARD.md beside it) atomically.

    Raises ExportError, writing nothing, when the graph is not contract v2 (input ``waveform``
    [N, contract.clip_samples], outputs ``probabilities`` [N, K] and ``embedding``), fails the
    ONNX checker, fails :func:`check_parity`, or its calibrated output parts from numpy's.
    """
    onnx_bytes = seal(candidate.to_onnx(), contract, what="converted")
    parity = check_parity(candidate, onnx_bytes, test=test, labels=contract.labels, tolerance=tolerance, synthetic=synthetic)
    onnx_bytes, contract, calibration = calibrate_sealed(onnx_bytes, contract, validation=validation, test=test,
                                                         min_clips=temperature_min_clips)
    onnx_bytes, contract, open_set = attach_open_set(onnx_bytes, contract, train=train, validation=validation, accept=unknown_accept,
                                                     k=unknown_neighbours, max_clips=unknown_bank_clips, seed=seed)
    card_path = (card_path or onnx_path.with_name(MODEL_CARD_NAME)) if card else None
    card_text = card(parity, calibration, open_set) if card else ""
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
                        open_set=open_set)
