"""The out-of-taxonomy score of an exported model (any family, inside :func:`genretag.training.export.export_candidate`
after calibration): the bank of train-track embeddings and the threshold, written into the metadata
``genretag.open_set`` (:class:`genretag.onnx.contract.OpenSet`), so every consumer (the tagger, ``predict``, ``show``,
the Python and Node handoff clients) decides "unknown" the same way from the graph's own ``embedding`` output.

A track's score is ``1 - cos`` of its embedding (the mean of its windows' embeddings, the vector the catalog stores
and ``genretag similar`` searches) to the k-th nearest train track's embedding (Sun et al. 2022's kNN score, applied
to tracks; chosen by ``bench/open_set.py`` over the same score per window, Mahalanobis, energy and maximum
probability). The bank is the train split's tracks (at most ``export.unknown_bank_tracks``, a seeded sample), k is
``export.unknown_neighbours``; the threshold comes from the validation split's tracks only (``export.unknown_accept``
of them accepted), scored by :meth:`OpenSet.track_score` itself, the function every consumer calls. A model trained
on every labelled track (the refit the cross-validated gate serves) has no validation split: its threshold is fitted
leave-one-out, each train track scored against the bank without itself, as a new track of a known genre would be
(:func:`genretag.evaluation.open_set.leave_one_out_scores`). That is unbiased where the embedding does not learn from
those tracks (the frozen embeddings of the head families, the only ones refitted), and would be optimistic for an
embedding trained on them. The bank costs
4 x D bytes per track in the metadata (2,000 tracks of a 200-d embedding: 1.6 MB, 2.1 MB as base64).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import onnx

from genretag.core.errors import ExportError
from genretag.evaluation.open_set import bank_rows, fit_threshold, leave_one_out_scores, track_embeddings
from genretag.onnx.contract import (
    EMBEDDING_NAME,
    FITTED_ON_LEAVE_ONE_OUT,
    FITTED_ON_VALIDATION,
    METHOD_TRACK_KNN,
    ModelContract,
    OpenSet,
    encode_bank,
    normalised,
)
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.parity import TestClips
from genretag.training.sealing import seal

log = logging.getLogger(__name__)

MIN_VALIDATION_TRACKS = 2  # fewer validation tracks: no threshold fitted, the model cannot say unknown (logged)


@dataclass(frozen=True)
class OpenSetFit:
    """The fitted record (``open_set.available`` False when none was fitted) and why."""

    open_set: OpenSet
    reason: str


def fit_open_set(
    *, train_embeddings: np.ndarray, train_tracks: tuple[str, ...], validation_embeddings: np.ndarray,
    validation_tracks: tuple[str, ...], accept: float, k: int, max_tracks: int, seed: int,
) -> OpenSetFit:
    """The bank of the train tracks' embeddings (the mean of each track's window rows of ``train_embeddings`` float
    [n, D]; :func:`genretag.evaluation.open_set.bank_rows`, at most ``max_tracks``, ``seed``) and the threshold of the
    validation tracks' scores (:meth:`OpenSet.track_score`; :func:`genretag.evaluation.open_set.fit_threshold`), or,
    with no validation track at all, of the train tracks' leave-one-out scores (module docstring). With fewer than
    :data:`MIN_VALIDATION_TRACKS` validation (or, leave-one-out, train) tracks, or too few train tracks for ``k``
    neighbours, nothing is fitted (``open_set`` absent, ``reason`` says why)."""
    _, train_vectors = track_embeddings(train_embeddings, train_tracks)
    names, validation_vectors = track_embeddings(validation_embeddings, validation_tracks)
    fitted_on = FITTED_ON_LEAVE_ONE_OUT if not names else FITTED_ON_VALIDATION
    needed = k + 1 if fitted_on == FITTED_ON_LEAVE_ONE_OUT else k
    if len(train_vectors) < needed:
        return OpenSetFit(OpenSet.absent(), f"{len(train_vectors)} train tracks for k = {k} neighbours ({fitted_on}): no unknown score")
    if len(names or train_vectors) < MIN_VALIDATION_TRACKS:
        return OpenSetFit(OpenSet.absent(), f"{len(names or train_vectors)} {fitted_on} tracks (at least {MIN_VALIDATION_TRACKS} "
                                            "needed): no unknown threshold")
    rows = bank_rows(len(train_vectors), max_rows=max_tracks, seed=seed)
    bank = normalised(train_vectors[rows]).astype(np.float32)
    unfitted = OpenSet(method=METHOD_TRACK_KNN, output=EMBEDDING_NAME, threshold=0.0, accept=accept, neighbours=k,
                       bank_tracks=len(bank), dimension=int(bank.shape[1]), bank=encode_bank(bank), fitted_on=fitted_on)
    if fitted_on == FITTED_ON_VALIDATION:
        scores = np.array([unfitted.track_score(vector) for vector in validation_vectors])
    else:  # the float32 bank, as consumers read it
        scores = leave_one_out_scores(normalised(train_vectors).astype(np.float32), rows=rows, k=k)
    threshold = fit_threshold(scores, accept=accept)
    open_set = replace(unfitted, threshold=threshold, validation_tracks=len(scores),
                       validation_accepted=float(np.mean(scores <= threshold)))
    return OpenSetFit(open_set, f"{METHOD_TRACK_KNN} (k = {k}, {len(bank)} train tracks): threshold {threshold:.4g} "
                                f"accepts {open_set.validation_accepted:.1%} of {len(scores)} {fitted_on} tracks")


def attach_open_set(
    onnx_bytes: bytes, contract: ModelContract, *, train: TestClips | None, validation: TestClips | None, accept: float,
    k: int, max_tracks: int, seed: int,
) -> tuple[bytes, ModelContract, OpenSet]:
    """The sealed contract-v2 graph with ``genretag.open_set`` in its metadata, resealed; the embeddings are the
    graph's own on ``train`` and ``validation`` (whose ``track_ids`` group the windows). Nothing fitted (too few
    tracks, no track ids; logged): the bytes come back as they were, with an absent OpenSet. No ``validation`` clips
    (a model trained on every labelled track): the threshold is fitted leave-one-out over the train tracks. Raises
    ExportError when a split's track ids do not match its clips."""
    if train is None or not len(train):
        fit = OpenSetFit(OpenSet.absent(), "no train clips: no unknown score")
    else:
        splits = (("train", train), *((("validation", validation),) if validation is not None and len(validation) else ()))
        for name, clips in splits:
            if len(clips.track_ids) != len(clips):
                raise ExportError(f"{name} clips of {contract.model_version}: {len(clips.track_ids)} track ids for "
                                  f"{len(clips)} clips; the unknown score is fitted per track")
        session = cpu_session(onnx_bytes)
        embeddings = {name: (predict_waveforms(session, clips.waveforms).embedding, clips.track_ids) for name, clips in splits}
        none = (np.zeros((0, embeddings["train"][0].shape[1]), np.float32), ())
        fit = fit_open_set(train_embeddings=embeddings["train"][0], train_tracks=embeddings["train"][1],
                           validation_embeddings=embeddings.get("validation", none)[0],
                           validation_tracks=embeddings.get("validation", none)[1], accept=accept, k=k, max_tracks=max_tracks,
                           seed=seed)
    log.info("open set of %s: %s", contract.model_version, fit.reason)
    if not fit.open_set.available:
        return onnx_bytes, contract, fit.open_set
    contract = replace(contract, open_set=fit.open_set)
    return seal(onnx.load_from_string(onnx_bytes), contract, what="open-set scored"), contract, fit.open_set
