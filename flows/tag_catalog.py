"""Tag a music catalog (a folder or a track_id,path CSV) with the champion model's genres.

The steps and their order are genretag.tagging.run.TAGGING_STEPS; this flow runs each as a Prefect
task of the step's name (retried where the step says a retry may clear a failure) and adds what
only a flow has: the model from the registry, scoring on Dask (genretag.tagging.cluster), logs and the summary
artifact (its figure embedded).
"""

from __future__ import annotations

import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.core.config import ScoreParams
from genretag.core.errors import ConfigError
from genretag.core.tracking import tracking_uri
from genretag.evaluation.drift import training_genre_counts
from genretag.onnx.session import ScoringModel, cuda_note, open_model
from genretag.registry.fetch import resolve_model
from genretag.tagging.run import all_steps, local_scorer, run_steps
from genretag.tagging.run_state import Scorer, TaggingRun
from genretag.tagging.steps import Step
from genretag.tagging.early_exit import early_exit_of
from genretag.tagging.run_report import TAGGING_REPORTS, run_report_markdown
from genretag.tagging.database import catalog_url
from genretag.tagging.store import check_database

_PLAIN = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="check-catalog", **IO_RETRIES, **_PLAIN)
def check_catalog_task(database_url: str, create_folder: bool = False) -> None:
    check_database(database_url, create_folder=create_folder)


@task(name="load-model", **IO_RETRIES, **_PLAIN)  # a registry download may hiccup; a missing GPU does not retry
def load_model(model: str, *, require_gpu: bool, registry_uri: str, model_name: str, batch_memory_mb: int) -> ScoringModel:
    return open_model(resolve_model(model, tracking_uri=registry_uri, model_name=model_name), require_gpu=require_gpu,
                      batch_memory_mb=batch_memory_mb)


# The run a step task works on. Not a task parameter: the run holds a model session and a database
# engine, and Prefect ships a task's parameters and its task with the context of any task it submits
# inside it (decode-track to Dask, from within score-tracks).
_RUN: ContextVar[TaggingRun] = ContextVar("tagging_run")
_STEPS = {step.name: step for step in all_steps()}


def _run_step(step: str, *part: Any) -> None:
    _STEPS[step].do(_RUN.get(), *part)


def _run_step_leniently(step: str, *part: Any) -> None:
    _STEPS[step].lenient(_RUN.get(), *part)


_TASKS = {name: task(_run_step, name=name, **(IO_RETRIES if step.retry else {}), **_PLAIN) for name, step in _STEPS.items()}
_LAST_TRIES = {name: task(_run_step_leniently, name=name, **_PLAIN) for name, step in _STEPS.items() if step.lenient}


def _call_as_task(step: Step, run: TaggingRun, *part: Any) -> None:
    """run_steps' way to call a step in this flow: as a Prefect task of the step's name, retried where
    the step says so; a lenient step gets one more, unretried try when its retries fail."""
    token = _RUN.set(run)
    try:
        try:
            _TASKS[step.name](step.name, *part)
        except OSError as exc:
            if step.name not in _LAST_TRIES:
                raise
            get_run_logger().warning("%s kept failing (%s); recording what cannot be read", step.name, exc)
            _LAST_TRIES[step.name](step.name, *part)
    finally:
        _RUN.reset(token)


def _read_fault(path: Path) -> None:
    maybe_inject_fault("tag.read", subject=path)


def cluster_scorer_of(model: ScoringModel, *, score: ScoreParams, max_windows: int, silence_rms_dbfs: float) -> Scorer:
    """Score on the Dask cluster at ``score.dask_address``: each worker decodes and scores its chunk of
    ``score.dask_chunk`` tracks with its own session (genretag.tagging.cluster); this flow plans and
    records. ConfigError when Dask (distributed) is not installed here."""
    try:
        from genretag.tagging.cluster import cluster_scorer
    except ImportError as exc:  # the slim tagger image has no Dask
        raise ConfigError(
            f"score.dask_address is {score.dask_address!r} but Dask (distributed) is not installed here "
            "(the pipeline image has it; the tagger image does not): unset it or install dask[distributed]"
        ) from exc
    return cluster_scorer(model, address=score.dask_address, chunk=score.dask_chunk, max_windows=max_windows,
                          batch_size=score.batch_size, silence_rms_dbfs=silence_rms_dbfs, early_exit=early_exit_of(score),
                          session_threads=score.dask_session_threads, batch_memory_mb=score.batch_memory_mb)


