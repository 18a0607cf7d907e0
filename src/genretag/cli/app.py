"""The `genretag` command line: one front door to the same functions the flows call.

Commands that orchestrate nothing (`predict`, `registry list|history|fetch`, `show`, `export-tags`, `review`)
import only what they use (never Prefect or TensorFlow) and start no server. Commands that run
Prefect flows (`tag-catalog`, the stages, `retrain`) use $PREFECT_API_URL, else genretag's local
Prefect server (see flows.server), never a temporary server per command.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import typer

import genretag  # noqa: F401  - offline environment first
from genretag.core.config import PARAMS_ENV, layout, load_params

DEBUG_FLAG = "--debug"


class _FaultReportingTyper(typer.Typer):
    """Any uncaught failure ends as one ``error: ...`` line and exit status 1; ``--debug``
    (anywhere on the command line) shows the traceback instead."""

    def __call__(self, *args, **kwargs):
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


def _exit_with(exc: Exception, *, code: int = 1):
    """A command's expected failure: its one-line message and exit ``code`` (re-raised under --debug)."""
    if _debug:
        raise exc
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code) from exc


app = _FaultReportingTyper(no_args_is_help=True, add_completion=False,
                           help=f"Tag a music catalog with genres. {DEBUG_FLAG}: show tracebacks.")
registry_app = typer.Typer(no_args_is_help=True, help="The MLflow model registry: list, promote, rollback, fetch.")
experiments_app = typer.Typer(no_args_is_help=True, help="The paper's experiments (train one with train.candidates: [paper-expN]).")
app.add_typer(registry_app, name="registry")
app.add_typer(experiments_app, name="experiments")
review_app = typer.Typer(no_args_is_help=True, help="The review loop: export low-confidence tags, import corrected genres as training labels.")
app.add_typer(review_app, name="review")
server_app = typer.Typer(no_args_is_help=True, help="genretag's local Prefect server (used when PREFECT_API_URL is not set).")
app.add_typer(server_app, name="server")


@app.callback()
def options(
    params: Path = typer.Option(
        None, "--params", metavar="FILE",
        help=f"Parameters file (default: ${PARAMS_ENV}, else params.yaml of the project above the working folder, "
        "else the built-in defaults).",
    ),
) -> None:
    """Tag a music catalog with genres."""
    if params is not None:
        os.environ[PARAMS_ENV] = str(params.resolve())  # flows and child processes read the same file


def _orchestrate() -> None:
    """Point Prefect at $PREFECT_API_URL or genretag's local server, before any flow runs."""
    from flows.server import use_api

    use_api(log=lambda line: typer.echo(line, err=True))


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


# --- pipeline stage commands (ingest, validate, split) ---


@app.command()
def ingest() -> None:
    """Stage ingest: ingest.source -> data/raw/<genre>/<track>.wav + manifest (the DVC stage's flow)."""
    _orchestrate()
    from flows.ingest import ingest_flow

    ingest_flow()


@app.command()
def validate() -> None:
    """Stage validate: GX suites over data/raw + manifest -> data/tracks.csv, data/quarantine.csv, reports/validation/."""
    _orchestrate()
    from flows.validate import validate_flow
    from genretag.core.errors import ValidationFailed

    try:
        summary = validate_flow()
    except ValidationFailed as exc:
        _exit_with(exc, code=1)
    typer.echo(
        f"{summary['tracks_passed']} of {summary['tracks_in']} tracks passed, {summary['tracks_quarantined']} quarantined "
        f"(data/quarantine.csv); report: reports/validation/summary.html"
    )


@app.command()
def split() -> None:
    """Stage split: data/tracks.csv -> data/clips.csv (3-s clips, train/validation/test)."""
    _orchestrate()
    from flows.split import split_flow

    split_flow()


# --- training and evaluation commands ---


