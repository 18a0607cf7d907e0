"""`genretag predict`: the top-3 genres of audio files, printed; no catalog, no Prefect, no TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from genretag.cli.app import MODEL_HELP, app, exit_with
from genretag.core.config import layout, load_params


@app.command()
def predict(
    files: list[Path] = typer.Argument(..., help="Audio files (any format, rate, channels, length)."),
    model: str = typer.Option(None, "--model", help=MODEL_HELP),
    max_windows: int = typer.Option(None, "--max-windows", min=0, help="3-s windows per track; 0: all (default: params.yaml score.max_windows)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout: file, top [{genre, probability}] "
                                 "(the reference client's fields), model_name, model_version, windows_scored, windows_silent; or file, error."),
) -> None:
    """Print the top-3 genres of each file (contract-v2 models: windows at the model's rate); exit 1 when any file could not be scored."""
    from genretag.core.errors import GenretagError
    from genretag.onnx.session import open_model
    from genretag.registry.fetch import resolve_project_model
    from genretag.tagging.rows import unknown_prefix
    from genretag.tagging.scoring import score_files

    try:
        params = load_params()
        scoring_model = open_model(resolve_project_model(model, params=params, root=layout().root))
    except GenretagError as exc:
        exit_with(exc, code=2)
    typer.echo(f"{scoring_model.model_name} {scoring_model.model_version} on {scoring_model.provider}", err=True)
    if not scoring_model.contract.open_set.available:
        typer.echo(f"note: {scoring_model.model_version} has no out-of-taxonomy score: it cannot say 'unknown'", err=True)
    results = {
        result.key: result
        for result in score_files(
            scoring_model, list(enumerate(files)),
            max_windows=params.score.max_windows if max_windows is None else max_windows,
            batch_size=params.score.batch_size, workers=params.score.workers,
            silence_rms_dbfs=params.validation.silence_rms_dbfs, parallel=len(files) > 4,
        )
    }
    failed = 0
    for index in range(len(files)):
        result = results[index]
        if result.score is None:
            failed += 1
            if as_json:
                typer.echo(json.dumps({"file": str(result.path), "error": result.error}))
            typer.echo(f"error: {result.path}: {result.error}", err=True)
            continue
        if as_json:
            typer.echo(json.dumps({
                "file": str(result.path), "top": [{"genre": g, "probability": p} for g, p in result.score.top3],
                "model_name": scoring_model.model_name, "model_version": scoring_model.model_version,
                "windows_scored": result.score.windows_scored, "windows_silent": result.score.windows_silent,
            }))
            continue
        top = "  ".join(f"{genre} {probability:.3f}" for genre, probability in result.score.top3)
        silent = f", {result.score.windows_silent} silent skipped" if result.score.windows_silent else ""
        verdict = unknown_prefix(result.score.label, result.score.unknown_score)
        typer.echo(f"{result.path}  {verdict}{top}  ({result.score.windows_scored} windows{silent})")
    if failed:
        typer.echo(f"{failed} of {len(files)} files could not be scored", err=True)
        raise typer.Exit(1)
