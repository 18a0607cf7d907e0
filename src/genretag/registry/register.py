"""The register stage: every candidate -> a registry version, the champion gate, the aliases.

Registered model ``params.registry.model_name`` (ONNX flavour, contract v2). Every candidate under
``models/candidates/<id>/model.onnx`` (any family: musicnn-msd, mfcc-logreg, paper-exp8, ...)
becomes a version (:func:`genretag.registry.lineage.register_file`). The gate compares every
candidate **and the current champion** (downloaded, never trusted) on the same test tracks'
audio through their own graphs: a candidate's clip probabilities are those the evaluate stage
stored for this very file (:mod:`genretag.evaluation.test_scores`); only a model without them (the
champion when it is not among the candidates, a file changed since) is scored from audio here
(:func:`genretag.evaluation.evaluate.score_on_audio`, one decoding per sample rate).
:func:`genretag.evaluation.gate.decide` chooses.

Small data (issue 24): when the test split holds fewer than ``register.cv_below_tracks`` tracks, the candidates
that refit cheaply are cross-validated over every labelled track instead
(:func:`genretag.training.cross_validation.cross_validate_candidates`, ``register.cv_repeats`` x
``register.cv_folds``) and :func:`genretag.evaluation.cv_gate.decide_cross_validated` chooses (the others, e.g. the
Keras families, compared on the test split as above). A promoted cross-validated candidate is refitted on every
labelled track (``models/served/<id>/``) and that refit is registered (tags ``genretag.fitted_on``,
``genretag.refit_of``) and served; a later gate lets the cross-validation of its candidate stand for it while that
candidate is unchanged (the same registered version); a changed candidate faces the refit scored on the test split.

Aliases:

- ``champion``: the model to serve. Only a model that passes the gate's floor (significantly above
  chance, not significantly below the ``register.baseline`` candidate) is ever champion; a challenger
  takes it only with a significant (``register.alpha``) gain of at least ``register.min_improvement``
  in track accuracy. Without a servable model the alias is removed and the registered model's tag
  ``genretag.gate.refusal`` says, in one line, which candidates failed and why: resolving
  ``champion`` (tagging, ``predict``) raises that line.
- ``challenger``: the best servable candidate that is not champion.

The gate refuses to decide when ``register.baseline`` names no candidate or the baseline cannot be
read or scored: the floor would then check chance alone. Nothing is registered and no alias moves;
models/GATE.md and models/registry.json (decision ``refused``) say why in one line, and
:func:`register_candidates` raises RegistryError with that line. ``register.baseline: null`` is the
explicit choice of a chance-only floor.

Decision, evidence (intervals, p-values, floor) and the candidates table go to version tags,
registered-model tags, models/registry.json and models/GATE.md (the model card includes it), and to
a run of the gate's own (:func:`_gate_run`): its figures as run metrics, GATE.md and registry.json as
artifacts, its id on every version it saw (``genretag.gate.run_id``).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genretag.core.config import SERVED_DIR, Layout, Params
from genretag.core.errors import GenretagError, RegistryError
from genretag.onnx.contract import ModelContract, read_contract, require_v2
from genretag.registry.champion import champion_stack, record_champion
from genretag.registry.client import (
    CHALLENGER,
    CHAMPION,
    TAG_ACCURACY,
    TAG_DECISION,
    TAG_EVIDENCE,
    TAG_FLOOR,
    TAG_GATE_REASON,
    TAG_GATE_RULE,
    TAG_GATE_RUN,
    TAG_LIMIT,
    TAG_REASON,
    TAG_REFUSAL,
    TAG_SERVABLE,
    alias_version,
    model_tags,
    now,
    open_client,
)
from genretag.registry.fetch import download_onnx
from genretag.registry.gate_report import (
    GATE_NAME,
    RECORD_NAME,
    REFUSED,
    GateEntry,
    Registration,
    gate_rows,
    refusal_line,
    write_gate_report,
)
from genretag.registry.lineage import register_file

TAG_FITTED_ON = "genretag.fitted_on"  # version tag: what the model was fitted on (a served refit: FITTED_ON_ALL_TAG)
TAG_REFIT_OF = "genretag.refit_of"  # version tag of a served refit: the registry version of the candidate it refits
FITTED_ON_ALL_TAG = "all-labelled-tracks"

if TYPE_CHECKING:
    from genretag.evaluation.evaluate import TestAudio
    from genretag.training.cross_validation import CrossValidation
    from genretag.evaluation.gate import Decision, Evidence
    from genretag.evaluation.paired_tests import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Scored:
    """One candidate file read and scored: its contract, SHA-256 and outcome, or why not."""

    contract: ModelContract | None
    onnx_sha: str
    outcome: Outcome | None
    problem: str


def register_candidates(
    params: Params,
    paths: Layout,
    *,
    candidates: Mapping[str, Path] | None = None,
    record_path: Path | None = None,
    gate_path: Path | None = None,
    before_log: Callable[[], None] | None = None,
) -> Registration:
    """Register every candidate, gate them with the champion on the test audio, move the aliases.

    ``candidates``: id -> model.onnx (default: ``models/candidates/<id>/model.onnx`` of every
    params ``train.candidates`` id; one whose file is missing or unusable is a failed candidate).
    Writes models/registry.json and models/GATE.md. ``before_log`` runs before each model is
    logged (fault injection). Raises RegistryError when there is no candidate at all, or (after
    writing both files, registering nothing and moving no alias) when ``register.baseline`` names no
    candidate or cannot be scored; its message is one line.
    """
    from genretag.evaluation.evaluate import read_test_audio
    from genretag.evaluation.cv_gate import decide_cross_validated
    from genretag.evaluation.gate import Decision, decide

    candidates = dict(candidates if candidates is not None else
                      {c: paths.candidate_dir(c) / "model.onnx" for c in params.train.candidates})
    if not candidates:
        raise RegistryError(f"{paths.models_dir / 'candidates'}: no candidate model.onnx to register (run the train stage first)")
    (paths.models_dir / SERVED_DIR).mkdir(parents=True, exist_ok=True)  # the stage's output, empty under the holdout protocol
    record_path = record_path or paths.models_dir / RECORD_NAME
    gate_path = gate_path or paths.models_dir / GATE_NAME
    settings = params.registry
    name = settings.model_name
    test = read_test_audio(paths, genres=params.genres)
    waveforms: dict = {}  # one decoding per sample rate, for the models scored here
    scored = {c: _score_candidate(paths, c, Path(p), test=test, waveforms=waveforms) for c, p in sorted(candidates.items())}
    client = open_client(params, root=paths.root)
    current = alias_version(client, name=name, alias=CHAMPION)
    previous = str(current.version) if current is not None else None

    if refused := _baseline_refusal(settings.baseline, scored):
        entries = [GateEntry(c, None, s.contract, s.problem) for c, s in scored.items()]
        registration = _registration(params, test, decision=REFUSED, rule="baseline", reason=refused, chosen_version=previous,
                                     chosen=None, previous=previous, rows=gate_rows(entries, None))
        write_gate_report(registration, record_path=record_path, gate_path=gate_path)
        log.error("%s gate: %s", name, refused)
        raise RegistryError(refused)

    entries = [_register(client, params, paths, c, Path(candidates[c]), s, before_log=before_log) for c, s in scored.items()]
    outcomes = {c: s.outcome for c, s in scored.items() if s.outcome is not None}
    cross = _cross_validation(params, paths, test, {c: s.contract.family for c, s in scored.items() if s.outcome is not None and s.contract})
    by_version = {e.version: e.name for e in entries if e.version}
    champion_name = by_version.get(previous) if previous else None
    if previous and champion_name is None and cross is not None:
        champion_name = _refit_of(client, name, previous, cross, candidate_versions={e.name: e.version for e in entries})
    if previous and champion_name is None:
        champion_name = f"champion v{previous}"
        entry, outcome = _score_champion(name, previous, champion_name, test=test, waveforms=waveforms)
        entries.append(entry)
        if outcome is not None:
            outcomes[champion_name] = outcome
    failed = {e.name: e.problem for e in entries if e.problem}
    competing = dict(candidates=[c for c in candidates if c in outcomes], champion=champion_name if champion_name in outcomes else None,
                     baseline=settings.baseline, alpha=settings.alpha, min_improvement=settings.min_improvement,
                     sources=derived_sources(entries))
    if not outcomes:
        decision = None
    elif cross is not None:
        decision = decide_cross_validated(cv=cross.outcomes, test=test.test_set(), outcomes=outcomes, **competing)
    else:
        decision = decide(test=test.test_set(), outcomes=outcomes, **competing)
    reason = decision.reason if decision else refusal_line(failed)
    if champion_name and champion_name in failed:
        reason = f"champion {champion_name} cannot be scored on the test audio ({failed[champion_name]}); {reason}"
    if settings.baseline is None:
        reason += " (register.baseline is null: the floor checked chance only)"
    chosen = decision.champion if decision else None
    chosen_version = previous if decision and decision.action == "keep" else next((e.version for e in entries if e.name == chosen), None)
    if decision and decision.action == "promote" and cross is not None and chosen in cross.outcomes.correct:
        served = _serve_refit(client, params, paths, chosen, candidate_version=chosen_version, before_log=before_log)
        entries.append(served)
        if served.version is None:
            reason = f"{reason}; but its refit on every labelled track failed ({served.problem}): nothing new is served"
            chosen, chosen_version = (champion_name, previous) if previous else (None, None)
        else:
            decision.evidence[served.name] = decision.evidence[chosen]
            decision.protocols[served.name] = decision.protocols.get(chosen, "")  # the refit stands on its family's evidence
            reason = f"{reason}; served: {served.name}, v{served.version}, refitted on all {cross.tracks} labelled tracks"
            chosen, chosen_version = served.name, served.version

    gate_run = _gate_run(client, params, decision=decision, reason=reason, entries=entries)
    for entry in entries:
        if entry.version is None:
            continue
        client.set_model_version_tag(name, entry.version, TAG_GATE_RUN, gate_run)
        verdict = CHAMPION if entry.name == chosen else ("challenger" if decision and entry.name in decision.evidence
                                                          and decision.evidence[entry.name].servable else "refused")
        _version_tags(client, name, entry.version, evidence=decision.evidence.get(entry.name) if decision else None,
                      decision=decision or Decision("none", None, previous, "floor", reason, settings.alpha, settings.min_improvement),
                      verdict=verdict, problem=entry.problem)
    _move_aliases(client, name, decision=decision, entries=entries, chosen_version=chosen_version, previous=previous, reason=reason,
                  failures={**failed, **(decision.failures() if decision else {})})
    registration = _registration(params, test, decision=decision.action if decision else "none", rule=decision.rule if decision else "floor",
                                 reason=reason, chosen_version=chosen_version, chosen=chosen, previous=previous,
                                 rows=gate_rows(entries, decision), cross=cross)
    client.set_registered_model_tag(name, TAG_GATE_RULE, registration.rule)
    client.set_registered_model_tag(name, TAG_GATE_REASON, reason[:TAG_LIMIT])
    write_gate_report(registration, record_path=record_path, gate_path=gate_path)
    for report in (record_path, gate_path):
        client.log_artifact(gate_run, str(report), artifact_path="gate")
    client.set_terminated(gate_run, status="FINISHED")
    log.info("%s gate: %s -> champion %s: %s", name, registration.decision, chosen_version or "none", reason)
    return registration


def _cross_validation(params: Params, paths: Layout, test: TestAudio, families: Mapping[str, str]) -> CrossValidation | None:
    """The cross-validated protocol's outcomes when the test split holds fewer than ``register.cv_below_tracks`` tracks
    and some scored candidate (``families``: id -> its file's family) refits cheaply (:func:`genretag.training.cross_validation.cross_validate_candidates`);
    None: the holdout protocol decides alone."""
    from genretag.training.cross_validation import cross_validate_candidates

    settings = params.registry
    candidates = {c: family for c, family in families.items() if c in params.train.candidates}
    if not (0 < len(test.track_ids) < settings.cv_below_tracks) or not candidates:
        return None
    cross = cross_validate_candidates(params, paths, candidates=candidates)
    if cross.outcomes is None:
        log.info("test split of %d tracks < register.cv_below_tracks %d, but no candidate can be cross-validated (%s): holdout protocol",
                 len(test.track_ids), settings.cv_below_tracks, "; ".join(f"{c}: {w}" for c, w in cross.skipped.items()) or "none")
        return None
    return cross


def _refit_of(client: Any, name: str, version: str, cross: CrossValidation, *, candidate_versions: dict[str, str | None]) -> str | None:
    """The candidate id whose cross-validation stands for champion ``version`` when that version is a refit on every
    labelled track of a cross-validated candidate (tags ``genretag.fitted_on`` and ``genretag.candidate``) that is
    unchanged: its registry version this time (``candidate_versions``: id -> version) is the one the refit was made
    from (tag ``genretag.refit_of``). Else None: the champion is scored on the test split like any other."""
    from genretag.registry.client import TAG_CANDIDATE

    tags = client.get_model_version(name, version).tags
    candidate = tags.get(TAG_CANDIDATE)
    if tags.get(TAG_FITTED_ON) != FITTED_ON_ALL_TAG or candidate not in cross.outcomes.correct:
        return None
    return candidate if candidate_versions.get(candidate) == tags.get(TAG_REFIT_OF) else None


def _serve_refit(client: Any, params: Params, paths: Layout, candidate: str, *, candidate_version: str | None,
                 before_log: Callable[[], None] | None) -> GateEntry:
    """``candidate`` refitted on every labelled track (:func:`genretag.training.cross_validation.refit_on_all_tracks`),
    registered with lineage saying so (``genretag.fitted_on``, ``genretag.refit_of``): the version that serves. A refit
    or export that fails is an unregistered entry with the reason."""
    from genretag.audio.decoding import file_sha256
    from genretag.training.cross_validation import refit_on_all_tracks

    label = f"{candidate} (all tracks)"
    try:
        result = refit_on_all_tracks(params, paths, candidate=candidate)
    except GenretagError as exc:
        return GateEntry(label, None, None, str(exc))
    version = register_file(client, params, paths, candidate=candidate, onnx_path=result.onnx_path, contract=result.contract,
                            onnx_sha=file_sha256(result.onnx_path), before_log=before_log,
                            extra_tags={TAG_FITTED_ON: FITTED_ON_ALL_TAG, TAG_REFIT_OF: candidate_version or "",
                                        "genretag.metrics_note": "metrics.* are the candidate's (fitted on the train split, scored "
                                        "on the test split); this version was refitted on every labelled track"})
    return GateEntry(label, str(version.version), result.contract, "")


def derived_sources(entries: list[GateEntry]) -> dict[str, str]:
    """Derived model -> its source among ``entries``: the entry whose contract ``model_version`` is the
    derived contract's ``derived_from`` (an int8 candidate -> its float32 candidate)."""
    by_version = {e.contract.model_version: e.name for e in entries if e.contract}
    return {e.name: by_version[e.contract.derived_from] for e in entries
            if e.contract and e.contract.derived_from and by_version.get(e.contract.derived_from, e.name) != e.name}


def _baseline_refusal(baseline: str | None, scored: Mapping[str, _Scored]) -> str | None:
    """The gate's one-line refusal when ``baseline`` is set but names no candidate or cannot be scored; else None."""
    if baseline is None:
        return None
    if baseline not in scored:
        return (f"gate refused: baseline {baseline!r} is not among the candidates ({', '.join(scored)}); set register.baseline "
                "to one of train.candidates (null: chance only); no alias moved")
    if scored[baseline].outcome is None:
        why = (scored[baseline].problem.splitlines() or ["unknown reason"])[0]
        return f"gate refused: baseline {baseline!r} cannot be scored ({why}); no alias moved"
    return None


def _score_candidate(paths: Layout, candidate: str, onnx_path: Path, *, test: TestAudio, waveforms: dict) -> _Scored:
    """Read one candidate's contract and its test outcome: the evaluate stage's stored probabilities for this
    very file, else scored from audio here. A file that cannot be read or scored is reported, not fatal."""
    from genretag.audio.decoding import file_sha256
    from genretag.evaluation.evaluate import score_on_audio
    from genretag.evaluation.paired_tests import outcome_from_probabilities
    from genretag.evaluation.test_scores import read_test_scores, scores_path

    try:
        contract = require_v2(read_contract(onnx_path), source=str(onnx_path))
    except GenretagError as exc:
        return _Scored(None, "", None, str(exc))
    onnx_sha = file_sha256(onnx_path)
    probabilities = read_test_scores(scores_path(paths, candidate=candidate), onnx_sha256=onnx_sha, fingerprint=test.fingerprint(),
                                     genres=test.genres, n_clips=len(test))
    if probabilities is None:
        log.info("%s: no test scores stored by the evaluate stage for this file: scoring it on the test audio", candidate)
        try:
            probabilities = score_on_audio(onnx_path, test, waveforms=waveforms).probabilities
        except GenretagError as exc:
            return _Scored(contract, onnx_sha, None, str(exc))
    return _Scored(contract, onnx_sha, outcome_from_probabilities(probabilities, test=test.test_set()), "")


def _register(client: Any, params: Params, paths: Layout, candidate: str, onnx_path: Path, scored: _Scored, *,
              before_log: Callable[[], None] | None) -> GateEntry:
    """The candidate's registry version (registered when its contract reads; unregistered otherwise)."""
    if scored.contract is None:
        return GateEntry(candidate, None, None, scored.problem)
    version = register_file(client, params, paths, candidate=candidate, onnx_path=onnx_path, contract=scored.contract,
                            onnx_sha=scored.onnx_sha, before_log=before_log)
    return GateEntry(candidate, str(version.version), scored.contract, scored.problem)


def _score_champion(name: str, version: str, label: str, *, test: TestAudio, waveforms: dict) -> tuple[GateEntry, Outcome | None]:
    """The current champion (not among the candidates), downloaded and scored on the test audio."""
    from genretag.evaluation.evaluate import score_on_audio

    with tempfile.TemporaryDirectory(prefix="genretag-champion-") as tmp:
        try:
            onnx_path = download_onnx(name, version=version, into=Path(tmp)) / "model.onnx"
            contract = read_contract(onnx_path)
        except GenretagError as exc:
            return GateEntry(label, version, None, str(exc)), None
        try:
            scores = score_on_audio(onnx_path, test, waveforms=waveforms)
        except GenretagError as exc:
            return GateEntry(label, version, contract, str(exc)), None
    return GateEntry(label, version, contract, ""), scores.outcome


def _registration(params: Params, test: TestAudio, *, decision: str, rule: str, reason: str, chosen_version: str | None,
                  chosen: str | None, previous: str | None, rows: list[dict[str, Any]], cross: CrossValidation | None = None) -> Registration:
    from genretag.evaluation.cv_gate import PROTOCOL_CROSS_VALIDATED, PROTOCOL_HOLDOUT

    settings = params.registry
    protocol = {"protocol": PROTOCOL_HOLDOUT, "cv_below_tracks": settings.cv_below_tracks}
    if cross is not None:
        protocol |= {"protocol": PROTOCOL_CROSS_VALIDATED, "cv_tracks": cross.tracks, "cv_clips": cross.clips,
                     "cv_folds": cross.outcomes.folds, "cv_repeats": cross.outcomes.repeats, "cv_skipped": cross.skipped}
    return Registration(**protocol,
        model_name=settings.model_name, decision=decision, rule=rule, reason=reason, champion_version=chosen_version,
        champion=chosen, previous_champion_version=previous, alpha=settings.alpha, min_improvement=settings.min_improvement,
        baseline=settings.baseline, test_tracks=len(test.track_ids), test_clips=len(test), test_fingerprint=test.fingerprint(),
        candidates=rows, decided_at=now(),
    )


def _gate_run(client: Any, params: Params, *, decision: Decision | None, reason: str, entries: list[GateEntry]) -> str:
    """A run of the gate's own (``gate-<model name>``, tag ``genretag.stage: gate``; left running until the reports
    are logged into it): its settings as params, each model's figures as metrics ``<model>.<figure>`` (track and clip
    accuracy with their interval, p against chance and the baseline, servable 0/1, and for a challenger the gain over
    the champion with its p), the decision as tags. Every version it saw gets its id (version tag ``genretag.gate.run_id``)."""
    import time

    from mlflow.entities import Metric, Param, RunTag

    from genretag.core.tracking import EXPERIMENT_NAME

    settings = params.registry
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    run_id = client.create_run(experiment.experiment_id, run_name=f"gate-{settings.model_name}",
                               tags={"genretag.stage": "gate", "genretag.model_name": settings.model_name}).info.run_id
    stamp = int(time.time() * 1000)
    figures: dict[str, float] = {}
    for name, evidence in (decision.evidence.items() if decision else ()):
        model = _metric_prefix(name)
        for metric, interval in evidence.metrics.items():
            figures |= {f"{model}.{metric}": interval.estimate, f"{model}.{metric}_low": interval.low, f"{model}.{metric}_high": interval.high}
        figures |= {f"{model}.chance_p": evidence.chance_p, f"{model}.servable": float(evidence.servable)}
        if evidence.baseline_test is not None:
            figures[f"{model}.baseline_p"] = evidence.baseline_test.p_less
    for name, comparison in (decision.comparisons.items() if decision else ()):
        model = _metric_prefix(name)
        figures |= {f"{model}.gain": comparison.gain.estimate, f"{model}.gain_low": comparison.gain.low,
                    f"{model}.gain_p": comparison.test.p_greater}
    versions = {entry.name: entry.version for entry in entries if entry.version}
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), stamp, 0) for key, value in figures.items()],
        params=[Param("alpha", str(settings.alpha)), Param("min_improvement", str(settings.min_improvement)),
                Param("baseline", str(settings.baseline))],
        tags=[RunTag("genretag.gate.decision", decision.action if decision else "none"),
              RunTag(TAG_GATE_RULE, decision.rule if decision else "floor"), RunTag(TAG_GATE_REASON, reason[:TAG_LIMIT]),
              RunTag("genretag.gate.champion", str(versions.get(decision.champion, "")) if decision and decision.champion else ""),
              RunTag("genretag.gate.versions", json.dumps(versions))],
    )
    return run_id