@flow(name="tag-catalog")
def tag_catalog_flow(
    source: str,
    model: str | None = None,
    database_url: str | None = None,
    require_gpu: bool = False,
    max_windows: int | None = None,
    rehash: bool = False,
    retry_failed: bool = False,
    create_catalog: bool = False,
) -> dict:
    """Tag every audio file of ``source`` once per model version; return the run's summary. Only new or
    changed files are read (``rehash``: every file); known failures are not decoded again unless
    ``retry_failed``. A progress line reaches this flow run's log every score.progress_every_s seconds.
    A SQLite catalog's missing folder is created only with ``create_catalog``."""
    logger = get_run_logger()
    started = time.perf_counter()
    params, paths = stage_context()
    score = params.score
    url = catalog_url(params, root=paths.root, override=database_url)
    windows = score.max_windows if max_windows is None else max_windows
    silence = params.validation.silence_rms_dbfs
    check_catalog_task(url, create_folder=create_catalog)  # an unreachable or read-only database fails before any heavy work, creating nothing
    scoring_model = load_model(
        model or score.model, require_gpu=require_gpu,
        registry_uri=tracking_uri(params, root=paths.root), model_name=params.registry.model_name,
        batch_memory_mb=score.batch_memory_mb,
    )
    if scoring_model.cuda_problem:
        logger.log(*cuda_note(provider=scoring_model.provider, problem=scoring_model.cuda_problem))
    logger.info("model %s %s (%s) runs on %s", scoring_model.model_name, scoring_model.model_version,
                scoring_model.path, scoring_model.provider)
    scorer = (cluster_scorer_of(scoring_model, score=score, max_windows=windows, silence_rms_dbfs=silence) if score.dask_address
              else local_scorer(scoring_model, max_windows=windows, batch_size=score.batch_size, workers=score.workers,
                                silence_rms_dbfs=silence, early_exit=early_exit_of(score)))
    run = TaggingRun(
        source, model=scoring_model, database_url=url, scorer=scorer, commit_every=score.commit_every,
        max_pending=score.max_pending, review_below=score.review_below, drift_limits=score, reference_genres=training_genre_counts(paths.tracks),
        before_read=_read_fault, rehash=rehash, retry_failed=retry_failed, hash_workers=score.workers,
        progress_every_s=score.progress_every_s, progress_bars=False,
        recorded_as=f"prefect:{flow_run.id}", log=logger, started=started, create_catalog=create_catalog,
        report_dir=paths.reports_dir / TAGGING_REPORTS, index_dir=params.similar.index_dir,
    )
    summary = run_steps(run, call=_call_as_task)

    for line in summary.drift_warnings:
        logger.warning("drift: %s", line)
    logger.info("drift against the training data (%s): %s", summary.drift["reference"],
                {k: v for k, v in summary.drift.items() if k != "reference"})
    logger.info("tagged %d, skipped %d, failed %d in %.1f s (%.2f tracks/s) on %s; %d files skipped (not audio), "
                "%d skipped (macOS metadata), %d folders not walked (each named in catalog_skips)", summary.tagged,
                summary.skipped, summary.failed, summary.seconds, summary.tracks_per_second, summary.provider,
                summary.not_audio, summary.apple_metadata, summary.folders_skipped)
    markdown = summary.to_markdown() if run.report is None else run_report_markdown(summary, run.report)
    create_markdown_artifact(key="tag-catalog-summary", markdown=markdown, description="Catalog tagging run")
    return {**summary.to_dict(), "flow_run_id": str(flow_run.id)}


if __name__ == "__main__":
    tag_catalog_flow(sys.argv[1] if len(sys.argv) > 1 else str(stage_context()[1].raw_dir))
