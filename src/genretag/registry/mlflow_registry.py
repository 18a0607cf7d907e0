"""The MLflow model registry: one version per candidate model, the champion gate, aliases, fetch.

Registered model ``params.registry.model_name`` (ONNX flavour, contract v2). The register stage
registers every candidate under ``models/candidates/<id>/model.onnx`` (any family: musicnn-msd,
mfcc-logreg, paper-exp8, ...) as a version (a file already registered, same SHA-256, is reused, so
an interrupted registration resumes without duplicates), then scores every candidate **and the
current champion** (downloaded, never trusted) on the same test tracks' audio through their own
graphs (:func:`genretag.evaluate.score_on_audio`) and lets :func:`genretag.gate.decide` choose.

Aliases:

- ``champion``: the model to serve. Only a model that passes the gate's floor (significantly above
  chance, not significantly below the ``register.baseline`` family) is ever champion; a challenger
  takes it only with a significant (``register.alpha``) gain of at least ``register.min_improvement``
  in track accuracy. Without a servable model the alias is removed and the registered model's tag
  ``genretag.gate.refusal`` says, in one line, which candidates failed and why: resolving
  ``champion`` (tagging, ``predict``) raises that line.
- ``challenger``: the best servable candidate that is not champion.

Decision, evidence (intervals, p-values, floor) and the candidates table go to version tags,
registered-model tags, models/registry.json and models/GATE.md (the model card includes it). Every
change of champion (gate, ``promote``, ``rollback``) is appended to the registered model's tag
``genretag.champion_history``; ``genretag.champion_stack`` lists the champions in order so that
``rollback`` can restore the previous one. ``promote`` and ``rollback`` do not touch
models/registry.json: it is a DVC output, and changing it would make ``dvc repro`` register again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genretag.core.atomic import write_json, write_text
from genretag.core.config import Layout, Params
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, ModelContract, read_contract, require_v2
from genretag.core.errors import GenretagError, RegistryError
from genretag.core.tracking import point_mlflow, tracking_uri, use_tracking

if TYPE_CHECKING:
    from genretag.evaluation.gate import Decision, Evidence

# Heavy modules (MLflow, pandas, scipy, onnxruntime through evaluate/export/gate/handoff/train) are
# imported inside the functions that use them: `genretag registry list|history` must start in
# about a second (issue 13: <= 3 s as a whole process on 2 cores).

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
ARTIFACT_NAME = "onnx-model"
RECORD_NAME = "registry.json"
GATE_NAME = "GATE.md"
REQUIREMENTS = ("onnxruntime", "onnx", "numpy")
# A consumer rebuilding the MLflow model's environment gets the CPU wheel, pinned to the release of
# the GPU build that the tests ran (requirements.lock pins onnxruntime-gpu; both ship each release).
LOCKED_AS = {"onnxruntime": "onnxruntime-gpu"}

TAG_DECISION = "genretag.decision"  # champion | challenger | refused (the last gate that saw the version)
TAG_REASON = "genretag.reason"
TAG_CANDIDATE = "genretag.candidate"
TAG_ACCURACY = "genretag.track_accuracy"
TAG_SERVABLE = "genretag.gate.servable"
TAG_FLOOR = "genretag.gate.floor"
TAG_EVIDENCE = "genretag.gate.evidence"
TAG_GATE_RULE = "genretag.gate.rule"
TAG_GATE_REASON = "genretag.gate.reason"
TAG_REFUSAL = "genretag.gate.refusal"
TAG_ONNX_SHA = "genretag.onnx_sha256"
TAG_HISTORY = "genretag.champion_history"
TAG_STACK = "genretag.champion_stack"
TAG_SHADOW = "genretag.shadow_report"  # path (from the project root) of the version's shadow report
SHADOW_DIR = "shadow"
HISTORY_KEEP = 200
TAG_LIMIT = 5000  # MLflow's longest tag value


@dataclass(frozen=True)
class Registration:
    """The outcome of one register stage: the gate's decision and every candidate's row."""

    model_name: str
    decision: str  # promote | keep | none
    rule: str
    reason: str
    champion_version: str | None  # after the decision (None: nothing is served)
    champion: str | None  # its candidate id (or ``champion vN`` for an earlier champion)
    previous_champion_version: str | None
    alpha: float
    min_improvement: float
    baseline: str
    test_tracks: int
    test_clips: int
    test_fingerprint: str
    candidates: list[dict[str, Any]]  # one row per model: id, version, family, sample rate, metrics, floor
    decided_at: str


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: tuple[str, ...]
    accuracy: float | None
    created: datetime
    decision: str
    reason: str
    model_version: str
    run_id: str


@dataclass(frozen=True)
class ChampionChange:
    action: str  # promote | rollback
    from_version: str | None
    to_version: str
    reason: str
    at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _client(params: Params, root: Path):
    from mlflow import MlflowClient

    use_tracking(params, root=root)
    return MlflowClient()


def _mlflow_error():
    from mlflow.exceptions import MlflowException

    return MlflowException


# --------------------------------------------------------------------------- look-ups


def _alias_version(client, name: str, alias: str):
    """The ModelVersion behind ``alias``, or None when the alias (or the model) does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except _mlflow_error():
        return None


