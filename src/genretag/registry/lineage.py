"""One candidate file -> one registry version, with its lineage (data, code, params, metrics) as tags.

A file already registered (same SHA-256, tag ``genretag.onnx_sha256``) is reused, so an interrupted
registration resumes without duplicates. The model is logged as a model of its training run when that run
is in this tracking store (``training.json``'s ``mlflow_run_id``), through the client API, so that the run
is never reopened and still ends when training ended; else into a new run of its own. The test figures
become metrics of that run and of the logged model (``test_*``); the model card's head becomes the
version's description.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from genretag.core.config import Layout, Params
from genretag.onnx.contract import ModelContract
from genretag.registry.client import TAG_CANDIDATE, TAG_LIMIT, TAG_ONNX_SHA, all_versions, mlflow_error

log = logging.getLogger(__name__)

ARTIFACT_NAME = "onnx-model"
REQUIREMENTS = ("onnxruntime", "onnx", "numpy")
# A consumer rebuilding the MLflow model's environment gets the CPU wheel, pinned to the release of
# the GPU build that the tests ran (requirements.lock pins onnxruntime-gpu; both ship each release).
LOCKED_AS = {"onnxruntime": "onnxruntime-gpu"}

_URL_PASSWORD = re.compile(r"(//[^:/@\s]+):[^@/\s]+@")


def pip_requirements(root: Path) -> list[str]:
    """onnxruntime (CPU), onnx and numpy pinned as in ``root``/requirements.lock (installed versions without one)."""
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


def register_file(client: Any, params: Params, paths: Layout, *, candidate: str, onnx_path: Path, contract: ModelContract,
                  onnx_sha: str, before_log: Callable[[], None] | None, extra_tags: dict[str, str] | None = None) -> Any:
    """The ModelVersion holding ``onnx_path`` (SHA-256 ``onnx_sha``): the newest one already registered
    with this very file, else a new one logged with its lineage tags (and ``extra_tags``, e.g. what a refit
    was fitted on). ``before_log`` runs before the model is logged (fault injection)."""
    name = params.registry.model_name
    for version in reversed(all_versions(client, name=name)):
        if version.tags.get(TAG_ONNX_SHA) == onnx_sha:
            log.info("%s: %s is already v%s (same file): reused", candidate, onnx_path, version.version)
            return version
    tags = _lineage_tags(params, paths, candidate=candidate, contract=contract, onnx_sha=onnx_sha) | (extra_tags or {})
    return _log_version(client, params, paths.root, onnx_path=onnx_path, contract=contract, tags=tags,
                        metrics={f"test_{key}".replace("test_test_", "test_"): value
                                 for key, value in candidate_test_metrics(paths, candidate=candidate, contract=contract).items()},
                        before_log=before_log)


def _training_run_id(client: Any, onnx_path: Path) -> str | None:
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
    except mlflow_error():
        log.info("training run %s is not in this tracking store: logging into a new run", run_id)
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def _lineage_tags(params: Params, paths: Layout, *, candidate: str, contract: ModelContract, onnx_sha: str) -> dict[str, str]:
    from genretag.training.provenance import dvc_lock_md5, git_commit

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
    tags.update({f"metrics.{key}": f"{value:.6g}" for key, value in candidate_test_metrics(paths, candidate=candidate, contract=contract).items()})
    return tags


def candidate_test_metrics(paths: Layout, *, candidate: str, contract: ModelContract) -> dict[str, float]:
    """The candidate's test figures: the contract's (parity split, at export) updated by the evaluate stage's
    ``metrics/candidates/<id>.json`` (from audio); logged as run metrics of the version's run and as ``metrics.*``
    version tags."""
    from genretag.training.provenance import read_metrics

    return {key: float(value) for key, value in {**contract.test_metrics, **read_metrics(paths.metrics_dir / "candidates" / f"{candidate}.json")}.items()}


def card_summary(card: Path) -> str:
    """The model card's head (title, the facts table and "Intended use") as a registry version's description
    (Markdown, as MLflow's UI renders it), cut to MLflow's 5,000 characters; "" without a card."""
    if not card.is_file():
        return ""
    lines = card.read_text(encoding="utf-8").splitlines()
    headings = [index for index, line in enumerate(lines) if line.startswith("## ")]
    head = lines[: headings[1]] if len(headings) > 1 else lines
    text = "\n".join(head).strip()
    return text if len(text) <= TAG_LIMIT else text[: TAG_LIMIT - 1] + "…"


def _log_version(client: Any, params: Params, root: Path, *, onnx_path: Path, contract: ModelContract, tags: dict[str, str],
                 metrics: dict[str, float], before_log: Callable[[], None] | None) -> Any:
    """Log the ONNX model as a model of its training run (or of a new run of its own, when that run is not in this
    store) without reopening it, ``metrics`` as that run's and the logged model's metrics, and register it with
    ``tags`` and the model card's summary as its description."""
    import time

    import mlflow
    import onnx
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.models import Model

    from genretag.core.tracking import EXPERIMENT_NAME
    from genretag.handoff import MODEL_CARD_NAME, client_sources
    from genretag.registry import labelled_model

    name = params.registry.model_name
    run_id = _training_run_id(client, onnx_path)
    own_run = run_id is None
    if own_run:  # no training run in this store: a run of its own, ended as soon as the model is registered
        experiment_id = mlflow.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
        run_id = client.create_run(experiment_id, run_name=f"register-{tags[TAG_CANDIDATE]}", tags={"genretag.stage": "register"}).info.run_id
        client.log_batch(run_id, params=[Param(key, value) for key, value in flatten_params(params).items()])
    status = "FAILED"
    try:
        extra = list(client_sources().values())
        card = onnx_path.with_name(MODEL_CARD_NAME)
        if card.is_file():
            extra.append(card)
        if before_log is not None:
            before_log()
        short_tags = {key: value for key, value in tags.items() if key.startswith("genretag.") and len(value) < TAG_LIMIT}
        # run_id and no active run: MLflow 3 links the logged model to the finished training run through the
        # client API, which neither reopens that run nor moves its end time (issue 22: runs end when training ends).
        # The ONNX flavour plus a python_function flavour that answers with labels (labelled_model).
        info = Model.log(
            artifact_path=None,  # MLflow 3: the model is named by ``name``
            name=ARTIFACT_NAME,
            flavor=labelled_model,
            onnx_model=onnx.load(str(onnx_path)),
            model_config=labelled_model.pyfunc_config(contract),
            signature=labelled_model.labelled_signature(contract),
            pip_requirements=pip_requirements(root),
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,
            extra_files=[str(file) for file in extra],
            run_id=run_id,
            tags=short_tags,
        )
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, stamp, 0, model_id=info.model_id) for key, value in metrics.items()],
                         tags=[RunTag(key, value) for key, value in short_tags.items()])
        version = mlflow.register_model(info.model_uri, name, tags=tags)
        if description := card_summary(card):
            version = client.update_model_version(name, str(version.version), description=description)
        status = "FINISHED"
    finally:
        if own_run:
            client.set_terminated(run_id, status=status)
    return version
