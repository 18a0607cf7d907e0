"""The out-of-taxonomy score as graph surgery (any family, inside :func:`genretag.training.export.export_candidate`
after calibration): an extra output ``unknown_score`` float32 [N], the squared Mahalanobis distance of each
window's ``embedding`` to the nearest training class mean under the shared Ledoit-Wolf covariance
(:mod:`genretag.evaluation.open_set`, Lee et al. 2018; chosen by ``bench/open_set.py``). The class means
and covariance come from the train split's clips; the threshold from the validation split's tracks only
(``export.unknown_accept`` of them accepted, a track's score being the mean of its windows'). The record
(:class:`genretag.onnx.contract.OpenSet`) goes into the metadata ``genretag.open_set``, so every consumer
(the tagger, ``predict``, ``show``, the Python and Node handoff clients) decides "unknown" the same way.

In the graph, with the precision matrix ``P = L L^T`` (Cholesky): ``z = embedding @ L``,
``unknown_score = min_k ||z - mu_k L||^2`` (nodes named ``open_set/...``): the distance of whitened
vectors, exact in float32 where the expanded quadratic form would cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from genretag.core.errors import ExportError
from genretag.evaluation.open_set import (
    METHOD_MAHALANOBIS,
    GaussianClasses,
    fit_gaussian_classes,
    fit_threshold,
    mahalanobis_scores,
    track_scores,
)
from genretag.onnx.contract import EMBEDDING_NAME, UNKNOWN_SCORE_NAME, ModelContract, OpenSet
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.parity import TestClips
from genretag.training.sealing import seal

log = logging.getLogger(__name__)

OPEN_SET_PREFIX = "open_set/"  # names of the nodes and initializers the score appends
OPEN_SET_TOLERANCE = 1e-3  # max relative |graph score - numpy mahalanobis_scores| checked before writing (float32)
MIN_VALIDATION_TRACKS = 2  # fewer validation tracks: no threshold fitted, the model cannot say unknown (logged)


@dataclass(frozen=True)
class OpenSetFit:
    """The fitted score's statistics and the threshold record (``open_set.available`` False when none was fitted)."""

    classes: GaussianClasses | None
    open_set: OpenSet
    reason: str


def _opset(proto: onnx.ModelProto) -> int:
    return max((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), default=0)


def append_unknown_score(proto: onnx.ModelProto, classes: GaussianClasses) -> onnx.ModelProto:
    """A copy of contract-v2 ``proto`` with a third output ``unknown_score`` float32 [N]:
    min_k (e - mu_k)^T P (e - mu_k) of the ``embedding`` output e (:func:`genretag.evaluation.open_set.mahalanobis_scores`).
    Raises ExportError when the precision matrix is not positive definite or the graph has no ``embedding``."""
    try:
        factor = np.linalg.cholesky(classes.precision)  # P = L L^T
    except np.linalg.LinAlgError as exc:
        raise ExportError(f"open-set precision matrix is not positive definite: {exc}") from exc
    scored = onnx.ModelProto()
    scored.CopyFrom(proto)
    graph, name = scored.graph, lambda what: f"{OPEN_SET_PREFIX}{what}"
    if not any(EMBEDDING_NAME in node.output for node in graph.node) and EMBEDDING_NAME not in {i.name for i in graph.input}:
        raise ExportError(f"graph {graph.name!r}: no node produces {EMBEDDING_NAME!r}, no open-set score")
    graph.initializer.extend([
        numpy_helper.from_array(factor.astype(np.float32), name("whitening")),
        numpy_helper.from_array((classes.means @ factor).astype(np.float32), name("whitened_means")),
        numpy_helper.from_array(np.array([1], dtype=np.int64), name("class_axis")),
    ])
    axes_input = _opset(scored) >= 18

    def reduction(op: str, source: str, output: str, axis: int) -> onnx.NodeProto:
        if axes_input:  # opset 18 moved the axes of ReduceMin / ReduceSumSquare into an input
            axes = name(f"axes_{axis}")
            graph.initializer.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), axes))
            return helper.make_node(op, [source, axes], [output], name=output, keepdims=0)
        return helper.make_node(op, [source], [output], name=output, axes=[axis], keepdims=0)

    graph.node.extend([
        helper.make_node("MatMul", [EMBEDDING_NAME, name("whitening")], [name("whitened")], name=name("whitened")),
        helper.make_node("Unsqueeze", [name("whitened"), name("class_axis")], [name("per_class")], name=name("per_class")),
        helper.make_node("Sub", [name("per_class"), name("whitened_means")], [name("difference")], name=name("difference")),
        reduction("ReduceSumSquare", name("difference"), name("distances"), 2),
        reduction("ReduceMin", name("distances"), UNKNOWN_SCORE_NAME, 1),
    ])
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    graph.output.append(helper.make_tensor_value_info(UNKNOWN_SCORE_NAME, TensorProto.FLOAT, [batch.dim_param or batch.dim_value]))
    return scored