def resolve_version(client, name: str, ref: str):
    """``ref`` is an alias (champion, challenger) or a version number.

    Raises RegistryError; for a missing ``champion`` after a gate that found nothing servable, its
    message is the gate's one line naming the failed candidates and why.
    """
    try:
        if str(ref).isdigit():
            return client.get_model_version(name, str(ref))
        return client.get_model_version_by_alias(name, str(ref))
    except _mlflow_error() as exc:
        refusal = _model_tags(client, name).get(TAG_REFUSAL) if str(ref) == CHAMPION else None
        if refusal:
            raise RegistryError(f"registered model {name!r} serves no champion: {refusal}") from None
        raise RegistryError(f"registered model {name!r} has no version or alias {ref!r} ({exc.message})") from None


def _all_versions(client, name: str) -> list:
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=200, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    return sorted(versions, key=lambda v: int(v.version))


def _model_tags(client, name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(name).tags)
    except _mlflow_error():
        return {}


def _stack(tags: dict[str, str]) -> list[str]:
    return [str(v) for v in json.loads(tags.get(TAG_STACK) or "[]")]


def actor() -> str:
    """Who acts: the operating-system user of this process ("unknown user" where there is none)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown user"


def _record_champion(client, name: str, *, version: str, action: str, reason: str, previous: str | None, stack: list[str] | None = None) -> None:
    """Append to the champion history; push ``version`` on the stack (or store ``stack`` as given)."""
    tags = _model_tags(client, name)
    history = json.loads(tags.get(TAG_HISTORY) or "[]")
    history.append({"version": version, "action": action, "from": previous, "reason": reason, "at": _now(), "by": actor()})
    if stack is None:
        stack = _stack(tags)
        if previous is not None and (not stack or stack[-1] != previous):
            stack.append(previous)  # the alias was moved outside genretag: keep the chain
        if not stack or stack[-1] != version:
            stack.append(version)
    client.set_registered_model_tag(name, TAG_HISTORY, json.dumps(history[-HISTORY_KEEP:]))
    client.set_registered_model_tag(name, TAG_STACK, json.dumps(stack[-HISTORY_KEEP:]))


def download_onnx(name: str, version: str, into: Path) -> Path:
    """Download version ``version``'s model folder into ``into``; returns the folder."""
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(into))
    except Exception as exc:  # noqa: BLE001 - artifact stores raise many types
        raise RegistryError(f"models:/{name}/{version}: cannot download the model ({exc})") from exc
    folder = Path(local)
    if not (folder / "model.onnx").is_file():
        raise RegistryError(f"models:/{name}/{version}: holds no model.onnx")
    return folder


# --------------------------------------------------------------------------- register


def pip_requirements(root: Path) -> list[str]:
    """onnxruntime (CPU), onnx and numpy pinned as in requirements.lock (installed versions without one)."""
    pins: dict[str, str] = {}
    lock = root / "requirements.lock"
    if lock.is_file():
        for line in lock.read_text(encoding="utf-8").splitlines():
            spec = line.split("#", 1)[0].strip()
            if "==" in spec:
                package, version = spec.split("==", 1)
                pins[package.strip().lower()] = version.strip()
    requirements = []
    for package in REQUIREMENTS:
        locked = LOCKED_AS.get(package, package)
        version = pins.get(package) or pins.get(locked)
        if version is None:
            try:
                version = metadata.version(locked)
            except metadata.PackageNotFoundError:
                requirements.append(package)
                continue
        requirements.append(f"{package}=={version}")
    return requirements


_URL_PASSWORD = re.compile(r"(//[^:/@\s]+):[^@/\s]+@")


def flatten_params(params: Params) -> dict[str, str]:
    """params.yaml as ``section.key -> text`` (lists as JSON, passwords in URLs masked)."""
    out: dict[str, str] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) or value is None else str(value)
            out[prefix[:-1]] = _URL_PASSWORD.sub(r"\1:***@", text)

    walk(params.model_dump(mode="json", by_alias=True), "")
    return out


