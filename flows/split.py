"""Stage `split`: validated tracks -> 3-s clips with a train/validation/test split (data/clips.csv)."""

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.common import IO_RETRIES, stage_context
from genretag.core.config import Layout, Params
from genretag.data.ingest import read_table
from genretag.data.splits import make_clips


@task(**IO_RETRIES)
def split_clips(params: Params, layout: Layout) -> list[dict]:
    clips = make_clips(read_table(layout.tracks), params=params, layout=layout)
    counts = clips.groupby("split").agg(clips=("clip_id", "size"), tracks=("track_id", "nunique"))
    return counts.reset_index().to_dict("records")


@flow(name="split")
def split_flow() -> list[dict]:
    """Cut data/tracks.csv into clips and split them per `split.method`."""
    params, layout = stage_context()
    counts = split_clips(params, layout)
    get_run_logger().info("split (%s): %s", params.split.method, counts)
    create_table_artifact(key="split-counts", table=counts, description=f"split.method = {params.split.method}")
    return counts


if __name__ == "__main__":
    split_flow()
