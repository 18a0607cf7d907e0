"""Stage `ingest`: source audio (demo corpus, local GTZAN folder, TFDS) -> data/raw + manifest."""

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from tqdm import tqdm

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.core.config import Layout, Params
from genretag.data.ingest import Discovery, SourceFile, discover, feedback_sources, ingest, materialise_source, undecodable_line


@task(**IO_RETRIES)
def find_sources(params: Params, layout: Layout) -> Discovery:
    return discover(materialise_source(params, layout=layout), genres=params.genres)


@task(**IO_RETRIES)
def find_feedback(params: Params, layout: Layout) -> list[SourceFile]:
    return feedback_sources(layout.feedback(params), genres=params.genres)


@task(**IO_RETRIES)
def normalise_audio(sources: list[SourceFile], params: Params, layout: Layout) -> dict:
    maybe_inject_fault("ingest.decode")
    with tqdm(total=len(sources), desc="ingest", unit="file") as bar:
        manifest = ingest(sources, layout=layout, sample_rate=params.audio.sample_rate, progress=bar.update)
    failed = manifest[manifest["error"] != ""]
    return {"files": len(manifest), "decoded": len(manifest) - len(failed),
            "undecodable": failed[["source_path", "error"]].to_dict("records")}


@flow(name="ingest")
def ingest_flow() -> dict:
    """Ingest `ingest.source` into data/raw/<genre>/<track>.wav and data/raw/manifest.csv."""
    logger = get_run_logger()
    params, layout = stage_context()
    found = find_sources(params, layout)
    sources = found.sources
    skipped = {"unknown_genre": len(found.unknown_genre), "not_audio": len(found.not_audio),
               "apple_metadata": len(found.apple_metadata)}
    if found.unknown_genre:
        logger.warning("skipped %d audio files outside any genre folder (genres: %s); folders: %s",
                       len(found.unknown_genre), ", ".join(params.genres),
                       ", ".join(found.unknown_folders()))
    if skipped["not_audio"] or skipped["apple_metadata"]:
        logger.info("skipped %d files that are not audio and %d macOS metadata files (._*, __MACOSX/)",
                    skipped["not_audio"], skipped["apple_metadata"])
    if not sources:
        raise FileNotFoundError(f"ingest.source={params.ingest.source!r}: no audio files under <genre>/ folders")
    reviewed = find_feedback(params, layout)
    logger.info("%d reviewed catalog tracks from the feedback source %s (ingest.feedback)", len(reviewed),
                params.ingest.feedback or "(none)")
    sources = sources + reviewed
    summary = {**normalise_audio(sources, params, layout), "skipped": skipped}
    for bad in summary["undecodable"]:
        logger.warning("%s", undecodable_line(bad["source_path"], bad["error"]))
    logger.info("ingested %d files (%d decoded) from %s", summary["files"], summary["decoded"], params.ingest.source)
    create_markdown_artifact(
        key="ingest-summary",
        markdown=f"## Ingest\nsource: `{params.ingest.source}`; files: {summary['files']}; decoded: {summary['decoded']}; "
        f"undecodable: {len(summary['undecodable'])}; skipped: {skipped['unknown_genre']} outside genre folders, "
        f"{skipped['not_audio']} not audio, {skipped['apple_metadata']} macOS metadata",
    )
    return summary


if __name__ == "__main__":
    ingest_flow()