def _training_run_id(client, onnx_path: Path) -> str | None:
    """``training.json``'s mlflow_run_id beside the candidate's ONNX file, when that run exists in this store."""
    record = onnx_path.parent / "training.json"
    try:
        run_id = json.loads(record.read_text(encoding="utf-8")).get("mlflow_run_id")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    if not run_id:
        return None
    try:
        run = client.get_run(str(run_id))
    except _mlflow_error():
        log.info("training run %s is not in this tracking store: logging into a new run", run_id)
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def _lineage_tags(params: Params, paths: Layout, candidate: str, onnx_path: Path, contract: ModelContract, *, onnx_sha: str) -> dict[str, str]:
    from genretag.training.provenance import dvc_lock_md5, git_commit, read_metrics

    tags = {
        TAG_CANDIDATE: candidate,
        "genretag.family": contract.family,
        "genretag.contract_version": str(contract.contract_version),
        "genretag.sample_rate": str(contract.sample_rate),
        "genretag.model_version": contract.model_version,
        "genretag.quantization": contract.quantization,
        "genretag.derived_from": contract.derived_from,
        "genretag.git_commit": contract.git_commit,
        "genretag.register_git_commit": git_commit(paths.root),
        "genretag.training_data_hash": contract.training_data_hash,
        "genretag.dvc.data_raw_md5": dvc_lock_md5(paths.root, stage="ingest", out="data/raw") or "unknown",
        "genretag.labels": json.dumps(list(contract.labels)),
        "genretag.preprocessing": json.dumps(contract.preprocessing, sort_keys=True),
        TAG_ONNX_SHA: onnx_sha,
    }
    tags.update({f"params.{key}": value for key, value in flatten_params(params).items()})
    metrics = {**contract.test_metrics, **read_metrics(paths.metrics_dir / "candidates" / f"{candidate}.json")}
    tags.update({f"metrics.{key}": f"{value:.6g}" for key, value in metrics.items()})
    return tags


def _log_version(client, params: Params, root: Path, onnx_path: Path, contract: ModelContract, tags: dict[str, str], *, before_log: Callable[[], None] | None):
    """Log the ONNX model into its training run (or a new run) and register it with ``tags``."""
    import mlflow
    import mlflow.onnx
    import numpy as np
    import onnx
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from genretag.training.card import MODEL_CARD_NAME
    from genretag.handoff import client_sources

    name = params.registry.model_name
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, contract.clip_samples), INPUT_NAME)]),
        outputs=Schema([
            TensorSpec(np.dtype(np.float32), (-1, len(contract.labels)), OUTPUT_NAME),
            TensorSpec(np.dtype(np.float32), (-1, -1), EMBEDDING_NAME),
        ]),
    )
    run_id = _training_run_id(client, onnx_path)
    resumed = run_id is not None
    mlflow.start_run(run_id=run_id, run_name=None if resumed else f"register-{tags[TAG_CANDIDATE]}")  # run_id None: a new run
    status = "FAILED"
    try:
        if not resumed:
            mlflow.log_params(flatten_params(params))
        mlflow.set_tags({key: value for key, value in tags.items() if key.startswith("genretag.") and len(value) < TAG_LIMIT})
        extra = list(client_sources().values())
        card = onnx_path.with_name(MODEL_CARD_NAME)
        if card.is_file():
            extra.append(card)
        if before_log is not None:
            before_log()
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name=ARTIFACT_NAME,
            signature=signature,
            pip_requirements=pip_requirements(root),
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,
            extra_files=[str(file) for file in extra],
        )
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        status = "FINISHED"
    finally:
        # A resumed training run stays FINISHED: a failed registration does not fail training.
        mlflow.end_run(status="FINISHED" if resumed else status)
    return version


def _version_of_file(client, name: str, onnx_sha: str):
    """The newest version already holding this very file (a resumed or repeated registration), or None."""
    for version in reversed(_all_versions(client, name)):
        if version.tags.get(TAG_ONNX_SHA) == onnx_sha:
            return version
    return None


@dataclass(frozen=True)
class _Entry:
    """One model in the gate: a candidate file or the downloaded champion."""

    name: str
    version: str | None
    contract: ModelContract | None
    problem: str  # why it could not be registered or scored ("" when fine)


