"""The out-of-taxonomy score as graph surgery (any family, inside :func:`genretag.training.export.export_candidate`
after calibration): an extra output ``unknown_score`` float32 [N], the cosine distance ``1 - cos`` of each window's
L2-normalised ``embedding`` to its k-th nearest L2-normalised train clip (:func:`genretag.evaluation.open_set.knn_scores`,
Sun et al. 2022; chosen by ``bench/open_set.py``, which compares it with Mahalanobis, energy and maximum probability).
The bank is the train split's clips (at most ``export.unknown_bank_clips``, a seeded sample), k is
``export.unknown_neighbours``; the threshold comes from the validation split's tracks only (``export.unknown_accept``
of them accepted, a track's score being the mean of its windows'). The record (:class:`genretag.onnx.contract.OpenSet`)
goes into the metadata ``genretag.open_set``, so every consumer (the tagger, ``predict``, ``show``, the Python and Node
handoff clients) decides "unknown" the same way.

In the graph (nodes named ``open_set/...``): ``unit = embedding / max(||embedding||_2, 1e-12)``,
``similarity = unit @ bank^T`` [N, m], the k-th largest by ``TopK``, ``unknown_score = 1 - kth``. The bank is an
initializer of m x D float32 (4 m D bytes: 2,000 clips of a 1,506-d embedding are 12 MB).
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
    METHOD_KNN,
    NORM_FLOOR,
    fit_threshold,
    knn_scores,
    neighbour_bank,
    track_scores,
)
from genretag.onnx.contract import EMBEDDING_NAME, UNKNOWN_SCORE_NAME, ModelContract, OpenSet
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.parity import TestClips
from genretag.training.sealing import seal

log = logging.getLogger(__name__)

OPEN_SET_PREFIX = "open_set/"  # names of the nodes and initializers the score appends
OPEN_SET_TOLERANCE = 1e-4  # max |graph score - numpy knn_scores| checked before writing (float32 cosines, scores in [0, 2])
MIN_VALIDATION_TRACKS = 2  # fewer validation tracks: no threshold fitted, the model cannot say unknown (logged)


@dataclass(frozen=True)
class OpenSetFit:
    """The fitted score's statistics and the threshold record (``open_set.available`` False when none was fitted)."""

    bank: np.ndarray | None  # the normalised train clips float64 [m, D]
    open_set: OpenSet
    reason: str


def _opset(proto: onnx.ModelProto) -> int:
    return max((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), default=0)


def append_unknown_score(proto: onnx.ModelProto, bank: np.ndarray, *, k: int) -> onnx.ModelProto:
    """A copy of contract-v2 ``proto`` with a third output ``unknown_score`` float32 [N]: ``1 - cos`` of the ``embedding``
    output to its k-th nearest row of ``bank`` float [m, D] (normalised; :func:`genretag.evaluation.open_set.knn_scores`).
    Raises ExportError when the graph has no ``embedding``."""
    scored = onnx.ModelProto()
    scored.CopyFrom(proto)
    graph, name = scored.graph, lambda what: f"{OPEN_SET_PREFIX}{what}"
    if not any(EMBEDDING_NAME in node.output for node in graph.node) and EMBEDDING_NAME not in {i.name for i in graph.input}:
        raise ExportError(f"graph {graph.name!r}: no node produces {EMBEDDING_NAME!r}, no open-set score")
    m = len(bank)
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(bank.T, dtype=np.float32), name("bank")),
        numpy_helper.from_array(np.array(NORM_FLOOR, dtype=np.float32), name("norm_floor")),
        numpy_helper.from_array(np.array([min(k, m)], dtype=np.int64), name("k")),
        numpy_helper.from_array(np.array(min(k, m) - 1, dtype=np.int64), name("kth")),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), name("one")),
    ])
    if _opset(scored) >= 18:  # opset 18 moved the axes of ReduceL2 into an input
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), name("axes")))
        norm = helper.make_node("ReduceL2", [EMBEDDING_NAME, name("axes")], [name("norm")], name=name("norm"), keepdims=1)
    else:
        norm = helper.make_node("ReduceL2", [EMBEDDING_NAME], [name("norm")], name=name("norm"), axes=[1], keepdims=1)
    graph.node.extend([
        norm,
        helper.make_node("Max", [name("norm"), name("norm_floor")], [name("floored")], name=name("floored")),
        helper.make_node("Div", [EMBEDDING_NAME, name("floored")], [name("unit")], name=name("unit")),
        helper.make_node("MatMul", [name("unit"), name("bank")], [name("similarity")], name=name("similarity")),
        helper.make_node("TopK", [name("similarity"), name("k")], [name("nearest"), name("nearest_index")], name=name("nearest"),
                         axis=1, largest=1, sorted=1),
        helper.make_node("Gather", [name("nearest"), name("kth")], [name("kth_similarity")], name=name("kth_similarity"), axis=1),
        helper.make_node("Sub", [name("one"), name("kth_similarity")], [UNKNOWN_SCORE_NAME], name=name("distance")),
    ])
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    graph.output.append(helper.make_tensor_value_info(UNKNOWN_SCORE_NAME, TensorProto.FLOAT, [batch.dim_param or batch.dim_value]))
    return scored


