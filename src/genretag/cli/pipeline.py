"""The pipeline's stages as commands (each runs the DVC stage's Prefect flow), the demo corpus and the paper's experiments."""

from __future__ import annotations

from pathlib import Path

import typer

from genretag.cli.app import app, exit_with, orchestrate
from genretag.core.config import load_params

experiments_app = typer.Typer(no_args_is_help=True, help="The paper's experiments (train one with train.candidates: [paper-expN]).")
app.add_typer(experiments_app, name="experiments")


@app.command("demo-corpus")
def demo_corpus(
    out: Path = typer.Option(Path("demo-corpus"), help="Folder to write <genre>/<genre>.000NN.wav into."),
    tracks_per_genre: int = typer.Option(None, help="Tracks per genre (default: params.yaml ingest.demo_tracks_per_genre)."),
    seed: int = typer.Option(None, help="Random seed (default: params.yaml ingest.demo_seed)."),
) -> None:
    """Synthesise the deterministic demo corpus (not real music) in GTZAN's layout."""
    from genretag.data.demo import synthesize_corpus

    params = load_params()
    files = synthesize_corpus(
        out,
        genres=params.genres,
        tracks_per_genre=tracks_per_genre or params.ingest.demo_tracks_per_genre,
        seed=params.ingest.demo_seed if seed is None else seed,
        sample_rate=params.audio.sample_rate,
    )
    typer.echo(f"wrote {len(files)} synthetic tracks under {out}")


@app.command()
def ingest() -> None:
    """Stage ingest: ingest.source -> data/raw/<genre>/<track>.wav + manifest (the DVC stage's flow)."""
    from genretag.core.config import layout
    from genretag.core.errors import GenretagError
    from genretag.data.ingest import local_source

    try:  # a missing source is one line, before Prefect starts
        local_source(load_params(), layout=layout())
    except GenretagError as exc:
        exit_with(exc, code=1)
    orchestrate()
    from flows.ingest import ingest_flow

    ingest_flow()


@app.command()
def validate() -> None:
    """Stage validate: GX suites over data/raw + manifest -> data/tracks.csv, data/quarantine.csv, reports/validation/."""
    orchestrate()
    from flows.validate import validate_flow
    from genretag.core.errors import ValidationFailed

    try:
        summary = validate_flow()
    except ValidationFailed as exc:
        exit_with(exc, code=1)
    typer.echo(
        f"{summary['tracks_passed']} of {summary['tracks_in']} tracks passed, {summary['tracks_quarantined']} quarantined "
        f"(data/quarantine.csv); report: reports/validation/summary.html"
    )


@app.command()
def split() -> None:
    """Stage split: data/tracks.csv -> data/clips.csv (3-s clips, train/validation/test)."""
    orchestrate()
    from flows.split import split_flow

    split_flow()


@app.command("train")
def train_command(
    candidate: str = typer.Argument(..., help="A train.candidates id: musicnn-msd, mfcc-logreg, compact or paper-<experiment>."),
) -> None:
    """Stage candidate-<id>: train one model family on the split's audio (MLflow run), export it parity-gated
    to models/candidates/<id>/model.onnx + MODEL_CARD.md (the DVC stage's flow)."""
    from genretag.core.errors import ConfigError
    from genretag.families import check_candidate

    try:  # bad params are one line, before Prefect starts or an MLflow run opens
        check_candidate(load_params(), candidate)
    except ValueError as exc:
        exit_with(ConfigError(f"{candidate}: {exc}"), code=1)
    except ConfigError as exc:
        exit_with(exc, code=1)
    orchestrate()
    from flows.train import candidate_flow

    summary = candidate_flow(candidate)
    typer.echo(f"{candidate}: ONNX test clip accuracy {summary['onnx_test_accuracy']:.4f}, parity max |diff| "
               f"{summary['max_abs_diff_test']:.3g} (MLflow run {summary['mlflow_run_id']}): {summary['onnx']}")


@app.command("evaluate")
def evaluate_command() -> None:
    """Stage evaluate: every train.candidates model on the test split's audio -> metrics/candidates/<id>.json, plots,
    data/scores/<id>.npz."""
    orchestrate()
    from flows.evaluate import evaluate_flow

    for candidate, metrics in evaluate_flow().items():
        if "error" in metrics:
            typer.echo(f"{candidate}: not evaluated: {metrics['error']}")
        else:
            typer.echo(f"{candidate}: track accuracy {metrics['track_accuracy_mean_prob']:.4f}, clip accuracy "
                       f"{metrics['test_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")


@app.command("register")
def register_command() -> None:
    """Stage register: every models/candidates/<id>/model.onnx -> registry versions, champion gate on test audio, models/registry.json.
    Exits 1 with the gate's one line when it refuses (register.baseline missing or unscorable)."""
    orchestrate()
    from flows.register import register_flow
    from genretag.core.errors import GenretagError

    try:
        register_flow()
    except GenretagError as exc:
        exit_with(exc, code=1)


@experiments_app.command("list")
def experiments_list() -> None:
    """The paper's experiments with their parameter counts at the paper's input size."""
    from genretag.families.paper_models import EXPERIMENTS

    for name, spec in EXPERIMENTS.items():
        size = "x".join(str(v) for v in spec.input_shape[:2])
        typer.echo(f"{name:<6} {spec.paper_params:>12,}  {size:<8} {spec.description}")
