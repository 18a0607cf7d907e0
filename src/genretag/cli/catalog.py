"""The catalog's commands: tag-catalog, show, export-tags, write-tags, review export|import."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import typer

from genretag.cli.app import MODEL_HELP, app, existing_catalog, exit_with, orchestrate
from genretag.core.config import layout, load_params, params_file

review_app = typer.Typer(no_args_is_help=True, help="The review loop: export low-confidence tags, import corrected genres as training labels.")
app.add_typer(review_app, name="review")


@app.command("tag-catalog")
def tag_catalog(
    source: str = typer.Argument(..., help="A folder (scanned recursively for audio files) or a CSV with columns track_id,path."),
    model: str = typer.Option(None, "--model", help=MODEL_HELP),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else params.yaml score.database_url)."),
    require_gpu: bool = typer.Option(False, "--require-gpu", help="Fail at once unless onnxruntime really runs on CUDA."),
    max_windows: int = typer.Option(None, "--max-windows", min=0, help="3-s windows per track, evenly spaced; 0: all (default: params.yaml score.max_windows)."),
    rehash: bool = typer.Option(False, "--rehash", help="Read and hash every file, trusting no stored fingerprint (finds content changed under the same size and mtime)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Decode again the files whose content failed with this model version before."),
    create_catalog: bool = typer.Option(False, "--create-catalog", help="Create a SQLite catalog's folder when it does not exist (default: refuse, a typo must not invent a database)."),
) -> None:
    """Tag a catalog with genres into the catalog database; reruns skip what this model version tagged.

    A rerun reads only new or changed files: a file whose (device, inode, size, mtime) is unchanged
    since it was hashed is not read (--rehash reads every file). Progress: bars on a terminal, else a
    line every score.progress_every_s seconds.

    With $PREFECT_API_URL set (or score.dask_address, which decodes as Prefect tasks on Dask) this
    runs the tag-catalog flow against that server (else genretag's local one); otherwise the same
    steps run here as plain functions (genretag.tagging.run.tag_catalog), with no Prefect at all.
    """
    from genretag.core.errors import GenretagError, ScoringError
    from genretag.core.paths import absolute, quoted
    from genretag.registry.fetch import resolve_project_model
    from genretag.tagging.database import catalog_url
    from genretag.tagging.store import check_database

    try:
        params, root = load_params(), layout().root
        if not absolute(source).exists():  # before anything is created
            raise ScoringError(f"{quoted(absolute(source))}: no such folder, CSV or audio file")
        # Reachable and writable before the model loads and any file is read (and before Prefect starts).
        check_database(catalog_url(params, root=root, override=database), create_folder=create_catalog)
        model_file = resolve_project_model(model, params=params, root=root)
        if os.environ.get("PREFECT_API_URL") or params.score.dask_address:
            orchestrate()
            from flows.tag_catalog import tag_catalog_flow

            summary = tag_catalog_flow(source=source, model=str(model_file), database_url=database,
                                       require_gpu=require_gpu, max_windows=max_windows, rehash=rehash, retry_failed=retry_failed,
                                       create_catalog=create_catalog)
        else:
            summary = _tag_here(source, model_file, params=params, root=root, database=database,
                                require_gpu=require_gpu, max_windows=max_windows, rehash=rehash, retry_failed=retry_failed,
                                create_catalog=create_catalog)
    except GenretagError as exc:
        exit_with(exc, code=1)
    typer.echo(
        f"{summary['model_name']} {summary['model_version']} on {summary['provider']}: {summary['tagged']} tagged, "
        f"{summary['skipped']} already tagged, {summary['duplicates']} duplicate content, {summary['failed']} failed "
        f"({summary['tracks_per_second']:.2f} tracks/s) -> {summary['database']}; of {summary['files']} files, "
        f"{summary['not_audio']} skipped (not audio), {summary['apple_metadata']} skipped (macOS metadata), "
        f"{summary['folders_skipped']} folders not walked; each skip named in catalog_skips (export-tags --skips)"
    )
    typer.echo(
        f"read {summary['hashed']} files ({summary['bytes_hashed'] / 1e6:.1f} MB); not read: {summary['unchanged']} unchanged, "
        f"{summary['renamed']} moved or renamed; {summary['known_failures']} known failures not decoded again"
        f"{' (--retry-failed decodes them)' if summary['known_failures'] else ''}; {len(summary['unstable'])} unstable"
    )
    for failure in summary["failures"]:
        typer.echo(f"failed: {quoted(failure['path'])}: {quoted(failure['reason'])}", err=True)
    for skip in summary["skips"]:
        if not skip["reason"].startswith(("not audio", "macOS metadata")):  # the files' own skips: in catalog_skips
            typer.echo(f"skipped: {quoted(skip['path'])}: {skip['reason']}", err=True)
    for path in summary["unstable"]:
        typer.echo(f"unstable (changed while read, tried again next run): {quoted(path)}", err=True)
    for path in summary["changed_in_place"]:
        typer.echo(f"changed in place (same size and mtime): {quoted(path)}", err=True)


def _tag_here(source: str, model_file: Path, *, params, root: Path, database: str | None, require_gpu: bool,
              max_windows: int | None, rehash: bool, retry_failed: bool, create_catalog: bool) -> dict:
    """The tagging steps in this process, without Prefect; the run's summary as the flow returns it."""
    from genretag.tagging.database import catalog_url
    from genretag.tagging.run import tag_catalog as tag
    from genretag.tagging.run_report import TAGGING_REPORTS
    from genretag.evaluation.drift import training_genre_counts
    from genretag.onnx.session import open_model
    from genretag.tagging.early_exit import early_exit_of

    score = params.score
    log = logging.getLogger("genretag.tag-catalog")  # the scan's counts and, off a terminal, the progress lines, on stderr
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    summary = tag(
        source, model=open_model(model_file, require_gpu=require_gpu, batch_memory_mb=score.batch_memory_mb),
        database_url=catalog_url(params, root=root, override=database),
        max_windows=score.max_windows if max_windows is None else max_windows, batch_size=score.batch_size,
        commit_every=score.commit_every, max_pending=score.max_pending, workers=score.workers,
        silence_rms_dbfs=params.validation.silence_rms_dbfs,
        reference_genres=training_genre_counts(layout(root).tracks), review_below=score.review_below, drift_limits=score,
        rehash=rehash, retry_failed=retry_failed, progress_every_s=score.progress_every_s, log=log,
        early_exit=early_exit_of(score), create_catalog=create_catalog,
        # the run's page goes to the project's reports/; outside a project (no params file) nothing is written here
        report_dir=layout(root).reports_dir / TAGGING_REPORTS if params_file() else None, index_dir=params.similar.index_dir,
    )
    for line in summary.drift_warnings:
        typer.echo(f"warning: {line}", err=True)
    return summary.to_dict()


@app.command()
def show(
    track: str = typer.Argument(..., help="An audio file (looked up by its content's SHA-256) or a SHA-256 (or its first 8+ hex digits)."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: {track, sha256, tags: [rows as export-tags --format jsonl writes them], errors: [...], skips: [...]}."),
) -> None:
    """What the catalog holds for one track: each model version's top-3 genres and its genre timeline
    (one line per scored window: start, most probable genre, runner-up), why it failed, or why the
    latest run that met it skipped it (a file or folder in catalog_skips). A file whose tags `write-tags`
    wrote is found through its alias."""
    import json

    from genretag.audio.decoding import file_sha256
    from genretag.core.errors import GenretagError
    from genretag.core.paths import absolute, quoted
    from genretag.tagging.export import json_row
    from genretag.tagging.rows import timeline_lines, unknown_prefix
    from genretag.tagging.database import catalog_url
    from genretag.tagging.store import Catalog

    try:
        path = absolute(track)
        sha = file_sha256(path) if path.is_file() else track
        is_sha = re.fullmatch(r"[0-9a-fA-F]{8,64}", sha) is not None
        if not is_sha and not os.path.lexists(path):
            raise GenretagError(f"{track}: no such file, and not a SHA-256 (8 to 64 hex digits)")
        with Catalog(existing_catalog(catalog_url(load_params(), root=layout().root, override=database))) as catalog:
            skips = catalog.find_skips(path)  # a file or folder a run skipped (a folder, a link loop: no content to hash)
            tags, errors = catalog.find(sha) if is_sha else ([], [])
    except GenretagError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not tags and not errors and not skips:
        typer.echo(f"{track}: not in the catalog (sha256 {sha[:12]})", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"track": track, "sha256": sha, "tags": [json_row(row) for row in tags],
                               "errors": [json_row(row) for row in errors], "skips": [json_row(row) for row in skips]},
                              ensure_ascii=False))
        return
    for row in skips[:1]:  # the latest run's reason
        typer.echo(f"{quoted(row['path'])}: skipped by run {row['run_id']}: {row['reason']}")
    for row in tags:
        top = "  ".join(f"{t['genre']} {t['probability']:.3f}" for t in json.loads(row["top3"]))
        flag = ", needs review" if row["needs_review"] else ""
        typer.echo(f"{row['path']} (sha256 {row['sha256'][:12]}) {row['model_name']} {row['model_version']} "
                   f"on {row['provider']}, {row['scored_at']:%Y-%m-%d %H:%M}: {unknown_prefix(row['genre'], row['unknown_score'])}{top}  "
                   f"({row['windows_scored']} windows{flag})")
        for line in timeline_lines(row["window_probabilities"]):
            typer.echo(line)
    for row in errors:
        typer.echo(f"{row['path']} (sha256 {row['sha256'][:12]}) {row['model_version']}: failed: {row['reason']}")