def fit_open_set(
    *, train_embeddings: np.ndarray, validation_embeddings: np.ndarray, validation_tracks: Sequence[str], accept: float,
    k: int, max_clips: int, seed: int,
) -> OpenSetFit:
    """The neighbour bank of the train clips' embeddings (:func:`genretag.evaluation.open_set.neighbour_bank`, at most
    ``max_clips``, ``seed``), the threshold of the validation tracks' scores (the mean of their windows' k-th neighbour
    distances; :func:`genretag.evaluation.open_set.fit_threshold`). With fewer than :data:`MIN_VALIDATION_TRACKS`
    validation tracks, or fewer than ``k`` train clips, nothing is fitted (``open_set`` absent, ``reason`` says why)."""
    tracks = list(dict.fromkeys(validation_tracks))
    if len(train_embeddings) < k:
        return OpenSetFit(None, OpenSet.absent(), f"{len(train_embeddings)} train clips for k = {k} neighbours: no unknown score")
    if len(tracks) < MIN_VALIDATION_TRACKS:
        return OpenSetFit(None, OpenSet.absent(), f"{len(tracks)} validation tracks (at least {MIN_VALIDATION_TRACKS} needed): "
                                                  "no unknown threshold")
    bank = neighbour_bank(embeddings=train_embeddings, max_clips=max_clips, seed=seed)
    scores = np.array(list(track_scores(knn_scores(validation_embeddings, bank, k=k), validation_tracks).values()))
    threshold = fit_threshold(scores, accept=accept)
    open_set = OpenSet(method=METHOD_KNN, output=UNKNOWN_SCORE_NAME, threshold=threshold, accept=accept,
                       validation_tracks=len(scores), validation_accepted=float(np.mean(scores <= threshold)),
                       neighbours=k, bank_clips=len(bank))
    return OpenSetFit(bank, open_set, f"{METHOD_KNN} (k = {k}, {len(bank)} train clips): threshold {threshold:.4g} accepts "
                                      f"{open_set.validation_accepted:.1%} of {len(scores)} validation tracks")


def attach_open_set(
    onnx_bytes: bytes, contract: ModelContract, *, train: TestClips | None, validation: TestClips | None, accept: float,
    k: int, max_clips: int, seed: int, check: TestClips | None = None,
) -> tuple[bytes, ModelContract, OpenSet]:
    """The sealed contract-v2 graph with ``unknown_score`` appended and ``genretag.open_set`` in its metadata, resealed;
    the embeddings are the graph's own on ``train`` and ``validation`` (whose ``track_ids`` group the windows).
    Nothing fitted (too few clips or tracks; logged): the bytes come back as they were, with an absent OpenSet.

    Checked on the validation clips and ``check`` before returning: the graph's scores equal numpy's within
    :data:`OPEN_SET_TOLERANCE` (absolute), else ExportError. The recorded threshold is the ``accept`` quantile of the
    graph's own validation track scores (float32; numpy's differ by up to the tolerance).
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
        fit = fit_open_set(train_embeddings=train_embeddings, validation_embeddings=validation_embeddings,
                           validation_tracks=validation.track_ids, accept=accept, k=k, max_clips=max_clips, seed=seed)
    log.info("open set of %s: %s", contract.model_version, fit.reason)
    if fit.bank is None:
        return onnx_bytes, contract, fit.open_set
    scored = append_unknown_score(onnx.load_from_string(onnx_bytes), fit.bank, k=k)
    session = cpu_session(scored.SerializeToString())
    for clips in (validation, *([check] if check is not None and len(check) else [])):
        got = predict_waveforms(session, clips.waveforms)
        gap = float(np.max(np.abs(got.unknown_score - knn_scores(got.embedding, fit.bank, k=k))))
        if gap > OPEN_SET_TOLERANCE:
            raise ExportError(f"open-set graph of {contract.model_version} parts from numpy's kNN score by {gap:.3g} "
                              f"(tolerance {OPEN_SET_TOLERANCE:g}). Nothing written.")
    # the threshold every consumer compares with: refitted on the graph's own float32 validation scores, so the
    # validation track at the quantile is decided the same way in numpy's fit and in every client
    graph_scores = np.array(list(track_scores(predict_waveforms(session, validation.waveforms).unknown_score,
                                              validation.track_ids).values()))
    threshold = fit_threshold(graph_scores, accept=accept)
    open_set = replace(fit.open_set, threshold=threshold, validation_accepted=float(np.mean(graph_scores <= threshold)))
    contract = replace(contract, open_set=open_set)
    return seal(scored, contract, what="open-set scored"), contract, open_set
