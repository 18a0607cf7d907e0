"""Operations: genretag's local Prefect server, the scheduled deployments, retraining now."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from genretag.cli.app import app, orchestrate

server_app = typer.Typer(no_args_is_help=True, help="genretag's local Prefect server (used when PREFECT_API_URL is not set).")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server now (commands that need it start it anyway) and print its API URL."""
    from flows.server import ensure_local_server, idle_seconds

    typer.echo(f"{ensure_local_server()} (stops after {idle_seconds():.0f} s unused; export PREFECT_API_URL=... to see runs)")


@server_app.command("status")
def server_status() -> None:
    """The local server's API URL, or that none runs; $PREFECT_API_URL wins over it when set."""
    from flows.server import local_server_url

    if os.environ.get("PREFECT_API_URL"):
        typer.echo(f"PREFECT_API_URL is set: commands use {os.environ['PREFECT_API_URL']}")
    typer.echo(f"local server: {local_server_url() or 'not running'}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server."""
    from flows.server import stop_local_server

    typer.echo("stopped" if stop_local_server() else "no local server was running")


@app.command()
def deploy(
    workspace: Path = typer.Option(None, help="The git+DVC workspace the flows run in (default: $GENRETAG_ROOT or this project)."),
    retrain_cron: str = typer.Option(None, help="Cron of the retrain deployment (default 0 3 * * 1; $GENRETAG_RETRAIN_CRON)."),
    tag_cron: str = typer.Option(None, help="Cron of the tag-catalog deployment (default 0 * * * *; $GENRETAG_TAG_CATALOG_CRON)."),
    timezone: str = typer.Option(None, help="Time zone of both schedules (default UTC; $GENRETAG_SCHEDULE_TIMEZONE)."),
    catalog_source: str = typer.Option(None, help="Folder (or track_id,path CSV) tag-catalog tags (default catalog/incoming; $GENRETAG_CATALOG_SOURCE)."),
) -> None:
    """Register the `retrain` and `tag-catalog` deployments with $PREFECT_API_URL and serve them until stopped."""
    from flows.deploy import Schedules, serve_deployments

    serve_deployments(Schedules.from_env(
        workspace=workspace, retrain_cron=retrain_cron, tag_catalog_cron=tag_cron, timezone=timezone, catalog_source=catalog_source,
    ))


@app.command()
def retrain(
    workspace: Path = typer.Option(None, help="The git+DVC workspace (default: $GENRETAG_ROOT or this project)."),
    pull: bool = typer.Option(True, help="dvc pull from the default remote first (when configured and reachable)."),
    ingest_new: bool = typer.Option(True, "--ingest/--no-ingest", help="Force the ingest stage so new source audio is picked up."),
    push: bool = typer.Option(True, help="dvc push to the default remote afterwards."),
    lock_wait_s: float = typer.Option(600.0, help="How long to wait for DVC's lock held by another dvc process."),
) -> None:
    """Retrain now, as the weekly deployment does: pull, ingest, dvc repro (champion gate), push."""
    orchestrate()
    from flows.retrain import retrain_flow

    state = retrain_flow(
        workspace=str(workspace) if workspace else None, pull_first=pull, ingest=ingest_new, push_after=push,
        lock_wait_s=lock_wait_s, return_state=True,
    )
    summary = state.result()
    typer.echo(f"{state.name}: {summary.get('reason') or 'stages run: ' + (', '.join(summary['stages']) or 'none')}")
