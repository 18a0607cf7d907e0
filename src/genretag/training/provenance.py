"""Provenance of an exported model: what it was trained on (the DVC-tracked data and the clip split),
from which commit, and the metrics files the registry attaches to a version."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from genretag.core.config import Layout
from genretag.core.errors import ExportError


def dvc_lock_md5(root: Path, *, stage: str, out: str) -> str | None:
    """The md5 DVC recorded in dvc.lock for output ``out`` of ``stage`` (None when unknown)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    except yaml.YAMLError:
        return None
    for entry in (stages.get(stage) or {}).get("outs", []) or []:
        if isinstance(entry, dict) and entry.get("path") == out and entry.get("md5"):
            return str(entry["md5"])
    return None


def training_data_hash(paths: Layout) -> str:
    """What a model was trained on: ``dvc-md5:<md5 of data/raw>`` (the ingest stage's output in dvc.lock)
    and ``clips-sha256:<16 hex of data/clips.csv>`` (which clips, which split), joined by ``+``;
    a part that is unknown is left out, "unknown" when both are."""
    parts = []
    md5 = dvc_lock_md5(paths.root, stage="ingest", out="data/raw")
    if md5:
        parts.append(f"dvc-md5:{md5}")
    if paths.clips.is_file():
        parts.append(f"clips-sha256:{hashlib.sha256(paths.clips.read_bytes()).hexdigest()[:16]}")
    return "+".join(parts) or "unknown"


DIRTY = "+dirty"  # suffix of a commit whose work tree had local changes


def git_commit(root: Path) -> str:
    """``git rev-parse HEAD`` of ``root``, with ``+dirty`` when tracked files differ from HEAD
    (``git status --porcelain --untracked-files=no``); "unknown" outside git or before the first commit."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=20, check=False
        )
        if done.returncode != 0 or len(done.stdout.strip()) < 7:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() + (DIRTY if status.stdout.strip() else "")


def read_metrics(path: Path) -> dict[str, float]:
    """Numeric entries of a metrics JSON file (nested keys joined with dots); {} when absent."""
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    return {key: value for key, value in flatten(raw).items() if isinstance(value, float)}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with dotted keys; numbers become float, lists JSON text."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if isinstance(value, bool) or value is None:
        return {key: str(value).lower() if isinstance(value, bool) else "null"}
    if isinstance(value, int | float):
        return {key: float(value)}
    if isinstance(value, list | tuple):
        return {key: json.dumps(list(value))}
    return {key: str(value)}