@app.command("train")
def train_command(
    candidate: str = typer.Argument(..., help="A train.candidates id: musicnn-msd, mfcc-logreg, compact or paper-<experiment>."),
) -> None:
    """Stage candidate@<id>: train one model family on the split's audio (MLflow run), export it parity-gated
    to models/candidates/<id>/model.onnx + MODEL_CARD.md (the DVC stage's flow)."""
    _orchestrate()
    from flows.train import candidate_flow

    summary = candidate_flow(candidate)
    typer.echo(f"{candidate}: ONNX test clip accuracy {summary['onnx_test_accuracy']:.4f}, parity max |diff| "
               f"{summary['max_abs_diff_test']:.3g} (MLflow run {summary['mlflow_run_id']}): {summary['onnx']}")


@app.command("evaluate")
def evaluate_command() -> None:
    """Stage evaluate: every train.candidates model on the test split's audio -> metrics/candidates/<id>.json, plots."""
    _orchestrate()
    from flows.evaluate import evaluate_flow

    for candidate, metrics in evaluate_flow().items():
        if "error" in metrics:
            typer.echo(f"{candidate}: not evaluated: {metrics['error']}")
        else:
            typer.echo(f"{candidate}: track accuracy {metrics['track_accuracy_mean_prob']:.4f}, clip accuracy "
                       f"{metrics['test_accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")


@experiments_app.command("list")
def experiments_list() -> None:
    """The paper's experiments with their parameter counts at the paper's input size."""
    from genretag.families.paper_models import EXPERIMENTS

    for name, spec in EXPERIMENTS.items():
        size = "x".join(str(v) for v in spec.input_shape[:2])
        typer.echo(f"{name:<6} {spec.paper_params:>12,}  {size:<8} {spec.description}")


# --- registry commands ---


@app.command("register")
def register_command() -> None:
    """Stage register: every models/candidates/<id>/model.onnx -> registry versions, champion gate on test audio, models/registry.json."""
    _orchestrate()
    from flows.register import register_flow

    register_flow()


def _registry_call(function, /, **kwargs):
    """Run a genretag.registry function on this project; a GenretagError exits 1 with its message."""
    from genretag.core.errors import GenretagError, RegistryError
    from genretag.core.tracking import tracking_uri

    paths = layout()
    try:
        params = load_params()
        if store := _missing_store(tracking_uri(params, root=paths.root)):
            raise RegistryError(f"no model registry at {store}: run inside a genretag project, or set MLFLOW_TRACKING_URI")
        return function(params, root=paths.root, **kwargs)
    except GenretagError as exc:
        _exit_with(exc, code=1)


@registry_app.command("list")
def registry_list() -> None:
    """Versions with aliases, test accuracy (re-scored at registration), created time and the gate's decision."""
    from genretag.registry import mlflow_registry as registry

    rows = _registry_call(registry.list_versions)
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
    from genretag.registry import mlflow_registry as registry

    entries = _registry_call(registry.champion_history)
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
    from genretag.registry import mlflow_registry as registry

    number = _registry_call(registry.version_number, ref=version)
    _registry_call(registry.check_promotable, version=number)  # refused before any report is shown
    report = registry.read_shadow_report(layout().root, version=number)
    typer.echo(report.rstrip("\n") if report else
               f"no shadow report for v{number}: run `genretag shadow {number} --sample 200` to compare it with the champion's tags first")
    change = _registry_call(registry.promote, version=version, reason=reason or f"manual promotion by {registry.actor()}")
    typer.echo(f"champion: v{change.from_version or '-'} -> v{change.to_version} ({change.reason})")


@registry_app.command("rollback")
def registry_rollback(
    reason: str = typer.Option(None, "--reason", help="Why (recorded on both versions and in the champion history)."),
) -> None:
    """Give the champion alias back to the previous champion."""
    from genretag.registry import mlflow_registry as registry

    change = _registry_call(registry.rollback, reason=reason or f"manual rollback by {registry.actor()}")
    typer.echo(f"champion rolled back: v{change.from_version} -> v{change.to_version} ({change.reason})")