def _candidate_entry(client, params: Params, paths: Layout, candidate: str, onnx_path: Path, *, before_log) -> _Entry:
    """Register (or find) one candidate; a file that is not a contract-v2 genretag model is reported, not fatal."""
    try:
        contract = require_v2(read_contract(onnx_path), source=str(onnx_path))
    except GenretagError as exc:
        return _Entry(candidate, None, None, str(exc))
    onnx_sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    name = params.registry.model_name
    version = _version_of_file(client, name, onnx_sha)
    if version is None:
        tags = _lineage_tags(params, paths, candidate, onnx_path, contract, onnx_sha=onnx_sha)
        version = _log_version(client, params, paths.root, onnx_path, contract, tags, before_log=before_log)
    else:
        log.info("%s: %s is already v%s (same file): reused", candidate, onnx_path, version.version)
    return _Entry(candidate, str(version.version), contract, "")


def derived_sources(entries: list[_Entry]) -> dict[str, str]:
    """Derived model -> its source among ``entries``: the entry whose contract ``model_version`` is the
    derived contract's ``derived_from`` (an int8 candidate -> its float32 candidate)."""
    by_version = {e.contract.model_version: e.name for e in entries if e.contract}
    return {e.name: by_version[e.contract.derived_from] for e in entries
            if e.contract and e.contract.derived_from and by_version.get(e.contract.derived_from, e.name) != e.name}


def _version_tags(client, name: str, version: str, *, evidence: Evidence | None, decision: Decision, verdict: str, problem: str) -> None:
    """The gate's facts on one version; TAG_DECISION last (the mark that this gate finished with it)."""
    if evidence is not None:
        metrics = {key: asdict(value) for key, value in evidence.metrics.items()}
        summary = json.dumps({"metrics": metrics, "chance": evidence.chance, "chance_p": evidence.chance_p,
                              "baseline": evidence.baseline, "baseline_test": asdict(evidence.baseline_test) if evidence.baseline_test else None})
        tags = {TAG_ACCURACY: f"{evidence.metrics['track_accuracy'].estimate:.6f}", TAG_SERVABLE: str(evidence.servable).lower(),
                TAG_FLOOR: evidence.floor, TAG_EVIDENCE: summary[:TAG_LIMIT]}
    else:
        tags = {TAG_SERVABLE: "false", TAG_FLOOR: problem}
    tags |= {TAG_GATE_RULE: decision.rule, TAG_GATE_REASON: decision.reason[:TAG_LIMIT], "genretag.decided_at": _now(),
             TAG_REASON: (problem or (evidence.floor if evidence else ""))[:TAG_LIMIT], TAG_DECISION: verdict}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _refusal(failures: Mapping[str, str]) -> str:
    listed = "; ".join(f"{name}: {why}" for name, why in failures.items()) or "no candidate under models/candidates"
    return f"no servable model: every candidate failed the gate ({listed}); see models/GATE.md"


def _rows(entries: list[_Entry], decision: Decision | None) -> list[dict[str, Any]]:
    rows = []
    for entry in entries:
        evidence = decision.evidence.get(entry.name) if decision else None
        row: dict[str, Any] = {
            "model": entry.name, "version": entry.version,
            "family": entry.contract.family if entry.contract else "",
            "sample_rate": entry.contract.sample_rate if entry.contract else None,
            "servable": bool(evidence and evidence.servable),
            "floor": evidence.floor if evidence else entry.problem,
        }
        if evidence is not None:
            row |= {key: asdict(value) for key, value in evidence.metrics.items()}
            row |= {"chance": evidence.chance, "chance_p": evidence.chance_p,
                    "baseline_p": evidence.baseline_test.p_less if evidence.baseline_test else None}
        comparison = decision.comparisons.get(entry.name) if decision else None
        if comparison is not None:
            row |= {"gain": asdict(comparison.gain), "mcnemar": asdict(comparison.test), "level": comparison.level}
        rows.append(row)
    return rows