def _metric_prefix(model: str) -> str:
    """``model`` as an MLflow metric name prefix: the characters MLflow refuses dropped (a refit's entry,
    "mfcc-logreg (all tracks)", logs as "mfcc-logreg all tracks.<figure>")."""
    return re.sub(r"[^\w\-. :/]", "", model)


def _version_tags(client: Any, name: str, version: str, *, evidence: Evidence | None, decision: Decision, verdict: str, problem: str) -> None:
    """The gate's facts on one version; TAG_DECISION last (the mark that this gate finished with it)."""
    if evidence is not None:
        metrics = {key: asdict(value) for key, value in evidence.metrics.items()}
        summary = json.dumps({"metrics": metrics, "chance": evidence.chance, "chance_p": evidence.chance_p,
                              "baseline": evidence.baseline, "baseline_test": asdict(evidence.baseline_test) if evidence.baseline_test else None})
        tags = {TAG_ACCURACY: f"{evidence.metrics['track_accuracy'].estimate:.6f}", TAG_SERVABLE: str(evidence.servable).lower(),
                TAG_FLOOR: evidence.floor, TAG_EVIDENCE: summary[:TAG_LIMIT]}
    else:
        tags = {TAG_SERVABLE: "false", TAG_FLOOR: problem}
    tags |= {TAG_GATE_RULE: decision.rule, TAG_GATE_REASON: decision.reason[:TAG_LIMIT], "genretag.decided_at": now(),
             TAG_REASON: (problem or (evidence.floor if evidence else ""))[:TAG_LIMIT], TAG_DECISION: verdict}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _move_aliases(client: Any, name: str, *, decision: Decision | None, entries: list[GateEntry], chosen_version: str | None,
                  previous: str | None, reason: str, failures: Mapping[str, str]) -> None:
    """champion -> the gate's choice (removed when none is servable); challenger -> the best other servable one."""
    if chosen_version is None:
        client.set_registered_model_tag(name, TAG_REFUSAL, refusal_line(failures)[:TAG_LIMIT])
        if previous is not None:
            client.delete_registered_model_alias(name, CHAMPION)
            record_champion(client, name=name, version="", action="gate-unserve", reason=reason, previous=previous,
                            stack=champion_stack(model_tags(client, name=name)))
    else:
        client.set_registered_model_tag(name, TAG_REFUSAL, "")
        if chosen_version != previous:
            client.set_registered_model_alias(name, CHAMPION, chosen_version)
            record_champion(client, name=name, version=chosen_version, action="gate", reason=reason, previous=previous)
    servable = [] if decision is None else [
        e for e in entries if e.version and e.version != chosen_version and e.name in decision.evidence and decision.evidence[e.name].servable
    ]
    ranked = sorted(servable, key=lambda e: decision.evidence[e.name].metrics["track_accuracy"].estimate, reverse=True)
    if ranked:
        client.set_registered_model_alias(name, CHALLENGER, ranked[0].version)
    elif alias_version(client, name=name, alias=CHALLENGER) is not None:
        client.delete_registered_model_alias(name, CHALLENGER)
