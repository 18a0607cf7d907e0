"""Tag a music catalog (a folder or a track_id,path CSV) with the champion model's genres."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.tagging.catalog import (
    Catalog,
    HashedTrack,
    TaggingPlan,
    TaggingSummary,
    SourceScan,
    TrackFailure,
    TrackSource,
    WriteOutcome,
    catalog_url,
    check_database,
    error_row,
    hash_tracks,
    plan_tagging,
    redact,
    scan_source,
    write_results,
)
from genretag.core.config import Params, ScoreParams
from genretag.evaluation.drift import training_genre_counts
from genretag.core.errors import ConfigError
from genretag.core.paths import display
from genretag.onnx.session import ScoringModel, cuda_note, open_model
from genretag.tagging.scoring import (
    ScoredTrack,
    TrackWindows,
    score_decoded,
    score_files,
    windows_or_reason,
)
from genretag.core.tracking import tracking_uri
from genretag.registry.fetch import resolve_model

HASH_CHUNK = 256  # files per hashing task: a transient failure re-reads at most this many
_PLAIN = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="load-model", **IO_RETRIES, **_PLAIN)  # a registry download may hiccup; a missing GPU does not retry
def load_model(model: str, *, require_gpu: bool, registry_uri: str, model_name: str) -> ScoringModel:
    return open_model(resolve_model(model, tracking_uri=registry_uri, model_name=model_name), require_gpu=require_gpu)


@task(name="list-tracks", **IO_RETRIES, **_PLAIN)
def list_tracks_task(source: str) -> SourceScan:
    return scan_source(source)


def _read_fault(path: Path) -> None:
    maybe_inject_fault("tag.read", subject=path)


@task(name="hash-tracks", **IO_RETRIES, **_PLAIN)
def hash_tracks_task(tracks: list[TrackSource], *, strict: bool = True) -> tuple[list[HashedTrack], list[TrackFailure]]:
    return hash_tracks(tracks, before_read=_read_fault, strict=strict)


@task(name="plan-tagging", **IO_RETRIES, **_PLAIN)
def plan_task(catalog: Catalog, hashed: list[HashedTrack], model_version: str) -> TaggingPlan:
    return plan_tagging(hashed, catalog.tagged_shas((t.sha256 for t in hashed), model_version=model_version))


@task(name="score-tracks", **_PLAIN)
def score_task(stream: Iterator[ScoredTrack], count: int) -> list[ScoredTrack]:
    """The next ``count`` results of the scoring pipeline (which runs ahead in its workers)."""
    results: list[ScoredTrack] = []
    for result in stream:
        results.append(result)
        if len(results) >= count:
            break
    return results


@task(name="write-tags", **IO_RETRIES, **_PLAIN)
def write_task(catalog: Catalog, results: list[ScoredTrack], model: ScoringModel, review_below: float) -> WriteOutcome:
    return write_results(catalog, results, model=model, review_below=review_below)


@task(name="write-read-failures", **IO_RETRIES, **_PLAIN)
def write_failures_task(catalog: Catalog, failures: list[TrackFailure], model_version: str) -> tuple[str, ...]:
    return catalog.write([], [error_row(f.track_id, f.path, f.sha256, f.reason, model_version=model_version) for f in failures]).unstored


@task(name="decode-track", **IO_RETRIES, **_PLAIN)
def decode_track(path: str, sample_rate: int, clip_samples: int, max_windows: int, silence_rms_dbfs: float) -> tuple[TrackWindows | None, str]:
    """One file's windows at the model's rate, or why it cannot be scored, on whichever Dask worker runs it."""
    maybe_inject_fault("tag.decode", subject=path)
    return windows_or_reason(
        path=path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs
    )


@flow(name="decode-on-dask", persist_result=False)
def decode_on_dask(
    paths: list[str], sample_rate: int, clip_samples: int, max_windows: int, silence_rms_dbfs: float
) -> list[tuple[TrackWindows | None, str]]:
    """Map decode_track over ``paths`` on this flow's DaskTaskRunner; results in input order."""
    futures = decode_track.map(
        paths, sample_rate=unmapped(sample_rate), clip_samples=unmapped(clip_samples),
        max_windows=unmapped(max_windows), silence_rms_dbfs=unmapped(silence_rms_dbfs),
    )
    return [future.result() for future in futures]


@task(name="check-catalog", **IO_RETRIES, **_PLAIN)
def check_catalog_task(database_url: str) -> None:
    check_database(database_url)


@task(name="open-catalog", **IO_RETRIES, **_PLAIN)
def open_catalog_task(database_url: str) -> Catalog:
    return Catalog(database_url, check_writable=True)


