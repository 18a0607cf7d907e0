"""The model registry's commands: registry list|history|promote|rollback|fetch, and shadow.

`registry list|history` import no MLflow, pandas, SciPy or onnx (:mod:`genretag.registry.listing`
reads a SQLite store with sqlite3): they start in about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from genretag.cli.app import app, existing_catalog, exit_with
from genretag.core.config import Params, layout, load_params

if TYPE_CHECKING:
    from genretag.tagging.shadow import ShadowReport

registry_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry: list, promote, rollback, fetch.")
app.add_typer(registry_app, name="registry")

T = TypeVar("T")


def _registry_call(function: Callable[..., T], /, **kwargs: Any) -> T:
    """Run a genretag.registry function ``function(params, root=..., **kwargs)`` on this project; a
    GenretagError (a missing project registry included) exits 1 with its message."""
    from genretag.core.errors import GenretagError, RegistryError
    from genretag.core.tracking import tracking_uri
    from genretag.registry.client import missing_store

    paths = layout()
    try:
        params = load_params()
        if store := missing_store(tracking_uri(params, root=paths.root)):
            raise RegistryError(f"no model registry at {store}: run inside a genretag project, or set MLFLOW_TRACKING_URI")
        return function(params, root=paths.root, **kwargs)
    except GenretagError as exc:
        exit_with(exc, code=1)


@registry_app.command("list")
def registry_list(
    as_json: bool = typer.Option(False, "--json", help="A JSON array of {version, aliases, accuracy, created, decision, reason, model_version, run_id}."),
) -> None:
    """Versions with aliases, test accuracy (re-scored at registration), created time and the gate's decision."""
    from genretag.registry.listing import list_versions

    rows = _registry_call(list_versions)
    if as_json:
        import dataclasses
        import json

        typer.echo(json.dumps([dataclasses.asdict(row) for row in rows], default=lambda value: value.isoformat()))
        return
    if not rows:
        typer.echo("no registered versions")
        return
    typer.echo(f"{'version':>7}  {'aliases':<20} {'accuracy':>8}  {'created (UTC)':<19}  {'decision':<10}  model / reason")
    for row in rows:
        accuracy = f"{row.accuracy:.4f}" if row.accuracy is not None else "-"
        typer.echo(
            f"{row.version:>7}  {','.join(row.aliases) or '-':<20} {accuracy:>8}  "
            f"{row.created:%Y-%m-%d %H:%M:%S}  {row.decision:<10}  {row.model_version}: {row.reason}"
        )


@registry_app.command("history")
def registry_history() -> None:
    """Every change of champion, oldest first: when, what (gate, promote, rollback), which version, who, why."""
    from genretag.registry.champion import champion_history

    entries = _registry_call(champion_history)
    if not entries:
        typer.echo("no champion changes recorded")
        return
    typer.echo(f"{'when (UTC)':<20} {'action':<9} {'champion':<13} {'by':<14} why")
    for entry in entries:
        change = f"v{entry['from'] or '-'} -> v{entry['version']}" if entry.get("from") else f"v{entry['version']}"
        when = str(entry.get("at", "")).replace("T", " ")[:19]
        typer.echo(f"{when:<20} {entry['action']:<9} {change:<13} {entry.get('by') or '-':<14} {entry['reason']}")


@registry_app.command("promote")
def registry_promote(
    version: str = typer.Argument(..., help="Registry version number to make champion."),
    reason: str = typer.Option(None, "--reason", help="Why (recorded on the version and in the champion history)."),
) -> None:
    """Make VERSION the champion by hand, outside the gate's promotion rule (never past its floor: a
    version that failed it is refused); the reason is recorded. Its shadow report (`genretag shadow
    VERSION`) is printed first, or one line says there is none."""
    from genretag.registry.champion import actor, check_promotable, promote
    from genretag.registry.listing import version_number
    from genretag.registry.shadow_reports import read_shadow_report

    number = _registry_call(version_number, ref=version)
    _registry_call(check_promotable, version=number)  # refused before any report is shown
    report = read_shadow_report(layout().root, version=number)
    typer.echo(report.rstrip("\n") if report else
               f"no shadow report for v{number}: run `genretag shadow {number} --sample 200` to compare it with the champion's tags first")
    change = _registry_call(promote, version=version, reason=reason or f"manual promotion by {actor()}")
    typer.echo(f"champion: v{change.from_version or '-'} -> v{change.to_version} ({change.reason})")


@registry_app.command("rollback")
def registry_rollback(
    reason: str = typer.Option(None, "--reason", help="Why (recorded on both versions and in the champion history)."),
) -> None:
    """Give the champion alias back to the previous champion."""
    from genretag.registry.champion import actor, rollback

    change = _registry_call(rollback, reason=reason or f"manual rollback by {actor()}")
    typer.echo(f"champion rolled back: v{change.from_version} -> v{change.to_version} ({change.reason})")


@registry_app.command("fetch")
def registry_fetch(
    ref: str = typer.Argument(..., help="champion, challenger or a version number."),
    out: Path = typer.Option(..., "--out", help="Folder for model.onnx, labels.json, scoring.json and the Python and Node.js reference clients."),
) -> None:
    """Write a self-contained handoff bundle (needs only a decoder, a resampler and onnxruntime)."""
    from genretag.registry.fetch import fetch

    folder = _registry_call(fetch, ref=ref, out=out)
    typer.echo(f"wrote {ref} to {folder}: python {folder / 'genretag_reference.py'} track.wav")


@app.command()
def shadow(
    version: str = typer.Argument(..., help="Registry version (or challenger) to try on the catalog."),
    sample: int = typer.Option(200, "--sample", min=1, help="Catalog tracks to score, stratified by the champion's genre."),
    seed: int = typer.Option(2021, "--seed", help="Seed of the sample."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
    max_windows: int = typer.Option(None, "--max-windows", min=0, help="3-s windows per track; 0: all (default: score.max_windows)."),
) -> None:
    """Score a sample of the champion's catalog tracks with VERSION and compare: agreement, old-to-new
    confusion, confidence shift. The report is stored with the version (models/shadow/v<N>.json, .md)
    and printed by `genretag registry promote`."""
    from genretag.tagging.database import catalog_url
    from genretag.tagging.shadow import shadow_version

    def run(params: Params, *, root: Path) -> tuple[ShadowReport, Path]:
        url = existing_catalog(catalog_url(params, root=root, override=database))
        return shadow_version(params, root=root, version=version, database_url=url, sample=sample, seed=seed, max_windows=max_windows)

    report, path = _registry_call(run)  # a GenretagError exits 1 with its one line
    typer.echo(report.to_markdown().rstrip("\n"))
    typer.echo(f"stored: {path} (and {path.with_suffix('.md').name})", err=True)