def fit_open_set(
    *, train_embeddings: np.ndarray, train_labels: np.ndarray, n_classes: int,
    validation_embeddings: np.ndarray, validation_tracks: Sequence[str], accept: float,
) -> OpenSetFit:
    """Class means and shared covariance of the train clips' embeddings, the threshold of the validation
    tracks' scores (the mean of their windows'; :func:`genretag.evaluation.open_set.fit_threshold`). With fewer
    than :data:`MIN_VALIDATION_TRACKS` validation tracks, or fewer than two train clips, nothing is fitted
    (``open_set`` absent, ``reason`` says why)."""
    tracks = list(dict.fromkeys(validation_tracks))
    if len(train_labels) < 2:
        return OpenSetFit(None, OpenSet.absent(), f"{len(train_labels)} train clips: no class statistics, no unknown score")
    if len(tracks) < MIN_VALIDATION_TRACKS:
        return OpenSetFit(None, OpenSet.absent(), f"{len(tracks)} validation tracks (at least {MIN_VALIDATION_TRACKS} needed): "
                                                  "no unknown threshold")
    classes = fit_gaussian_classes(embeddings=train_embeddings, labels=train_labels, n_classes=n_classes)
    scores = np.array(list(track_scores(mahalanobis_scores(validation_embeddings, classes), validation_tracks).values()))
    threshold = fit_threshold(scores, accept=accept)
    open_set = OpenSet(method=METHOD_MAHALANOBIS, output=UNKNOWN_SCORE_NAME, threshold=threshold, accept=accept,
                       validation_tracks=len(scores), validation_accepted=float(np.mean(scores <= threshold)),
                       shrinkage=classes.shrinkage)
    return OpenSetFit(classes, open_set, f"threshold {threshold:.4g} accepts {open_set.validation_accepted:.1%} of "
                                         f"{len(scores)} validation tracks")


def attach_open_set(
    onnx_bytes: bytes, contract: ModelContract, *, train: TestClips | None, validation: TestClips | None, accept: float,
    check: TestClips | None = None,
) -> tuple[bytes, ModelContract, OpenSet]:
    """The sealed contract-v2 graph with ``unknown_score`` appended and ``genretag.open_set`` in its metadata, resealed;
    the embeddings are the graph's own on ``train`` and ``validation`` (whose ``track_ids`` group the windows).
    Nothing fitted (too few clips or tracks; logged): the bytes come back as they were, with an absent OpenSet.

    Checked on ``check`` (default the validation clips) before returning: the graph's scores equal numpy's within
    :data:`OPEN_SET_TOLERANCE` (relative), else ExportError.
    """
    session = cpu_session(onnx_bytes)
    if train is None or validation is None or not len(train) or not len(validation):
        fit = OpenSetFit(None, OpenSet.absent(), "no train or validation clips: no unknown score")
    else:
        if len(validation.track_ids) != len(validation):
            raise ExportError(f"validation clips of {contract.model_version}: {len(validation.track_ids)} track ids for "
                              f"{len(validation)} clips; the unknown threshold is fitted per track")
        train_embeddings = predict_waveforms(session, train.waveforms).embedding
        validation_embeddings = predict_waveforms(session, validation.waveforms).embedding
        fit = fit_open_set(train_embeddings=train_embeddings, n_classes=len(contract.labels),
                           train_labels=np.array([contract.labels.index(g) for g in train.genres], dtype=np.int64),
                           validation_embeddings=validation_embeddings,
                           validation_tracks=validation.track_ids, accept=accept)
    log.info("open set of %s: %s", contract.model_version, fit.reason)
    if fit.classes is None:
        return onnx_bytes, contract, fit.open_set
    contract = replace(contract, open_set=fit.open_set)
    sealed = seal(append_unknown_score(onnx.load_from_string(onnx_bytes), fit.classes), contract, what="open-set scored")
    check = check if check is not None and len(check) else validation
    got = predict_waveforms(cpu_session(sealed), check.waveforms)
    expected = mahalanobis_scores(got.embedding, fit.classes)
    gap = float(np.max(np.abs(got.unknown_score - expected) / np.maximum(np.abs(expected), 1.0)))
    if gap > OPEN_SET_TOLERANCE:
        raise ExportError(f"open-set graph of {contract.model_version} parts from numpy's Mahalanobis score by {gap:.3g} "
                          f"(relative tolerance {OPEN_SET_TOLERANCE:g}). Nothing written.")
    return sealed, contract, fit.open_set
