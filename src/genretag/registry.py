"""The MLflow model registry: one version per exported model, a champion gate, aliases, fetch.

Registered model ``params.registry.model_name`` (ONNX flavour). Aliases:

- ``champion``: the model to serve. A new version takes it only if its clip accuracy on the
  current test split beats the champion's by at least ``register.min_improvement``. Both
  models are scored here, by the same code, on the same test images: the champion's ONNX file
  is downloaded and re-scored, its old metric is not trusted. The first version is champion.
- ``challenger``: the latest version that did not beat the champion.

Decisions and reasons are version tags (``genretag.decision``, ``genretag.reason``), the version
description, and models/registry.json (the register stage's output). Every change of champion
(gate, ``promote``, ``rollback``) is appended to the registered model's tag
``genretag.champion_history``; ``genretag.champion_stack`` lists the champions in order so that
``rollback`` can restore the previous one. ``promote`` and ``rollback`` do not touch
models/registry.json: it is a DVC output, and changing it would make ``dvc repro`` register again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from genretag.atomic import write_json
from genretag.config import Layout, Params, preprocessing_spec
from genretag.contract import INPUT_NAME, OUTPUT_NAME, ModelContract, read_contract
from genretag.errors import RegistryError
from genretag.export import (
    MODEL_CARD_NAME,
    TestImages,
    dvc_lock_md5,
    git_commit,
    load_test_images,
    onnx_accuracy,
    read_metrics,
)
from genretag.handoff import REFERENCE_NAME, SPECTROGRAM_NAME, reference_source, spectrogram_source, write_bundle
from genretag.tracking import use_tracking

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
ARTIFACT_NAME = "onnx-model"
RECORD_NAME = "registry.json"
REQUIREMENTS = ("onnxruntime", "onnx", "numpy")
# A consumer rebuilding the MLflow model's environment gets the CPU wheel, pinned to the release of
# the GPU build that the tests ran (requirements.lock pins onnxruntime-gpu; both ship each release).
LOCKED_AS = {"onnxruntime": "onnxruntime-gpu"}

TAG_DECISION = "genretag.decision"
TAG_REASON = "genretag.reason"
TAG_ALIAS = "genretag.alias"  # the alias the gate gave at registration
TAG_ACCURACY = "genretag.test_accuracy"
TAG_ONNX_SHA = "genretag.onnx_sha256"
TAG_HISTORY = "genretag.champion_history"
TAG_STACK = "genretag.champion_stack"
HISTORY_KEEP = 200


@dataclass(frozen=True)
class Decision:
    """The outcome of registering one exported model."""

    model_name: str
    version: str
    alias: str  # champion | challenger
    decision: str  # promoted | challenger
    reason: str
    accuracy: float
    champion_version: str | None  # the champion it was compared with (None for the first version)
    champion_accuracy: float | None  # that champion re-scored on the same test clips
    min_improvement: float
    test_clips: int
    test_fingerprint: str
    model_version: str  # weights hash from the ONNX contract
    onnx_sha256: str
    run_id: str
    model_uri: str
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
    """``ref`` is an alias (champion, challenger) or a version number."""
    try:
        if str(ref).isdigit():
            return client.get_model_version(name, str(ref))
        return client.get_model_version_by_alias(name, str(ref))
    except _mlflow_error() as exc:
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


def _training_run_id(client, paths: Layout) -> str | None:
    """models/training.json's mlflow_run_id when that run exists in this tracking store."""
    record = paths.models_dir / "training.json"
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


