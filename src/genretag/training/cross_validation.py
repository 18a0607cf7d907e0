"""The register stage's small-data protocol (issue 24): repeated stratified track-level k-fold cross-validation of the
candidates over every labelled track (train, validation and test together), and the refit of the chosen one on all of them.

:func:`cross_validate_candidates` decodes every labelled clip once per family, splits the *tracks* with
:func:`genretag.families.track_folds` (``register.cv_repeats`` x ``register.cv_folds``, stratified by genre, seeded by
``train.seed``: the same folds for every family, so outcomes are paired), and fits each fold's model on the other folds
(:func:`genretag.families.cross_fitted`); the statistics are :mod:`genretag.evaluation.cv_gate`'s. Only families that refit
cheaply (heads over frozen features: one embedding per clip, a head per fold) are cross-validated; a family whose refit
is a training run (the Keras families) is skipped with the reason and compared on the test split as before.
:func:`refit_on_all_tracks` trains the chosen candidate's family on every labelled track into ``models/served/<id>/`` and
exports it like any candidate (parity-gated, sealed; the clip temperature is 1 for want of held-out clips, the track
temperature is fitted out of fold over all the tracks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from genretag.core.config import Layout, Params
from genretag.evaluation.cv_gate import FoldOutcomes, fold_outcomes
from genretag.families import ClipSet, clip_subset, cross_fitted, from_params, track_folds
from genretag.training.export import ExportResult
from genretag.training.train import Candidate, DecodedSplits, decode_splits, export_trained_candidate, train_candidate

log = logging.getLogger(__name__)

FITTED_ON_ALL = "every labelled track (train + validation + test)"


@dataclass(frozen=True)
class CrossValidation:
    """Held-out outcomes of the cross-validated candidates (``outcomes`` None when none could be), and why each other
    candidate was not cross-validated (candidate -> one line). ``tracks``/``clips``: the labelled corpus."""

    outcomes: FoldOutcomes | None
    skipped: dict[str, str] = field(default_factory=dict)
    tracks: int = 0
    clips: int = 0


def all_labelled(splits: DecodedSplits) -> ClipSet:
    """Train, validation and test clips as one ClipSet (clips.csv order within each split)."""
    parts = (splits.train, splits.validation, splits.test)
    return ClipSet(np.concatenate([p.waveforms for p in parts]), np.concatenate([p.labels for p in parts]),
                   tuple(t for p in parts for t in p.track_ids), tuple(c for p in parts for c in p.clip_ids), splits.train.sample_rate)


def cross_validate_candidates(params: Params, paths: Layout, *, candidates: Mapping[str, str]) -> CrossValidation:
    """Repeated stratified track-level k-fold outcomes of every ``candidates`` id that refits cheaply, over every
    labelled track of data/clips.csv. ``candidates``: id -> the family its model file declares (contract ``family``).
    A candidate that is not a ``train.candidates`` family, whose file is of another family than the one its id trains
    (cross-validating the id would judge another model) or that does not refit cheaply is skipped with the reason;
    fewer than two tracks in some genre: nothing is cross-validated (all skipped).
    Raises TrainingDataError as :func:`genretag.training.train.decode_splits` for missing or short audio."""
    from genretag.core.errors import ConfigError

    labels = tuple(params.genres)
    settings, seed = params.registry, params.train.seed
    held_out: dict[str, list[np.ndarray]] = {}
    skipped: dict[str, str] = {}
    reference: ClipSet | None = None
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    for candidate, declared in candidates.items():
        try:
            family = from_params(candidate, params)
        except ConfigError as exc:
            skipped[candidate] = f"not a train.candidates family ({exc}): compared on the test split"
            continue
        if family.name != declared:
            skipped[candidate] = f"its model file is a {declared} model, not the {family.name} its id trains: compared on the test split"
            continue
        if not hasattr(family, "fold_probabilities"):
            skipped[candidate] = "its refit is a training run (expensive): not cross-validated, compared on the test split"
            continue
        clips = all_labelled(decode_splits(params, paths, sample_rate=family.sample_rate))
        if reference is None:
            reference = clips
            folds = track_folds(clips.track_ids, clips.labels, folds=settings.cv_folds, repeats=settings.cv_repeats, seed=seed)
            if not folds:
                return CrossValidation(None, {c: "fewer than two labelled tracks in some genre: no cross-validation" for c in candidates},
                                       len(set(clips.track_ids)), len(clips))
        elif clips.clip_ids != reference.clip_ids:  # one clips.csv: the same clips in the same order at every rate
            skipped[candidate] = "its clips differ from the other families' (data/clips.csv changed?): compared on the test split"
            continue
        log.info("cross-validating %s: %d folds over %d tracks", candidate, len(folds), len(set(clips.track_ids)))
        held_out[candidate] = cross_fitted(family, clips, folds=folds, labels=labels, seed=seed)
    if reference is None or not held_out:
        return CrossValidation(None, skipped)
    outcomes = fold_outcomes(folds=folds, repeats=settings.cv_repeats, clip_labels=reference.labels,
                             clip_tracks=np.asarray(reference.track_ids), held_out=held_out, n_classes=len(labels))
    return CrossValidation(outcomes, skipped, len(set(reference.track_ids)), len(reference))


def refit_on_all_tracks(params: Params, paths: Layout, *, candidate: str) -> ExportResult:
    """``candidate``'s family trained on every labelled track (its own MLflow run, ``training.json`` with
    ``fitted_on`` and ``train_tracks``) and exported to ``models/served/<id>/model.onnx`` with its card, like a
    candidate (:func:`genretag.training.train.export_trained_candidate`; the parity gate runs on the test clips, which
    are now training clips: parity, not accuracy). Raises as :func:`train_candidate` and the export."""
    family = from_params(candidate, params)
    splits = decode_splits(params, paths, sample_rate=family.sample_rate)
    everything = all_labelled(splits)
    nothing = clip_subset(everything, np.zeros(0, np.int64))
    stage = Candidate(name=candidate, family=family, splits=DecodedSplits(train=everything, validation=nothing, test=splits.test),
                      folder=paths.served_dir(candidate), fitted_on=FITTED_ON_ALL)
    train_candidate(params, paths, stage, log=log.info)
    return export_trained_candidate(params, paths, stage)
