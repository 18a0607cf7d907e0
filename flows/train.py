"""Stage `train`: spectrogram PNGs of clips.csv -> models/model.keras, training.json, metrics, curves."""

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.config import Layout, Params
from genretag.train import train


@task(**IO_RETRIES)
def fit_model(params: Params, layout: Layout) -> dict:
    maybe_inject_fault("train.fit", subject=params.train.experiment)
    result = train(params, layout, log=get_run_logger().info)
    return {**result.metrics, "experiment": result.experiment, "mlflow_run_id": result.run_id}


def _markdown(summary: dict, params: Params) -> str:
    rows = "\n".join(
        f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in summary.items()
    )
    size = "x".join(str(v) for v in params.spectrogram.image_size)
    return f"# Training: {params.train.experiment} on {size} images\n\n| metric | value |\n| --- | --- |\n{rows}\n"


@flow(name="train")
def train_flow() -> dict:
    """Train params.yaml's `train.experiment` with early stopping; log the run to MLflow."""
    params, layout = stage_context()
    summary = fit_model(params, layout)
    get_run_logger().info(
        "trained %s: best epoch %s of %s, validation accuracy %.3f (MLflow run %s)",
        summary["experiment"], summary["best_epoch"], summary["epochs"],
        summary["validation_accuracy"], summary["mlflow_run_id"],
    )
    create_markdown_artifact(key="train-metrics", markdown=_markdown(summary, params),
                             description=f"train.experiment = {params.train.experiment}")
    return summary


if __name__ == "__main__":
    train_flow()
