"""Stage `spectrograms`: every clip of data/clips.csv -> data/images/<split>/<genre>/<clip>.png."""

from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from tqdm import tqdm

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag import images
from genretag.config import preprocessing_spec, worker_count
from genretag.dataset import read_table


@task(**IO_RETRIES)
def render(jobs: list[images.TrackJob], spec, root, workers: int) -> int:
    maybe_inject_fault("spectrograms.render")
    with tqdm(total=sum(len(j.images) for j in jobs), desc="spectrograms", unit="clip") as bar:
        return images.render_all(jobs, spec=spec, root=root, workers=workers, progress=bar.update)


@task(name="render-track", **IO_RETRIES, cache_policy=NO_CACHE, persist_result=False)
def render_track(job: images.TrackJob, spec, root: Path) -> int:
    """One track's clips, on whichever Dask worker runs it (data/ must be the same path there)."""
    maybe_inject_fault("spectrograms.render", subject=job.wav_path)
    return len(images.render_track(job, spec=spec, root=root))


@flow(name="spectrograms-dask")
def render_on_dask(jobs: list[images.TrackJob], spec, root: Path) -> tuple[int, int]:
    """Map render_track over the tracks on this flow's DaskTaskRunner; (images written, worker threads)."""
    threads = sum(FlowRunContext.get().task_runner.client.nthreads().values())
    futures = render_track.map(jobs, spec=unmapped(spec), root=unmapped(root))
    return sum(future.result() for future in futures), threads


def render_distributed(jobs: list[images.TrackJob], spec, root: Path, address: str) -> tuple[int, int]:
    """Render on the Dask cluster at ``address`` (params.spectrogram.dask_address)."""
    from prefect_dask import DaskTaskRunner

    return render_on_dask.with_options(task_runner=DaskTaskRunner(address=address))(jobs, spec, root)


@flow(name="spectrograms")
def spectrograms_flow() -> dict:
    """Render the mel-spectrogram image of every clip; unchanged clips are not rendered again."""
    logger = get_run_logger()
    params, layout = stage_context()
    spec = preprocessing_spec(params)
    clips, manifest = read_table(layout.clips), read_table(layout.manifest)
    jobs, wanted = images.plan(
        clips, manifest, spec=spec, clips_per_track=params.audio.clips_per_track, images_dir=layout.images_dir, root=layout.root
    )
    address = params.spectrogram.dask_address
    if address and jobs:
        logger.info("rendering %d tracks on the Dask cluster at %s", len(jobs), address)
        written, workers = render_distributed(jobs, spec, layout.root, address)
    else:
        workers = worker_count(params.spectrogram.workers)
        written = render(jobs, spec, layout.root, workers) if jobs else 0
    removed = images.finish(wanted, images_dir=layout.images_dir, root=layout.root)
    summary = {"clips": len(wanted), "rendered": written, "reused": len(wanted) - written, "removed": removed, "workers": workers}
    logger.info("spectrograms: %s", summary)
    create_markdown_artifact(key="spectrograms-summary", markdown="## Spectrograms\n" + "\n".join(f"- {k}: {v}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    spectrograms_flow()