def gate_markdown(registration: Registration) -> str:
    """models/GATE.md: the decision with its rule and numbers, and the candidates table (intervals at 1 - alpha)."""
    confidence = 100 * (1 - registration.alpha)
    champion = f"v{registration.champion_version} ({registration.champion})" if registration.champion_version else "none: nothing is served"
    lines = [
        "## Champion gate", "",
        f"Decision: **{registration.decision}** (rule `{registration.rule}`); champion after it: **{champion}**.", "",
        registration.reason, "",
        f"Test split {registration.test_fingerprint}: {registration.test_tracks} tracks, {registration.test_clips} clips, scored from "
        f"audio through each model's ONNX graph at its own sample rate. alpha {registration.alpha:g}, min_improvement "
        f"{registration.min_improvement:g}, baseline `{registration.baseline}`. Intervals: {confidence:g} % paired bootstrap over "
        "test tracks (Efron & Tibshirani 1993); comparisons: exact McNemar on paired track outcomes (McNemar 1947; Dietterich 1998).", "",
        "| model | version | family | rate (Hz) | track accuracy | track macro-F1 | clip accuracy | clip macro-F1 | above chance p | servable | floor |",
        "| --- | --- | --- | ---: | --- | --- | --- | --- | ---: | --- | --- |",
    ]

    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "" if not value else f"{100 * value['estimate']:.1f} [{100 * value['low']:.1f}, {100 * value['high']:.1f}]"

    for row in registration.candidates:
        p = row.get("chance_p")
        lines.append(
            f"| {row['model']} | {row['version'] or ''} | {row['family']} | {row['sample_rate'] or ''} | {cell(row, 'track_accuracy')} "
            f"| {cell(row, 'track_macro_f1')} | {cell(row, 'clip_accuracy')} | {cell(row, 'clip_macro_f1')} "
            f"| {'' if p is None else f'{p:.3g}'} | {'yes' if row['servable'] else 'no'} | {row['floor']} |"
        )
    return "\n".join(lines) + "\n"


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
    logged (fault injection). Raises RegistryError when there is no candidate at all.
    """
    from genretag.evaluation.evaluate import read_test_audio, score_on_audio
    from genretag.evaluation.gate import Decision, decide
    from genretag.training.train import candidate_dir

    candidates = dict(candidates if candidates is not None else
                      {c: candidate_dir(paths, c) / "model.onnx" for c in params.train.candidates})
    if not candidates:
        raise RegistryError(f"{paths.models_dir / 'candidates'}: no candidate model.onnx to register (run the train stage first)")
    record_path = record_path or paths.models_dir / RECORD_NAME
    gate_path = gate_path or paths.models_dir / GATE_NAME
    settings = params.registry
    name = settings.model_name
    test = read_test_audio(paths, genres=params.genres)
    client = _client(params, paths.root)

    entries = [_candidate_entry(client, params, paths, c, Path(p), before_log=before_log) for c, p in sorted(candidates.items())]
    current = _alias_version(client, name, CHAMPION)
    previous = str(current.version) if current is not None else None
    by_version = {e.version: e.name for e in entries if e.version}
    champion_name = by_version.get(previous) if previous else None
    outcomes, problems, waveforms = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="genretag-champion-") as tmp:
        models = {e.name: candidates[e.name] for e in entries if not e.problem}
        if previous and champion_name is None:
            champion_name = f"champion v{previous}"
            try:
                models[champion_name] = download_onnx(name, previous, Path(tmp)) / "model.onnx"
                entries.append(_Entry(champion_name, previous, read_contract(models[champion_name]), ""))
            except GenretagError as exc:
                entries.append(_Entry(champion_name, previous, None, str(exc)))
        for model, onnx_path in models.items():
            try:
                outcomes[model] = score_on_audio(onnx_path, test, waveforms=waveforms).outcome
            except GenretagError as exc:
                problems[model] = str(exc)
    entries = [e if e.name not in problems else _Entry(e.name, e.version, e.contract, problems[e.name]) for e in entries]
    failed = {e.name: e.problem for e in entries if e.problem}
    scored_champion = champion_name if champion_name in outcomes else None
    baseline = settings.baseline if settings.baseline in outcomes else None
    decision = decide(
        test=test.test_set(), outcomes=outcomes, candidates=[c for c in candidates if c in outcomes],
        champion=scored_champion, baseline=baseline, alpha=settings.alpha, min_improvement=settings.min_improvement,
        sources=derived_sources(entries),
    ) if outcomes else None
    reason = decision.reason if decision else _refusal(failed)
    if champion_name and champion_name in failed:
        reason = f"champion {champion_name} cannot be scored on the test audio ({failed[champion_name]}); {reason}"
    if settings.baseline not in candidates:
        reason += f" (no {settings.baseline} baseline among the candidates: the floor checked chance only)"
    chosen = decision.champion if decision else None
    chosen_version = next((e.version for e in entries if e.name == chosen), None)

    for entry in entries:
        if entry.version is None:
            continue
        verdict = CHAMPION if entry.name == chosen else ("challenger" if decision and entry.name in decision.evidence
                                                          and decision.evidence[entry.name].servable else "refused")
        _version_tags(client, name, entry.version, evidence=decision.evidence.get(entry.name) if decision else None,
                      decision=decision or Decision("none", None, previous, "floor", reason, settings.alpha, settings.min_improvement),
                      verdict=verdict, problem=entry.problem)
    _move_aliases(client, name, decision=decision, entries=entries, chosen_version=chosen_version, previous=previous, reason=reason,
                  failures={**failed, **(decision.failures() if decision else {})})
    registration = Registration(
        model_name=name, decision=decision.action if decision else "none", rule=decision.rule if decision else "floor",
        reason=reason, champion_version=chosen_version, champion=chosen, previous_champion_version=previous,
        alpha=settings.alpha, min_improvement=settings.min_improvement, baseline=settings.baseline,
        test_tracks=len(test.track_ids), test_clips=len(test), test_fingerprint=test.fingerprint(),
        candidates=_rows(entries, decision), decided_at=_now(),
    )
    client.set_registered_model_tag(name, TAG_GATE_RULE, registration.rule)
    client.set_registered_model_tag(name, TAG_GATE_REASON, reason[:TAG_LIMIT])
    write_json(record_path, asdict(registration))
    write_text(gate_path, gate_markdown(registration))
    log.info("%s gate: %s -> champion %s: %s", name, registration.decision, chosen_version or "none", reason)
    return registration


def _move_aliases(client, name: str, *, decision: Decision | None, entries: list[_Entry], chosen_version: str | None,
                  previous: str | None, reason: str, failures: Mapping[str, str]) -> None:
    """champion -> the gate's choice (removed when none is servable); challenger -> the best other servable one."""
    if chosen_version is None:
        client.set_registered_model_tag(name, TAG_REFUSAL, _refusal(failures)[:TAG_LIMIT])
        if previous is not None:
            client.delete_registered_model_alias(name, CHAMPION)
            _record_champion(client, name, version="", action="gate-unserve", reason=reason, previous=previous, stack=_stack(_model_tags(client, name)))
    else:
        client.set_registered_model_tag(name, TAG_REFUSAL, "")
        if chosen_version != previous:
            client.set_registered_model_alias(name, CHAMPION, chosen_version)
            _record_champion(client, name, version=chosen_version, action="gate", reason=reason, previous=previous)
    servable = [] if decision is None else [
        e for e in entries if e.version and e.version != chosen_version and e.name in decision.evidence and decision.evidence[e.name].servable
    ]
    ranked = sorted(servable, key=lambda e: decision.evidence[e.name].metrics["track_accuracy"].estimate, reverse=True)
    if ranked:
        client.set_registered_model_alias(name, CHALLENGER, ranked[0].version)
    elif _alias_version(client, name, CHALLENGER) is not None:
        client.delete_registered_model_alias(name, CHALLENGER)