@app.command("export-tags")
def export_tags(
    fmt: str = typer.Option("csv", "--format", help="csv | parquet (native types) | jsonl | json (the same JSON Lines)."),
    out: Path = typer.Option(..., "--out", help="File to write (atomically)."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else params.yaml score.database_url)."),
    model_version: str = typer.Option(None, "--model-version", help="Only this model version's tags (default: all)."),
    include_embedding: bool = typer.Option(False, "--include-embedding",
                                           help="Add each tag's track embedding (CSV: base64 of its little-endian bytes; Parquet: a list of floats)."),
    skips: bool = typer.Option(False, "--skips", help="Export catalog_skips instead: every file and folder a run skipped, with its reason and run id."),
) -> None:
    """Export the catalog_tags table, each row with its model (registry) version and tagging run, to CSV,
    Parquet or JSON Lines (genretag.tagging.export); with --skips, catalog_skips instead."""
    from genretag.tagging.database import catalog_url
    from genretag.tagging.export import FORMATS, export_tags as export
    from genretag.core.errors import GenretagError

    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}, not {fmt!r}", param_hint="--format")
    paths = layout()
    try:
        rows = export(existing_catalog(catalog_url(load_params(), root=paths.root, override=database)), out=out, fmt=fmt,
                      model_version=model_version, table="catalog_skips" if skips else "catalog_tags",
                      include_embedding=include_embedding)
    except GenretagError as exc:
        exit_with(exc, code=1)
    typer.echo(f"wrote {rows} {'skipped files and folders' if skips else 'tags'} to {out}")


