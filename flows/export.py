"""Stage `export`: models/model.keras -> models/model.onnx (contract, parity gate) + models/MODEL_CARD.md."""

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.config import Layout, Params
from genretag.export import export_model


@task(**IO_RETRIES, cache_policy=NO_CACHE, persist_result=False)
def convert_and_check(params: Params, layout: Layout) -> dict:
    """Convert, check parity with Keras on the test images and random input, write both files."""
    maybe_inject_fault("export.convert", subject=layout.keras_model)
    result = export_model(params, layout)
    parity = result.parity
    return {
        "onnx": str(result.onnx_path),
        "card": str(result.card_path),
        "model_name": result.contract.model_name,
        "model_version": result.contract.model_version,
        "opset": result.opset,
        "training_data_hash": result.contract.training_data_hash,
        "git_commit": result.contract.git_commit,
        "tolerance": parity.tolerance,
        "test_clips": parity.test_clips,
        "random_inputs": parity.random_inputs,
        "max_abs_diff_test": parity.max_abs_diff_test,
        "max_abs_diff_random": parity.max_abs_diff_random,
        "near_ties": parity.near_ties,
        "onnx_test_accuracy": parity.onnx_test_accuracy,
    }


@flow(name="export")
def export_flow() -> dict:
    """Export the trained Keras model to ONNX; nothing is written unless ONNX matches Keras."""
    params, layout = stage_context()
    summary = convert_and_check(params, layout)
    get_run_logger().info(
        "exported %s %s (opset %d): parity max |diff| %.3g on %d test clips, %.3g on %d random inputs "
        "(tolerance %g), ONNX test accuracy %.4f",
        summary["model_name"], summary["model_version"], summary["opset"], summary["max_abs_diff_test"],
        summary["test_clips"], summary["max_abs_diff_random"], summary["random_inputs"], summary["tolerance"],
        summary["onnx_test_accuracy"],
    )
    create_markdown_artifact(
        key="export-parity",
        markdown=(
            f"# Export: {summary['model_name']} `{summary['model_version']}`\n\n| check | value |\n| --- | --- |\n"
            f"| max abs diff, {summary['test_clips']} test clips | {summary['max_abs_diff_test']:.3g} |\n"
            f"| max abs diff, {summary['random_inputs']} random inputs | {summary['max_abs_diff_random']:.3g} |\n"
            f"| tolerance | {summary['tolerance']:g} |\n| argmax | identical ({summary['near_ties']} near ties) |\n"
            f"| ONNX test accuracy | {summary['onnx_test_accuracy']:.4f} |\n| opset | {summary['opset']} |\n"
            f"| training data | `{summary['training_data_hash']}` |\n| git commit | `{summary['git_commit']}` |\n"
        ),
        description=summary["onnx"],
    )
    return summary


if __name__ == "__main__":
    export_flow()