def _lineage_tags(params: Params, paths: Layout, contract: ModelContract, *, onnx_sha: str, accuracy: float, test: TestImages) -> dict[str, str]:
    tags = {
        "genretag.model_version": contract.model_version,
        "genretag.git_commit": contract.git_commit,
        "genretag.register_git_commit": git_commit(paths.root),
        "genretag.training_data_hash": contract.training_data_hash,
        "genretag.dvc.data_raw_md5": dvc_lock_md5(paths.root, stage="ingest", out="data/raw") or "unknown",
        "genretag.dvc.data_images_md5": dvc_lock_md5(paths.root, stage="spectrograms", out="data/images") or "unknown",
        "genretag.labels": json.dumps(list(contract.labels)),
        "genretag.preprocessing": contract.preprocessing.to_json(),
        TAG_ONNX_SHA: onnx_sha,
        TAG_ACCURACY: f"{accuracy:.6f}",
        "genretag.test_clips": str(len(test)),
        "genretag.test_fingerprint": test.fingerprint(),
    }
    tags.update({f"params.{key}": value for key, value in flatten_params(params).items()})
    metrics = {**contract.test_metrics, **read_metrics(paths.metrics_dir / "eval.json")}
    tags.update({f"metrics.{key}": f"{value:.6g}" for key, value in metrics.items()})
    return tags


def _log_version(
    client, params: Params, paths: Layout, onnx_path: Path, contract: ModelContract, tags: dict[str, str], *, before_log: Callable[[], None] | None
) -> tuple[Any, str]:
    """Log the ONNX model into the training run (or a new run) and register it with ``tags``."""
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    name = params.registry.model_name
    height, width = contract.preprocessing.image_size
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, height, width, 3), INPUT_NAME)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(contract.labels)), OUTPUT_NAME)]),
    )
    run_id = _training_run_id(client, paths)
    resumed = run_id is not None
    run = mlflow.start_run(run_id=run_id) if resumed else mlflow.start_run(run_name=f"register-{contract.model_version}")
    status = "FAILED"
    try:
        if not resumed:
            mlflow.log_params(flatten_params(params))
        mlflow.set_tags({key: value for key, value in tags.items() if key.startswith("genretag.") and len(value) < 5000})
        with tempfile.TemporaryDirectory(prefix="genretag-register-") as tmp:
            extra = [Path(tmp) / SPECTROGRAM_NAME, Path(tmp) / REFERENCE_NAME]
            extra[0].write_bytes(spectrogram_source().read_bytes())
            extra[1].write_bytes(reference_source().read_bytes())
            card = onnx_path.with_name(MODEL_CARD_NAME)
            if card.is_file():
                extra.append(card)
            if before_log is not None:
                before_log()
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)),
                name=ARTIFACT_NAME,
                signature=signature,
                pip_requirements=pip_requirements(paths.root),
                onnx_execution_providers=["CPUExecutionProvider"],
                save_as_external_data=False,
                extra_files=[str(file) for file in extra],
            )
        mlflow.log_metric("onnx_test_accuracy", float(tags[TAG_ACCURACY]))
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        status = "FINISHED"
    finally:
        # A resumed training run stays FINISHED: a failed registration does not fail training.
        mlflow.end_run(status="FINISHED" if resumed else status)
    return version, run.info.run_id


def _incomplete_version(client, name: str, onnx_sha: str):
    """A version of this very file whose registration stopped before the decision (to resume)."""
    for version in reversed(_all_versions(client, name)):
        if version.tags.get(TAG_ONNX_SHA) == onnx_sha and TAG_DECISION not in version.tags:
            return version
    return None