# --------------------------------------------------------------------------- list, promote, rollback, fetch


def list_versions(params: Params, *, root: Path) -> list[VersionInfo]:
    """Every version of the registered model, oldest first, with aliases and the gate's decision.

    A SQLite store (the default) is read directly with the standard library's sqlite3, read-only,
    from MLflow's own tables (``model_versions``, ``model_version_tags``, ``registered_model_aliases``;
    mlflow/store/model_registry/dbmodels/models.py): importing MLflow alone takes several seconds
    here. Any other store (a tracking server) goes through MlflowClient.
    """
    name = params.registry.model_name
    uri = tracking_uri(params, root=root)
    stored = _read_sqlite_registry(uri, name) if uri.startswith("sqlite:///") else _read_client_registry(params, root, name)
    if stored is None:
        return []
    aliases, versions = stored
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    return [
        VersionInfo(
            version=version,
            aliases=tuple(sorted(by_version.get(version, []))),
            accuracy=float(tags[TAG_ACCURACY]) if tags.get(TAG_ACCURACY) else None,
            created=datetime.fromtimestamp(created_ms / 1000, UTC),
            decision=tags.get(TAG_DECISION, "incomplete"),
            reason=tags.get(TAG_REASON, ""),
            model_version=tags.get("genretag.model_version", ""),
            run_id=run_id or "",
        )
        for version, created_ms, run_id, tags in sorted(versions, key=lambda row: int(row[0]))
    ]


_StoredVersion = tuple[str, int, str | None, dict[str, str]]  # version, created (ms since epoch), run id, tags


