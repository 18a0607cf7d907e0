"""The `genretag` command line: one front door to the same functions the flows call.

This module holds the Typer app, ``--params``, ``--debug`` and the error reporting; the commands
live in one module per group (:mod:`genretag.cli.pipeline`, :mod:`~genretag.cli.registry`,
:mod:`~genretag.cli.catalog`, :mod:`~genretag.cli.predict`, :mod:`~genretag.cli.operations`), each
declaring its commands on :data:`app` (the package's ``__init__`` imports them all).

Commands that orchestrate nothing (`predict`, `registry list|history|fetch`, `show`, `export-tags`, `review`)
import only what they use (never Prefect or TensorFlow) and start no server. Commands that run
Prefect flows (`tag-catalog`, the stages, `retrain`) use $PREFECT_API_URL, else genretag's local
Prefect server (see flows.server), never a temporary server per command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

import genretag  # noqa: F401  - offline environment first
from genretag.core.config import PARAMS_ENV

DEBUG_FLAG = "--debug"
MODEL_HELP = ("A path to an .onnx file, or a registry reference: champion | challenger | a version number | "
              "models:/NAME@ALIAS | models:/NAME/VERSION (default: score.model of the parameters).")


class _FaultReportingTyper(typer.Typer):
    """Any uncaught failure ends as one ``error: ...`` line and exit status 1; ``--debug``
    (anywhere on the command line) shows the traceback instead."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        global _debug
        debug = _debug = DEBUG_FLAG in sys.argv[1:]
        if debug:
            sys.argv.remove(DEBUG_FLAG)
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if debug:
                raise
            from genretag.core.faults import describe_fault

            typer.echo(f"error: {describe_fault(exc)} (rerun with {DEBUG_FLAG} for the traceback)", err=True)
            sys.exit(1)


_debug = False


def exit_with(exc: Exception, *, code: int = 1) -> NoReturn:
    """A command's expected failure: its one-line message and exit ``code`` (re-raised under --debug)."""
    if _debug:
        raise exc
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code) from exc


def orchestrate() -> None:
    """Point Prefect at $PREFECT_API_URL or genretag's local server, before any flow runs."""
    from flows.server import use_api

    use_api(log=lambda line: typer.echo(line, err=True))


def existing_catalog(url: str) -> str:
    """``url`` of a catalog to read; a SQLite file that does not exist raises a one-line ScoringError
    (reading must not create an empty catalog wherever the command runs)."""
    from genretag.core.errors import ScoringError

    if url.startswith("sqlite:///") and url != "sqlite:///:memory:" and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ScoringError(f"no catalog database at {url.removeprefix('sqlite:///')}: pass --database URL or set GENRETAG_CATALOG_URL")
    return url


app = _FaultReportingTyper(no_args_is_help=True, add_completion=False,
                           help=f"Tag a music catalog with genres. {DEBUG_FLAG}: show tracebacks.")


def version_line() -> str:
    """``genretag <package version>``, with `` (git <commit>[, modified])`` when the package runs from a git checkout."""
    import subprocess

    line = f"genretag {genretag.__version__}"
    source = Path(genretag.__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=source,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git, or a slow one: the version alone
        return line
    if commit.returncode != 0:  # installed from a wheel or an image: no checkout to name
        return line
    return f"{line} (git {commit.stdout.strip()}{', modified' if dirty.stdout.strip() else ''})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print genretag's version (and git commit, when run from a checkout) and exit."),
    params: Path = typer.Option(
        None, "--params", metavar="FILE",
        help=f"Parameters file (default: ${PARAMS_ENV}, else params.yaml of the project above the working folder, "
        "else the built-in defaults).",
    ),
) -> None:
    """Tag a music catalog with genres."""
    if params is not None:
        os.environ[PARAMS_ENV] = str(params.resolve())  # flows and child processes read the same file


def main() -> None:
    """The console script ``genretag`` (pyproject.toml) and ``python -m genretag.cli``."""
    app()