def _gate(
    client, name: str, *, version: str, accuracy: float, contract: ModelContract, test: TestImages, min_improvement: float
) -> tuple[str, str, str | None, float | None]:
    """(alias, reason, champion version, champion accuracy re-scored on ``test``)."""
    champion = _alias_version(client, name, CHAMPION)
    if champion is None or str(champion.version) == version:
        return CHAMPION, f"first version of {name}: no champion to beat (test accuracy {accuracy:.4f})", None, None
    champion_version = str(champion.version)
    with tempfile.TemporaryDirectory(prefix="genretag-champion-") as tmp:
        folder = download_onnx(name, champion_version, Path(tmp))
        champion_contract = read_contract(folder / "model.onnx")
        if champion_contract.preprocessing != contract.preprocessing:
            return (
                CHALLENGER,
                f"champion v{champion_version} expects different preprocessing, so it cannot be scored on the "
                f"current test images and the two are not comparable; kept champion v{champion_version}. "
                f"Promote v{version} by hand (genretag registry promote {version}) if it should serve.",
                champion_version,
                None,
            )
        champion_accuracy = onnx_accuracy(folder / "model.onnx", test, labels=champion_contract.labels)
    gain = accuracy - champion_accuracy
    compared = (
        f"test accuracy {accuracy:.4f} vs champion v{champion_version} {champion_accuracy:.4f} "
        f"(re-scored on the same {len(test)} test clips): {gain:+.4f}"
    )
    if gain >= min_improvement - 1e-9:
        return CHAMPION, f"{compared} >= min_improvement {min_improvement:g}", champion_version, champion_accuracy
    return CHALLENGER, f"{compared} < min_improvement {min_improvement:g}; champion kept", champion_version, champion_accuracy


def register_model(
    params: Params,
    paths: Layout,
    *,
    onnx_path: Path | None = None,
    record_path: Path | None = None,
    before_log: Callable[[], None] | None = None,
) -> Decision:
    """Register models/model.onnx as a new version, run the champion gate, write models/registry.json.

    ``before_log`` runs just before the model is logged (fault injection in flows). A
    registration interrupted after the version was created is resumed, not duplicated.
    """
    onnx_path = onnx_path or paths.onnx_model
    record_path = record_path or paths.models_dir / RECORD_NAME
    contract = read_contract(onnx_path)
    if contract.preprocessing != preprocessing_spec(params):
        raise RegistryError(
            f"{onnx_path}: exported with preprocessing {contract.preprocessing.to_json()}, params.yaml now asks "
            f"for {preprocessing_spec(params).to_json()}; run the export stage again"
        )
    test = load_test_images(paths, image_size=contract.preprocessing.image_size)
    accuracy = onnx_accuracy(onnx_path, test, labels=contract.labels)
    onnx_sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    name = params.registry.model_name

    client = _client(params, paths.root)
    tags = _lineage_tags(params, paths, contract, onnx_sha=onnx_sha, accuracy=accuracy, test=test)
    version = _incomplete_version(client, name, onnx_sha)
    if version is not None:
        log.info("resuming the registration of %s v%s", name, version.version)
        run_id = version.run_id or ""
    else:
        version, run_id = _log_version(client, params, paths, onnx_path, contract, tags, before_log=before_log)
    number = str(version.version)

    if TAG_REASON in version.tags:  # an interrupted attempt had decided already: finish that decision
        alias, reason = version.tags[TAG_ALIAS], version.tags[TAG_REASON]
        champion_version = version.tags.get("genretag.champion_version") or None
        recorded = version.tags.get("genretag.champion_accuracy")
        champion_accuracy = float(recorded) if recorded else None
    else:
        alias, reason, champion_version, champion_accuracy = _gate(
            client, name, version=number, accuracy=accuracy, contract=contract, test=test,
            min_improvement=params.registry.min_improvement,
        )
    decision = Decision(
        model_name=name,
        version=number,
        alias=alias,
        decision="promoted" if alias == CHAMPION else "challenger",
        reason=reason,
        accuracy=accuracy,
        champion_version=champion_version,
        champion_accuracy=champion_accuracy,
        min_improvement=params.registry.min_improvement,
        test_clips=len(test),
        test_fingerprint=test.fingerprint(),
        model_version=contract.model_version,
        onnx_sha256=onnx_sha,
        run_id=run_id,
        model_uri=f"models:/{name}/{number}",
        decided_at=_now(),
    )
    # Order matters for resuming: the decision's facts, then the aliases, then TAG_DECISION (complete).
    for key, value in {
        "genretag.champion_version": champion_version or "",
        "genretag.champion_accuracy": "" if champion_accuracy is None else f"{champion_accuracy:.6f}",
        "genretag.min_improvement": str(params.registry.min_improvement),
        "genretag.decided_at": decision.decided_at,
        TAG_ALIAS: alias,
        TAG_REASON: reason,
    }.items():
        client.set_model_version_tag(name, number, key, value)
    client.update_model_version(name, number, description=reason)
    current = _alias_version(client, name, alias)
    if current is None or str(current.version) != number:
        client.set_registered_model_alias(name, alias, number)
    if alias == CHAMPION:
        history = json.loads(_model_tags(client, name).get(TAG_HISTORY) or "[]")
        if not history or history[-1]["version"] != number:  # not yet recorded by an interrupted attempt
            _record_champion(client, name, version=number, action="gate", reason=reason, previous=champion_version)
        challenger = _alias_version(client, name, CHALLENGER)
        if challenger is not None and str(challenger.version) == number:
            client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, number, TAG_DECISION, decision.decision)
    if run_id:
        client.set_tag(run_id, f"genretag.registered.{name}", f"v{number} {alias}")
    write_json(record_path, asdict(decision))
    log.info("%s v%s -> %s: %s", name, number, alias, reason)
    return decision


