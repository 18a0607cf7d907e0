"""Where a version's shadow report (``genretag shadow``) is kept and how it is found again."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genretag.core.atomic import write_json, write_text
from genretag.core.config import Params, layout
from genretag.registry.client import TAG_SHADOW, open_client

SHADOW_DIR = "shadow"


def shadow_report_path(root: Path, *, version: str) -> Path:
    """``models/shadow/v<version>.json`` (the markdown beside it, ``.md``): the version's shadow report.

    Kept beside models/registry.json, never inside it: that file is the register stage's DVC
    output, and changing it would make ``dvc repro`` register again. The version's MLflow tag
    ``genretag.shadow_report`` names the file too.
    """
    return layout(root).models_dir / SHADOW_DIR / f"v{version}.json"


def store_shadow_report(params: Params, *, root: Path, version: str, report: Mapping[str, Any], markdown: str) -> Path:
    """Write version ``version``'s shadow report (JSON and markdown, each atomically) and tag the
    version with its path relative to ``root``; returns the JSON path."""
    path = shadow_report_path(root, version=version)
    write_json(path, dict(report))
    write_text(path.with_suffix(".md"), markdown)
    client = open_client(params, root=root)
    client.set_model_version_tag(params.registry.model_name, str(version), TAG_SHADOW, path.relative_to(root).as_posix())
    return path


def read_shadow_report(root: Path, *, version: str) -> str | None:
    """The markdown of version ``version``'s shadow report, or None when there is none."""
    path = shadow_report_path(root, version=version).with_suffix(".md")
    return path.read_text(encoding="utf-8") if path.is_file() else None
