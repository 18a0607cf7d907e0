"""Stage `register`: models/model.onnx -> a new MLflow registry version, champion gate, models/registry.json."""

from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.config import Layout, Params
from genretag.registry import register_model


def _log_model_fault() -> None:
    maybe_inject_fault("register.log_model")


@task(**IO_RETRIES, cache_policy=NO_CACHE, persist_result=False)
def register_version(params: Params, layout: Layout) -> dict:
    """Log and register the model, re-score the champion, move the aliases (resumes after a failure)."""
    return asdict(register_model(params, layout, before_log=_log_model_fault))


def _accuracy(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@flow(name="register")
def register_flow() -> dict:
    """Register the exported model; it becomes champion only if it beats the champion by register.min_improvement."""
    params, layout = stage_context()
    decision = register_version(params, layout)
    get_run_logger().info(
        "%s v%s -> %s: %s", decision["model_name"], decision["version"], decision["alias"], decision["reason"]
    )
    champion = f"v{decision['champion_version']}" if decision["champion_version"] else "none"
    create_markdown_artifact(
        key="registry-decision",
        markdown=(
            f"# {decision['model_name']} v{decision['version']}: {decision['alias']}\n\n{decision['reason']}\n\n"
            f"| | new v{decision['version']} | champion before ({champion}) |\n| --- | --- | --- |\n"
            f"| test accuracy ({decision['test_clips']} clips) | {_accuracy(decision['accuracy'])} "
            f"| {_accuracy(decision['champion_accuracy'])} |\n\n"
            f"min_improvement {decision['min_improvement']:g}; model `{decision['model_version']}`; "
            f"run `{decision['run_id']}`; `{decision['model_uri']}`\n"
        ),
        description=f"promotion decision for {decision['model_uri']}",
    )
    return decision


if __name__ == "__main__":
    register_flow()
