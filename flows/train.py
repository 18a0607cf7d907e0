"""Stage `candidate-<id>` (``python -m flows.train --candidate <id>``, one per params.yaml
``train.candidates``): trains that model family on the split's audio clips as its own MLflow run
and exports it, parity-gated and temperature-scaled on the validation split, to ``models/candidates/<id>/model.onnx``
with its MODEL_CARD.md (with
``export.quantize: int8`` also ``models/candidates/<id>/int8/model.onnx``, registered as candidate ``<id>-int8``).
"""

import argparse

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import maybe_inject_fault, stage_context
from genretag.core.config import Layout, Params
from genretag.training.train import (
    Candidate,
    export_trained_candidate,
    prepare_candidate,
    quantize_trained_candidate,
    train_candidate,
)


@task(cache_policy=NO_CACHE, persist_result=False)
def prepare(params: Params, layout: Layout, candidate: str) -> Candidate:
    """The family built once and every split decoded once: the other tasks share them."""
    return prepare_candidate(params, layout, candidate)


@task(cache_policy=NO_CACHE, persist_result=False)
def fit_candidate(params: Params, layout: Layout, stage: Candidate) -> dict:
    maybe_inject_fault("train.candidate", subject=stage.name)
    return train_candidate(params, layout, stage, log=get_run_logger().info)


@task(cache_policy=NO_CACHE, persist_result=False)
def export_candidate(params: Params, layout: Layout, stage: Candidate) -> dict:
    result = export_trained_candidate(params, layout, stage)
    p, c = result.parity, result.calibration
    get_run_logger().info("%s calibration: %s (T = %.4g): %s", stage.name, c.method, c.temperature, c.reason)
    return {"onnx": str(result.onnx_path), "max_abs_diff_test": p.max_abs_diff_test,
            "max_abs_diff_synthetic": p.max_abs_diff_synthetic, "onnx_test_accuracy": p.onnx_test_accuracy,
            "calibration": c.method, **c.metrics()}


def _markdown(summary: dict, title: str) -> str:
    rows = "\n".join(
        f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in summary.items() if not isinstance(value, dict | list)
    )
    return f"# {title}\n\n| metric | value |\n| --- | --- |\n{rows}\n"


@task(cache_policy=NO_CACHE, persist_result=False)
def quantize_candidate(params: Params, layout: Layout, stage: Candidate) -> dict:
    result = quantize_trained_candidate(params, layout, stage)
    if result is None:
        return {}
    return {"int8_onnx": str(result.onnx_path), "int8_agreement_test": result.agreement_test,
            "int8_agreement_synthetic": result.agreement_synthetic, "int8_max_abs_diff": result.max_abs_diff}


@flow(name="train-candidate")
def candidate_flow(candidate: str) -> dict:
    """Train one candidate model family, then export it through the parity gate (one family object, fitted
    once; every split decoded once)."""
    params, layout = stage_context()
    stage = prepare(params, layout, candidate)
    summary = {**fit_candidate(params, layout, stage), **export_candidate(params, layout, stage),
               **quantize_candidate(params, layout, stage)}
    get_run_logger().info("candidate %s: ONNX test accuracy %.3f, parity max |diff| %.3g (MLflow run %s)", candidate,
                          summary["onnx_test_accuracy"], summary["max_abs_diff_test"], summary["mlflow_run_id"])
    create_markdown_artifact(key=f"candidate-{candidate}", markdown=_markdown(summary, f"Candidate {candidate}"),
                             description=summary["onnx"])
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidate", required=True, help="a train.candidates id, e.g. paper-exp8")
    candidate_flow(parser.parse_args().candidate)