@registry_app.command("fetch")
def registry_fetch(
    ref: str = typer.Argument(..., help="champion, challenger or a version number."),
    out: Path = typer.Option(..., "--out", help="Folder for model.onnx, labels.json, scoring.json and the Python and Node.js reference clients."),
) -> None:
    """Write a self-contained handoff bundle (needs only a decoder, a resampler and onnxruntime)."""
    from genretag.registry import mlflow_registry as registry

    folder = _registry_call(registry.fetch, ref=ref, out=out)
    typer.echo(f"wrote {ref} to {folder}: python {folder / 'genretag_reference.py'} track.wav")


# --- catalog tagging commands ---


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
    from genretag.registry import mlflow_registry as registry
    from genretag.tagging.store import Catalog, catalog_url
    from genretag.core.errors import GenretagError, RegistryError
    from genretag.core.paths import stored
    from genretag.onnx.session import open_model
    from genretag.tagging.shadow import ChampionTag, shadow_run

    try:
        params, root = load_params(), layout().root
        rows = _registry_call(registry.list_versions)
        number = _registry_call(registry.version_number, ref=version, versions=rows)
        champion = next((row for row in rows if registry.CHAMPION in row.aliases), None)
        if champion is None:
            raise RegistryError(f"registered model {params.registry.model_name!r} has no champion whose catalog tags to compare with")
        if champion.version == number:
            raise RegistryError(f"v{number} is the champion: shadow a challenger against it")
        with Catalog(_existing_catalog(catalog_url(params, root=root, override=database))) as catalog:
            frame = catalog.read("catalog_tags", model_version=champion.model_version)
        tags = [ChampionTag(r.track_id, os.fspath(stored(r.path, r.path_bytes)), r.sha256, r.genre, float(r.confidence))
                for r in frame.itertuples(index=False)]
        if not tags:
            raise RegistryError(f"the catalog holds no tags of the champion v{champion.version} ({champion.model_version}): "
                                "run `genretag tag-catalog` with the champion first")
        model = open_model(_model_path(number, params=params, root=root))
        score = params.score
        report = shadow_run(tags, model=model, registry_version=number, champion=champion.model_version, sample=sample, seed=seed,
                            max_windows=score.max_windows if max_windows is None else max_windows, batch_size=score.batch_size,
                            workers=score.workers, silence_rms_dbfs=params.validation.silence_rms_dbfs)
        markdown = report.to_markdown()
        path = registry.store_shadow_report(params, root=root, version=number, report=report.to_dict(), markdown=markdown)
    except GenretagError as exc:
        _exit_with(exc, code=1)
    typer.echo(markdown.rstrip("\n"))
    typer.echo(f"stored: {path} (and {path.with_suffix('.md').name})", err=True)

_MODEL_HELP = ("A path to an .onnx file, or a registry reference: champion | challenger | a version number | "
               "models:/NAME@ALIAS | models:/NAME/VERSION (default: score.model of the parameters).")
REGISTRY_SCHEME = "models:/"


def _model_path(model: str | None, *, params, root: Path) -> Path:
    """``--model`` (else score.model) -> a local .onnx file.

    A registry reference needs a registry: $MLFLOW_TRACKING_URI, or the project's SQLite store.
    Without one this raises a one-line ConfigError instead of creating an empty store here.
    """
    from genretag.core.errors import ConfigError
    from genretag.tagging.model_file import resolve_model
    from genretag.core.tracking import tracking_uri

    ref, name = model or params.score.model, params.registry.model_name
    if ref.startswith(REGISTRY_SCHEME):
        rest = ref[len(REGISTRY_SCHEME):]
        name, _, ref = rest.partition("@") if "@" in rest else rest.partition("/")
    uri = tracking_uri(params, root=root)
    if Path(ref).suffix != ".onnx" and not Path(ref).is_file() and (store := _missing_store(uri)):
        given = f"--model {model}" if model else f"no --model given (score.model is {ref!r})"
        raise ConfigError(
            f"{given}: no model registry at {store}; pass --model PATH.onnx, or set MLFLOW_TRACKING_URI "
            f"for a registry reference such as {REGISTRY_SCHEME}{name}@champion"
        )
    return resolve_model(ref, tracking_uri=uri, model_name=name)