@flow(name="tag-catalog")
def tag_catalog_flow(
    source: str,
    model: str | None = None,
    database_url: str | None = None,
    require_gpu: bool = False,
    max_windows: int | None = None,
) -> dict:
    """Tag every audio file of ``source`` once per model version; return the run's summary."""
    logger = get_run_logger()
    started = time.perf_counter()
    params, paths = stage_context()
    score = params.score
    url = catalog_url(params, root=paths.root, override=database_url)
    windows = score.max_windows if max_windows is None else max_windows
    check_catalog_task(url)  # an unreachable or read-only database fails before any heavy work, creating nothing
    scoring_model = load_model(
        model or score.model, require_gpu=require_gpu,
        registry_uri=tracking_uri(params, root=paths.root), model_name=params.registry.model_name,
    )
    if scoring_model.cuda_problem:
        logger.log(*cuda_note(provider=scoring_model.provider, problem=scoring_model.cuda_problem))
    logger.info("model %s %s (%s) runs on %s", scoring_model.model_name, scoring_model.model_version,
                scoring_model.path, scoring_model.provider)
    summary = TaggingSummary(display(source), redact(url), scoring_model.model_name, scoring_model.model_version, scoring_model.provider)
    catalog = open_catalog_task(url)
    try:
        _scan_and_tag(catalog, source=source, model=scoring_model, params=params, windows=windows, summary=summary)
        summary.seconds = time.perf_counter() - started
        for line in summary.finish_drift(scoring_model.contract.drift_reference, score=score,
                                         fallback_genres=training_genre_counts(paths.tracks)):
            logger.warning("drift: %s", line)
        logger.info("drift against the training data (%s): %s", summary.drift["reference"],
                    {k: v for k, v in summary.drift.items() if k != "reference"})
        catalog.record_run(summary, run=f"prefect:{flow_run.id}")
    finally:
        catalog.close()

    logger.info("tagged %d, skipped %d, failed %d in %.1f s (%.2f tracks/s) on %s; %d files skipped (not audio), "
                "%d skipped (macOS metadata)", summary.tagged, summary.skipped, summary.failed, summary.seconds,
                summary.tracks_per_second, summary.provider, summary.not_audio, summary.apple_metadata)
    create_markdown_artifact(key="tag-catalog-summary", markdown=summary.to_markdown(), description="Catalog tagging run")
    return {**summary.to_dict(), "flow_run_id": str(flow_run.id)}


def _scan_and_tag(catalog: Catalog, *, source: str, model: ScoringModel, params: Params, windows: int,
                  summary: TaggingSummary) -> None:
    """List and hash the source, then tag (see _tag)."""
    logger = get_run_logger()
    scan = list_tracks_task(str(source))
    summary.count_skipped(scan)
    tracks = scan.tracks
    hashed: list[HashedTrack] = []
    unreadable: list[TrackFailure] = []
    for start in range(0, len(tracks), HASH_CHUNK):
        chunk = tracks[start : start + HASH_CHUNK]
        try:
            good, bad = hash_tracks_task(chunk)
        except OSError as exc:  # still failing after the retries: record it per file, go on
            logger.warning("reading files kept failing (%s); recording the unreadable ones", exc)
            good, bad = hash_tracks_task.with_options(retries=0)(chunk, strict=False)
        hashed += good
        unreadable += bad
    _tag(catalog, hashed, unreadable, model=model, params=params, windows=windows, summary=summary)


def _tag(catalog: Catalog, hashed: list[HashedTrack], unreadable: list[TrackFailure], *,
         model: ScoringModel, params: Params, windows: int, summary: TaggingSummary) -> None:
    """Skip what this model version tagged, record unreadable files, score and write the rest."""
    logger = get_run_logger()
    plan = plan_task(catalog, hashed, model.model_version)
    summary.skipped, summary.duplicates = len(plan.already_tagged), len(plan.duplicates)
    summary.moved = catalog.refresh_paths(plan.already_tagged, model_version=model.model_version)
    if unreadable:
        summary.add_unstored(write_failures_task(catalog, unreadable, model.model_version))
        summary.add_failures(unreadable)
    logger.info("%d tracks listed: %d to score, %d already tagged by %s, %d duplicate content, %d unreadable",
                summary.listed, len(plan.todo), len(plan.already_tagged), model.model_version,
                len(plan.duplicates), len(unreadable))

    score, silence = params.score, params.validation.silence_rms_dbfs
    if not score.dask_address:
        stream = score_files(
            model, ((t, t.path) for t in plan.todo), max_windows=windows, batch_size=score.batch_size,
            workers=score.workers, silence_rms_dbfs=silence,
        )
        _write_as_scored(catalog, stream, model=model, score=score, summary=summary)
        return

    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # the slim tagger image has no Dask
        raise ConfigError(
            f"score.dask_address is {score.dask_address!r} but prefect-dask is not installed here "
            "(the pipeline image has it; the tagger image does not): unset it or install prefect-dask"
        ) from exc

    logger.info("decoding %d tracks as Prefect tasks on the Dask cluster at %s, %d per sub-flow; scoring here on %s",
                len(plan.todo), score.dask_address, score.dask_chunk, model.provider)
    decode = decode_on_dask.with_options(task_runner=DaskTaskRunner(address=score.dask_address))
    for start in range(0, len(plan.todo), score.dask_chunk):
        chunk = plan.todo[start : start + score.dask_chunk]
        decoded = decode([str(t.path) for t in chunk], model.sample_rate, model.clip_samples, windows, silence)
        stream = score_decoded(
            model, ((t, str(t.path), found, reason) for t, (found, reason) in zip(chunk, decoded, strict=True)),
            batch_size=score.batch_size,
        )
        _write_as_scored(catalog, stream, model=model, score=score, summary=summary)


def _write_as_scored(catalog: Catalog, stream: Iterator[ScoredTrack], *, model: ScoringModel, score: ScoreParams,
                     summary: TaggingSummary) -> None:
    """Write the stream's results ``score.commit_every`` at a time; close it (and its workers) in any case."""
    try:
        while results := score_task(stream, score.commit_every):
            summary.record(write_task(catalog, results, model, score.review_below))
    finally:
        stream.close()


if __name__ == "__main__":
    tag_catalog_flow(sys.argv[1] if len(sys.argv) > 1 else str(stage_context()[1].raw_dir))
