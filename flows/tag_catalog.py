"""Tag a music catalog (a folder or a track_id,path CSV) with the champion model's genres.

The steps and their order are genretag.tagging.run.TAGGING_STEPS; this flow runs each as a Prefect
task of the step's name (retried where the step says a retry may clear a failure) and adds what
only a flow has: the model from the registry, decoding on Dask, logs and the summary artifact (its figure embedded).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
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
from genretag.tagging.run import Scorer, Step, TaggingRun, all_steps, local_scorer, run_steps
from genretag.tagging.run_report import TAGGING_REPORTS, run_report_markdown
from genretag.tagging.scoring import ScoredTrack, score_decoded
from genretag.tagging.sources import HashedTrack
from genretag.tagging.store import catalog_url, check_database
from genretag.tagging.windows import TrackWindows, windows_or_reason

_PLAIN = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="check-catalog", **IO_RETRIES, **_PLAIN)
def check_catalog_task(database_url: str) -> None:
    check_database(database_url)


@task(name="load-model", **IO_RETRIES, **_PLAIN)  # a registry download may hiccup; a missing GPU does not retry
def load_model(model: str, *, require_gpu: bool, registry_uri: str, model_name: str) -> ScoringModel:
    return open_model(resolve_model(model, tracking_uri=registry_uri, model_name=model_name), require_gpu=require_gpu)


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


def dask_scorer(model: ScoringModel, *, score: ScoreParams, max_windows: int, silence_rms_dbfs: float) -> Scorer:
    """Decode as decode-track tasks on the Dask cluster at ``score.dask_address`` (a decode-on-dask
    sub-flow per ``score.dask_chunk`` files) and score here. ConfigError when prefect-dask is missing."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # the slim tagger image has no Dask
        raise ConfigError(
            f"score.dask_address is {score.dask_address!r} but prefect-dask is not installed here "
            "(the pipeline image has it; the tagger image does not): unset it or install prefect-dask"
        ) from exc
    decode = decode_on_dask.with_options(task_runner=DaskTaskRunner(address=score.dask_address))

    def scored(todo: Sequence[HashedTrack]) -> Iterator[ScoredTrack]:
        get_run_logger().info("decoding %d tracks as Prefect tasks on the Dask cluster at %s, %d per sub-flow; scoring here on %s",
                              len(todo), score.dask_address, score.dask_chunk, model.provider)
        for start in range(0, len(todo), score.dask_chunk):
            chunk = todo[start : start + score.dask_chunk]
            decoded = decode([str(t.path) for t in chunk], model.sample_rate, model.clip_samples, max_windows, silence_rms_dbfs)
            yield from score_decoded(
                model, ((t, str(t.path), found, reason) for t, (found, reason) in zip(chunk, decoded, strict=True)),
                batch_size=score.batch_size,
            )

    return scored


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
    silence = params.validation.silence_rms_dbfs
    check_catalog_task(url)  # an unreachable or read-only database fails before any heavy work, creating nothing
    scoring_model = load_model(
        model or score.model, require_gpu=require_gpu,
        registry_uri=tracking_uri(params, root=paths.root), model_name=params.registry.model_name,
    )
    if scoring_model.cuda_problem:
        logger.log(*cuda_note(provider=scoring_model.provider, problem=scoring_model.cuda_problem))
    logger.info("model %s %s (%s) runs on %s", scoring_model.model_name, scoring_model.model_version,
                scoring_model.path, scoring_model.provider)
    scorer = (dask_scorer(scoring_model, score=score, max_windows=windows, silence_rms_dbfs=silence) if score.dask_address
              else local_scorer(scoring_model, max_windows=windows, batch_size=score.batch_size, workers=score.workers,
                                silence_rms_dbfs=silence))
    run = TaggingRun(
        source, model=scoring_model, database_url=url, scorer=scorer, commit_every=score.commit_every,
        review_below=score.review_below, drift_limits=score, reference_genres=training_genre_counts(paths.tracks),
        before_read=_read_fault, recorded_as=f"prefect:{flow_run.id}", log=logger, started=started,
        report_dir=paths.reports_dir / TAGGING_REPORTS,
    )
    summary = run_steps(run, call=_call_as_task)

    for line in summary.drift_warnings:
        logger.warning("drift: %s", line)
    logger.info("drift against the training data (%s): %s", summary.drift["reference"],
                {k: v for k, v in summary.drift.items() if k != "reference"})
    logger.info("tagged %d, skipped %d, failed %d in %.1f s (%.2f tracks/s) on %s; %d files skipped (not audio), "
                "%d skipped (macOS metadata)", summary.tagged, summary.skipped, summary.failed, summary.seconds,
                summary.tracks_per_second, summary.provider, summary.not_audio, summary.apple_metadata)
    markdown = summary.to_markdown() if run.report is None else run_report_markdown(summary, run.report)
    create_markdown_artifact(key="tag-catalog-summary", markdown=markdown, description="Catalog tagging run")
    return {**summary.to_dict(), "flow_run_id": str(flow_run.id)}


if __name__ == "__main__":
    tag_catalog_flow(sys.argv[1] if len(sys.argv) > 1 else str(stage_context()[1].raw_dir))
