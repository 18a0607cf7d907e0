"""Stage `evaluate`: models/model.keras on the test clips -> metrics/eval.json, plots, experiments table."""

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.config import Layout, Params
from genretag.evaluate import evaluate

HEADLINE = ("test_accuracy", "test_loss", "track_accuracy_mean_prob", "track_accuracy_vote", "macro_f1",
            "n_test_clips", "n_test_tracks")


@task(**IO_RETRIES)
def score_test_split(params: Params, layout: Layout) -> dict:
    maybe_inject_fault("evaluate.predict", subject=layout.keras_model)
    result = evaluate(params, layout, log=get_run_logger().info)
    return {**result.metrics, "experiment": result.row["experiment"], "mlflow_run_id": result.row["mlflow_run_id"]}


def _markdown(metrics: dict, genres: tuple[str, ...]) -> str:
    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    headline = "\n".join(f"| {key} | {cell(metrics[key])} |" for key in HEADLINE)
    per_genre = "\n".join(
        f"| {g} | {cell(metrics[f'precision_{g}'])} | {cell(metrics[f'recall_{g}'])} | {cell(metrics[f'f1_{g}'])} |"
        for g in genres
    )
    return (
        f"# Evaluation: {metrics['experiment']}\n\n| metric | value |\n| --- | --- |\n{headline}\n\n"
        f"| genre | precision | recall | F1 |\n| --- | --- | --- | --- |\n{per_genre}\n"
    )


@flow(name="evaluate")
def evaluate_flow() -> dict:
    """Score the trained model on the test split; update reports/experiments.{csv,md}."""
    params, layout = stage_context()
    metrics = score_test_split(params, layout)
    get_run_logger().info(
        "%s: test accuracy %.3f, track accuracy %.3f (mean prob) / %.3f (vote), macro F1 %.3f",
        metrics["experiment"], metrics["test_accuracy"], metrics["track_accuracy_mean_prob"],
        metrics["track_accuracy_vote"], metrics["macro_f1"],
    )
    create_markdown_artifact(key="evaluate-metrics", markdown=_markdown(metrics, params.genres),
                             description=f"MLflow run {metrics['mlflow_run_id']}")
    return metrics


if __name__ == "__main__":
    evaluate_flow()