# --------------------------------------------------------------------------- list, promote, rollback, fetch


def list_versions(params: Params, *, root: Path) -> list[VersionInfo]:
    """Every version of the registered model, oldest first, with aliases and the gate's decision."""
    client = _client(params, root)
    name = params.registry.model_name
    try:
        aliases = dict(client.get_registered_model(name).aliases)
    except _mlflow_error():
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for version in _all_versions(client, name):
        accuracy = version.tags.get(TAG_ACCURACY)
        rows.append(
            VersionInfo(
                version=str(version.version),
                aliases=tuple(sorted(by_version.get(str(version.version), []))),
                accuracy=float(accuracy) if accuracy else None,
                created=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
                decision=version.tags.get(TAG_DECISION, "incomplete"),
                reason=version.tags.get(TAG_REASON, ""),
                model_version=version.tags.get("genretag.model_version", ""),
                run_id=version.run_id or "",
            )
        )
    return rows


def champion_history(params: Params, *, root: Path) -> list[dict[str, Any]]:
    client = _client(params, root)
    return json.loads(_model_tags(client, params.registry.model_name).get(TAG_HISTORY) or "[]")


def promote(params: Params, *, root: Path, version: str, reason: str) -> ChampionChange:
    """Make ``version`` the champion by hand; the reason is recorded on the version and in the history."""
    client = _client(params, root)
    name = params.registry.model_name
    target = resolve_version(client, name, str(version))
    current = _alias_version(client, name, CHAMPION)
    previous = str(current.version) if current is not None else None
    change = ChampionChange("promote", previous, str(target.version), reason, _now())
    if previous == change.to_version:
        raise RegistryError(f"{name} v{previous} is already the champion")
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
    client = _client(params, root)
    name = params.registry.model_name
    version = resolve_version(client, name, ref)
    with tempfile.TemporaryDirectory(prefix="genretag-fetch-") as tmp:
        folder = download_onnx(name, str(version.version), Path(tmp))
        stored = folder / "extra_files"
        spectrogram_file = stored / SPECTROGRAM_NAME
        reference_file = stored / REFERENCE_NAME
        card = stored / MODEL_CARD_NAME
        write_bundle(
            folder / "model.onnx",
            out,
            max_windows=params.score.max_windows,
            spectrogram_file=spectrogram_file if spectrogram_file.is_file() else None,
            reference_file=reference_file if reference_file.is_file() else None,
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

    from genretag.atomic import atomic_path
    from genretag.config import RegisterParams

    name = model_name or RegisterParams().model_name
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
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