def _read_sqlite_registry(uri: str, name: str) -> tuple[dict[str, str], list[_StoredVersion]] | None:
    """(alias -> version, versions) of ``name`` in a SQLite MLflow store; None when the file, its
    registry tables or the model do not exist. Versions MLflow deleted (stage ``Deleted_Internal``) are left out."""
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.is_file():
        return None
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            if connection.execute("SELECT 1 FROM registered_models WHERE name = ?", (name,)).fetchone() is None:
                return None
            aliases = dict(connection.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?", (name,)).fetchall())
            tags: dict[str, dict[str, str]] = {}
            for version, key, value in connection.execute("SELECT version, key, value FROM model_version_tags WHERE name = ?", (name,)):
                tags.setdefault(str(version), {})[key] = value or ""
            rows = connection.execute(
                "SELECT version, creation_time, run_id FROM model_versions WHERE name = ? AND current_stage != 'Deleted_Internal'",
                (name,),
            ).fetchall()
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # a tracking store in which nothing was ever registered
        raise RegistryError(f"registry database {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise RegistryError(f"registry database {path}: {exc}") from exc
    return ({alias: str(version) for alias, version in aliases.items()},
            [(str(version), int(created or 0), run_id, tags.get(str(version), {})) for version, created, run_id in rows])


def _read_client_registry(params: Params, root: Path, name: str) -> tuple[dict[str, str], list[_StoredVersion]] | None:
    """The same as :func:`_read_sqlite_registry` through MlflowClient (a tracking server)."""
    client = _client(params, root)
    try:
        aliases = {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    except _mlflow_error():
        return None
    return aliases, [(str(v.version), int(v.creation_timestamp), v.run_id, dict(v.tags)) for v in _all_versions(client, name)]


def version_number(params: Params, *, root: Path, ref: str, versions: Sequence[VersionInfo] | None = None) -> str:
    """The version number behind ``ref`` (a number, champion or challenger), read as :func:`list_versions` reads
    (``versions``: its result when the caller already has it; None reads it).

    Raises RegistryError when no version has that number or alias.
    """
    for row in list_versions(params, root=root) if versions is None else versions:
        if str(ref) == row.version or str(ref) in row.aliases:
            return row.version
    raise RegistryError(f"registered model {params.registry.model_name!r} has no version or alias {ref!r}")


def shadow_report_path(root: Path, *, version: str) -> Path:
    """``models/shadow/v<version>.json`` (the markdown beside it, ``.md``): the version's shadow report.

    Kept beside models/registry.json, never inside it: that file is the register stage's DVC
    output, and changing it would make ``dvc repro`` register again. The version's MLflow tag
    ``genretag.shadow_report`` names the file too.
    """
    from genretag.core.config import layout

    return layout(root).models_dir / SHADOW_DIR / f"v{version}.json"


def store_shadow_report(params: Params, *, root: Path, version: str, report: Mapping[str, Any], markdown: str) -> Path:
    """Write version ``version``'s shadow report (JSON and markdown, each atomically) and tag the
    version with its path relative to ``root``; returns the JSON path."""
    path = shadow_report_path(root, version=version)
    write_json(path, dict(report))
    write_text(path.with_suffix(".md"), markdown)
    client = _client(params, root)
    client.set_model_version_tag(params.registry.model_name, str(version), TAG_SHADOW, path.relative_to(root).as_posix())
    return path


def read_shadow_report(root: Path, *, version: str) -> str | None:
    """The markdown of version ``version``'s shadow report, or None when there is none."""
    path = shadow_report_path(root, version=version).with_suffix(".md")
    return path.read_text(encoding="utf-8") if path.is_file() else None


def champion_history(params: Params, *, root: Path) -> list[dict[str, Any]]:
    client = _client(params, root)
    return json.loads(_model_tags(client, params.registry.model_name).get(TAG_HISTORY) or "[]")


def _promotion(client, name: str, version: str):
    """(the version to promote, the current champion or None); RegistryError when it cannot be promoted:
    it failed the gate's floor (never served, not even by hand) or it is the champion already."""
    target = resolve_version(client, name, str(version))
    if target.tags.get(TAG_SERVABLE) == "false":
        raise RegistryError(f"{name} v{target.version} failed the gate's floor and is never served: {target.tags.get(TAG_FLOOR, '')}")
    current = _alias_version(client, name, CHAMPION)
    if current is not None and str(current.version) == str(target.version):
        raise RegistryError(f"{name} v{target.version} is already the champion")
    return target, current


def check_promotable(params: Params, *, root: Path, version: str) -> None:
    """Raise RegistryError (one line) when :func:`promote` would refuse ``version``; else nothing."""
    _promotion(_client(params, root), params.registry.model_name, version)


def promote(params: Params, *, root: Path, version: str, reason: str) -> ChampionChange:
    """Make ``version`` the champion by hand, outside the gate's promotion rule but never past its floor
    (:func:`check_promotable`); the reason is recorded on the version and in the history."""
    client = _client(params, root)
    name = params.registry.model_name
    target, current = _promotion(client, name, version)
    previous = str(current.version) if current is not None else None
    change = ChampionChange("promote", previous, str(target.version), reason, _now())
    client.set_registered_model_alias(name, CHAMPION, change.to_version)
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == change.to_version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, change.to_version, "genretag.promoted", json.dumps(asdict(change)))
    _record_champion(client, name, version=change.to_version, action="promote", reason=reason, previous=previous)
    log.info("%s v%s promoted to champion by hand (was v%s): %s", name, change.to_version, previous, reason)
    return change


def rollback(params: Params, *, root: Path, reason: str) -> ChampionChange:
    """Give the champion alias back to the previous champion; the reason is recorded."""
    client = _client(params, root)
    name = params.registry.model_name
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"registered model {name!r} has no champion to roll back")
    current = str(champion.version)
    stack = _stack(_model_tags(client, name))
    if not stack or stack[-1] != current:
        stack.append(current)
    stack.pop()
    while stack:
        try:
            client.get_model_version(name, stack[-1])
            break
        except _mlflow_error():
            stack.pop()  # deleted since
    if not stack:
        raise RegistryError(f"{name}: no previous champion to roll back to (v{current} is the only one)")
    change = ChampionChange("rollback", current, stack[-1], reason, _now())
    client.set_registered_model_alias(name, CHAMPION, change.to_version)
    client.set_model_version_tag(name, current, "genretag.rolled_back", json.dumps(asdict(change)))
    client.set_model_version_tag(name, change.to_version, "genretag.restored", json.dumps(asdict(change)))
    _record_champion(client, name, version=change.to_version, action="rollback", reason=reason, previous=current, stack=stack)
    log.info("%s champion rolled back from v%s to v%s: %s", name, current, change.to_version, reason)
    return change


def fetch(params: Params, *, root: Path, ref: str, out: Path) -> Path:
    """Write the handoff bundle of ``ref`` (champion, challenger or a version number) into ``out``."""
    from genretag.training.card import MODEL_CARD_NAME
    from genretag.handoff import write_bundle

    client = _client(params, root)
    name = params.registry.model_name
    version = resolve_version(client, name, ref)
    with tempfile.TemporaryDirectory(prefix="genretag-fetch-") as tmp:
        folder = download_onnx(name, str(version.version), Path(tmp))
        stored = folder / "extra_files"
        card = stored / MODEL_CARD_NAME
        write_bundle(
            folder / "model.onnx",
            out,
            max_windows=params.score.max_windows,
            silence_rms_dbfs=params.validation.silence_rms_dbfs,
            client_dir=stored,
            model_card=card if card.is_file() else None,
            registry_version=str(version.version),
        )
    return out


def fetch_onnx(ref: str, *, tracking_uri: str | None = None, model_name: str | None = None) -> Path:
    """A local copy of version/alias ``ref``'s model.onnx (used by ``genretag.scoring.resolve_model``).

    Registry versions never change, so each is downloaded once into a cache folder
    ($GENRETAG_MODEL_CACHE, else ``<tmp>/genretag-models``) keyed by tracking URI, model name
    and version; a cached file whose SHA-256 differs from the version's tag is fetched again.
    """
    import os
    import shutil

    import mlflow
    from mlflow import MlflowClient

    from genretag.core.atomic import atomic_path
    from genretag.core.config import RegisterParams

    name = model_name or RegisterParams().model_name
    if tracking_uri:
        point_mlflow(tracking_uri)
    uri = mlflow.get_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = resolve_version(client, name, ref)
    cache_root = Path(os.environ.get("GENRETAG_MODEL_CACHE") or Path(tempfile.gettempdir()) / "genretag-models")
    target = cache_root / hashlib.sha256(uri.encode()).hexdigest()[:12] / name / str(version.version) / "model.onnx"
    wanted = version.tags.get(TAG_ONNX_SHA)
    if target.is_file() and (not wanted or hashlib.sha256(target.read_bytes()).hexdigest() == wanted):
        return target
    with tempfile.TemporaryDirectory(prefix="genretag-fetch-") as tmp:
        folder = download_onnx(name, str(version.version), Path(tmp))
        with atomic_path(target) as partial:
            shutil.copyfile(folder / "model.onnx", partial)
    log.info("fetched %s v%s (%s) to %s", name, version.version, ref, target)
    return target