@app.command("write-tags")
def write_tags(
    paths: list[Path] = typer.Argument(None, help="Audio files or folders (scanned recursively) whose tags to write."),
    every: bool = typer.Option(False, "--all", help="Every file the catalog has tagged, at its stored path."),
    policy: str = typer.Option("only-if-empty", "--policy", help="only-if-empty | replace | add (keep the file's genres, add ours)."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", min=0.0, max=1.0, help="Write no genre below this probability."),
    top_k: int = typer.Option(1, "--top-k", min=1, help="At most this many genres per file, most probable first."),
    genre_map: Path = typer.Option(None, "--genre-map", help="Your vocabulary: YAML (genre: a name, a list of names, or null to drop it) or CSV (columns genre,name)."),
    confidence_field: bool = typer.Option(False, "--confidence-field", help="Also write GENRETAG (TXXX / Vorbis / MP4 freeform): probabilities and model."),
    include_review: bool = typer.Option(False, "--include-review", help="Also write tags flagged needs_review and the genre 'unknown'."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing: print each file's genre diff."),
    model_version: str = typer.Option(None, "--model-version", help="This model version's tags (default: each file's newest)."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file (path, status, before, after, reason)."),
) -> None:
    """Write the catalog's genres into the audio files' own tags (ID3v2.4 TCON, Vorbis GENRE, MP4 \u00a9gen), atomically,
    the audio untouched (genretag.tagging.tag_writer). One line per file; exit 1 when any file failed."""
    import json

    from genretag.core.errors import GenretagError
    from genretag.tagging.database import catalog_url
    from genretag.tagging.tag_writer import TagWriteOptions, load_genre_map, write_tags as write

    try:
        options = TagWriteOptions(policy=policy, min_confidence=min_confidence, top_k=top_k,
                                  genre_map=load_genre_map(genre_map) if genre_map else {}, confidence_field=confidence_field,
                                  include_review=include_review, dry_run=dry_run)
        url = existing_catalog(catalog_url(load_params(), root=layout().root, override=database))
        results = write(url, paths=paths or (), every=every, options=options, model_version=model_version)
    except GenretagError as exc:
        exit_with(exc, code=1)
    for result in results:
        typer.echo(json.dumps(result.to_dict()) if as_json else result.line(), err=result.status == "failed" and not as_json)
    counts = {status: sum(r.status == status for r in results) for status in ("written", "would-write", "unchanged", "skipped", "failed")}
    if not as_json:
        typer.echo(", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no files", err=True)
    if counts["failed"]:
        raise typer.Exit(1)


@review_app.command("export")
def review_export(
    out: Path = typer.Option(..., "--out", help="CSV to write (atomically)."),
    sample: int = typer.Option(0, "--sample", min=0, help="Unflagged tags to add at random for quality control."),
    seed: int = typer.Option(0, "--seed", help="Seed of the quality-control sample."),
    database: str = typer.Option(None, "--database", help="SQLAlchemy URL (default: $GENRETAG_CATALOG_URL, else score.database_url)."),
) -> None:
    """Write the tags flagged needs_review (confidence below score.review_below) and a random sample of the
    others (reason: needs_review | qc_sample) with an empty corrected_genre column for the reviewer."""
    from genretag.tagging.database import catalog_url
    from genretag.core.errors import GenretagError
    from genretag.tagging.review import NEEDS_REVIEW, export_review

    try:
        url = existing_catalog(catalog_url(load_params(), root=layout().root, override=database))
        sheet = export_review(url, out=out, sample=sample, seed=seed)
    except GenretagError as exc:
        exit_with(exc, code=1)
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
    from genretag.tagging.database import catalog_url
    from genretag.core.errors import ConfigError, GenretagError
    from genretag.tagging.review import import_review

    try:
        params, paths = load_params(), layout()
        feedback = paths.feedback(params)
        if feedback is None:
            raise ConfigError("ingest.feedback is empty: set it to the feedback CSV (e.g. data/feedback/labels.csv)")
        url = existing_catalog(catalog_url(params, root=paths.root, override=database))
        outcome = import_review(review_file, database_url=url, genres=params.genres, feedback=feedback, reviewer=reviewer)
    except GenretagError as exc:
        exit_with(exc, code=1)
    for problem in outcome.problems:
        typer.echo(f"error: {problem}", err=True)
    typer.echo(f"{feedback}: {outcome.added} labels added, {outcome.relabelled} relabelled, {outcome.unchanged} already there; "
               f"{outcome.blank} rows without corrected_genre (no label), {len(outcome.problems)} rejected")
    if outcome.problems:
        raise typer.Exit(1)