def _existing_catalog(url: str) -> str:
    """``url`` of a catalog to read; a SQLite file that does not exist raises a one-line ScoringError
    (reading must not create an empty catalog wherever the command runs)."""
    from genretag.core.errors import ScoringError

    if url.startswith("sqlite:///") and url != "sqlite:///:memory:" and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ScoringError(f"no catalog database at {url.removeprefix('sqlite:///')}: pass --database URL or set GENRETAG_CATALOG_URL")
    return url


def _missing_store(uri: str) -> Path | None:
    """The project's default SQLite registry file when it does not exist (else None; a
    $MLFLOW_TRACKING_URI that the user set is always used as given)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    store = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    return store if store is not None and not store.is_file() else None


@app.command("tag-catalog")
def tag_catalog(
    source: str = typer.Argument(..., help="A folder (scanned recursively for audio files) or a CSV with columns track_id,path."),
    model: str = typer.Option(None, "--model", help=_MODEL_HELP),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else params.yaml score.database_url)."),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="Fail at once unless onnxruntime really runs on CUDA."),
    max_windows: int = typer.Option(None, "--max-windows", min=0, help="3-s windows per track, evenly spaced; 0: all (default: params.yaml score.max_windows)."),
) -> None:
    """Tag a catalog with genres into the catalog database; reruns skip what this model version tagged.

    With $PREFECT_API_URL set (or score.dask_address, which decodes as Prefect tasks on Dask) this
    runs the tag-catalog flow against that server (else genretag's local one); otherwise the same
    steps run here as plain functions (genretag.catalog.tag_catalog), with no Prefect at all.
    """
    from genretag.tagging.store import catalog_url, check_database
    from genretag.core.errors import GenretagError

    try:
        params, root = load_params(), layout().root
        # Reachable and writable before the model loads and any file is read (and before Prefect starts).
        check_database(catalog_url(params, root=root, override=database))
        model_file = _model_path(model, params=params, root=root)
        if os.environ.get("PREFECT_API_URL") or params.score.dask_address:
            _orchestrate()
            from flows.tag_catalog import tag_catalog_flow

            summary = tag_catalog_flow(source=source, model=str(model_file), database_url=database,
                                       require_gpu=require_gpu, max_windows=max_windows)
        else:
            summary = _tag_here(source, model_file, params=params, root=root, database=database,
                                require_gpu=require_gpu, max_windows=max_windows)
    except GenretagError as exc:
        _exit_with(exc, code=1)
    typer.echo(
        f"{summary['model_name']} {summary['model_version']} on {summary['provider']}: {summary['tagged']} tagged, "
        f"{summary['skipped']} already tagged, {summary['duplicates']} duplicate content, {summary['failed']} failed "
        f"({summary['tracks_per_second']:.2f} tracks/s) -> {summary['database']}; of {summary['files']} files, "
        f"{summary['not_audio']} skipped (not audio), {summary['apple_metadata']} skipped (macOS metadata)"
    )
    for failure in summary["failures"]:
        typer.echo(f"failed: {failure['path']}: {failure['reason']}", err=True)


def _tag_here(source: str, model_file: Path, *, params, root: Path, database: str | None, require_gpu: bool,
              max_windows: int | None) -> dict:
    """The tagging steps in this process, without Prefect; the run's summary as the flow returns it."""
    from genretag.tagging.run import tag_catalog as tag
    from genretag.tagging.store import catalog_url
    from genretag.evaluation.drift import training_genre_counts
    from genretag.onnx.session import open_model

    score = params.score
    summary = tag(
        source, model=open_model(model_file, require_gpu=require_gpu),
        database_url=catalog_url(params, root=root, override=database),
        max_windows=score.max_windows if max_windows is None else max_windows, batch_size=score.batch_size,
        commit_every=score.commit_every, workers=score.workers, silence_rms_dbfs=params.validation.silence_rms_dbfs,
        reference_genres=training_genre_counts(layout(root).tracks), review_below=score.review_below, drift_limits=score,
    )
    for line in summary.drift_warnings:
        typer.echo(f"warning: {line}", err=True)
    return summary.to_dict()


@app.command()
def show(
    track: str = typer.Argument(..., help="An audio file (looked up by its content's SHA-256) or a SHA-256 (or its first 8+ hex digits)."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
) -> None:
    """What the catalog holds for one track: each model version's top-3 genres and its genre timeline
    (one line per scored window: start, most probable genre, runner-up), or why it failed."""
    import json

    from genretag.audio.decoding import file_sha256
    from genretag.tagging.rows import timeline_lines
    from genretag.tagging.store import Catalog, catalog_url
    from genretag.core.errors import GenretagError

    try:
        sha = file_sha256(Path(track)) if Path(track).is_file() else track
        if not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha):
            raise GenretagError(f"{track}: no such file, and not a SHA-256 (8 to 64 hex digits)")
        with Catalog(_existing_catalog(catalog_url(load_params(), root=layout().root, override=database))) as catalog:
            tags, errors = catalog.find(sha)
    except GenretagError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not tags and not errors:
        typer.echo(f"{track}: not in the catalog (sha256 {sha[:12]})", err=True)
        raise typer.Exit(1)
    for row in tags:
        top = "  ".join(f"{t['genre']} {t['probability']:.3f}" for t in json.loads(row["top3"]))
        flag = ", needs review" if row["needs_review"] else ""
        typer.echo(f"{row['path']} (sha256 {row['sha256'][:12]}) {row['model_name']} {row['model_version']} "
                   f"on {row['provider']}, {row['scored_at']:%Y-%m-%d %H:%M}: {top}  ({row['windows_scored']} windows{flag})")
        for line in timeline_lines(row["window_probabilities"]):
            typer.echo(line)
    for row in errors:
        typer.echo(f"{row['path']} (sha256 {row['sha256'][:12]}) {row['model_version']}: failed: {row['reason']}")


@app.command("export-tags")
def export_tags(
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    out: Path = typer.Option(..., "--out", help="File to write (atomically)."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else params.yaml score.database_url)."),
    model_version: str = typer.Option(None, "--model-version", help="Only this model version's tags (default: all)."),
) -> None:
    """Export the catalog_tags table to CSV or Parquet."""
    from genretag.tagging.export import export_tags as export
    from genretag.tagging.store import catalog_url
    from genretag.core.errors import GenretagError

    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter(f"must be csv or parquet, not {fmt!r}", param_hint="--format")
    paths = layout()
    try:
        rows = export(_existing_catalog(catalog_url(load_params(), root=paths.root, override=database)), out=out, fmt=fmt,
                      model_version=model_version)
    except GenretagError as exc:
        _exit_with(exc, code=1)
    typer.echo(f"wrote {rows} tags to {out}")


@review_app.command("export")
def review_export(
    out: Path = typer.Option(..., "--out", help="CSV to write (atomically)."),
    sample: int = typer.Option(0, "--sample", min=0, help="Unflagged tags to add at random for quality control."),
    seed: int = typer.Option(0, "--seed", help="Seed of the quality-control sample."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
) -> None:
    """Write the tags flagged needs_review (confidence below score.review_below) and a random sample of the
    others (reason: needs_review | qc_sample) with an empty corrected_genre column for the reviewer."""
    from genretag.tagging.store import catalog_url
    from genretag.core.errors import GenretagError
    from genretag.tagging.review import NEEDS_REVIEW, export_review

    try:
        url = _existing_catalog(catalog_url(load_params(), root=layout().root, override=database))
        sheet = export_review(url, out=out, sample=sample, seed=seed)
    except GenretagError as exc:
        _exit_with(exc, code=1)
    flagged = int((sheet["reason"] == NEEDS_REVIEW).sum())
    typer.echo(f"wrote {len(sheet)} rows to {out}: {flagged} needing review, {len(sheet) - flagged} quality-control sample")


@review_app.command("import")
def review_import(
    review_file: Path = typer.Argument(..., help="A review CSV from `genretag review export`, corrected_genre filled in."),
    reviewer: str = typer.Option("", "--reviewer", help="Who reviewed (recorded with each label)."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
) -> None:
    """Add the corrected genres to the feedback source (ingest.feedback) that the next retrain ingests.
    Bad rows get one line each and exit status 1; the good rows still go in. A blank corrected_genre is no label."""
    from genretag.tagging.store import catalog_url
    from genretag.core.errors import ConfigError, GenretagError
    from genretag.tagging.review import import_review

    try:
        params, paths = load_params(), layout()
        feedback = paths.feedback(params)
        if feedback is None:
            raise ConfigError("ingest.feedback is empty: set it to the feedback CSV (e.g. data/feedback/labels.csv)")
        url = _existing_catalog(catalog_url(params, root=paths.root, override=database))
        outcome = import_review(review_file, database_url=url, genres=params.genres, feedback=feedback, reviewer=reviewer)
    except GenretagError as exc:
        _exit_with(exc, code=1)
    for problem in outcome.problems:
        typer.echo(f"error: {problem}", err=True)
    typer.echo(f"{feedback}: {outcome.added} labels added, {outcome.relabelled} relabelled, {outcome.unchanged} already there; "
               f"{outcome.blank} rows without corrected_genre (no label), {len(outcome.problems)} rejected")
    if outcome.problems:
        raise typer.Exit(1)


@app.command()
def predict(
    files: list[Path] = typer.Argument(..., help="Audio files (any format, rate, channels, length)."),
    model: str = typer.Option(None, "--model", help=_MODEL_HELP),
    max_windows: int = typer.Option(None, "--max-windows", min=0, help="3-s windows per track; 0: all (default: params.yaml score.max_windows)."),
) -> None:
    """Print the top-3 genres of each file (contract-v2 models: windows at the model's rate); exit 1 when any file could not be scored."""
    from genretag.core.errors import GenretagError
    from genretag.onnx.session import open_model
    from genretag.tagging.scoring import score_files

    try:
        params = load_params()
        scoring_model = open_model(_model_path(model, params=params, root=layout().root))
    except GenretagError as exc:
        _exit_with(exc, code=2)
    typer.echo(f"{scoring_model.model_name} {scoring_model.model_version} on {scoring_model.provider}", err=True)
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
            typer.echo(f"error: {result.path}: {result.error}", err=True)
            continue
        top = "  ".join(f"{genre} {probability:.3f}" for genre, probability in result.score.top3)
        silent = f", {result.score.windows_silent} silent skipped" if result.score.windows_silent else ""
        typer.echo(f"{result.path}  {top}  ({result.score.windows_scored} windows{silent})")
    if failed:
        typer.echo(f"{failed} of {len(files)} files could not be scored", err=True)
        raise typer.Exit(1)

# --- operations commands ---


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
    _orchestrate()
    from flows.retrain import retrain_flow

    state = retrain_flow(
        workspace=str(workspace) if workspace else None, pull_first=pull, ingest=ingest_new, push_after=push,
        lock_wait_s=lock_wait_s, return_state=True,
    )
    summary = state.result()
    typer.echo(f"{state.name}: {summary.get('reason') or 'stages run: ' + (', '.join(summary['stages']) or 'none')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
