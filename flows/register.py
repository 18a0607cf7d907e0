"""Stage `register`: every models/candidates/<id>/model.onnx -> a registry version; the champion gate
on the test audio (the candidates' probabilities from the evaluate stage's data/scores); models/registry.json
and models/GATE.md. When the gate refuses (register.baseline names no candidate or cannot be scored) the
stage exits 1 with the gate's one line."""

import sys
from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.core.config import Layout, Params
from genretag.core.errors import GenretagError
from genretag.registry.register import register_candidates


def _log_model_fault() -> None:
    maybe_inject_fault("register.log_model")


@task(**IO_RETRIES, cache_policy=NO_CACHE, persist_result=False)
def register_and_gate(params: Params, layout: Layout) -> dict:
    """Register the candidates, score them and the champion on the test audio, move the aliases (resumes after a failure)."""
    return asdict(register_candidates(params, layout, before_log=_log_model_fault))


@flow(name="register")
def register_flow() -> dict:
    """Register every candidate; serve only what passes the floor; promote only a significant, large enough gain."""
    params, layout = stage_context()
    outcome = register_and_gate(params, layout)
    get_run_logger().info("%s gate: %s -> champion %s: %s", outcome["model_name"], outcome["decision"],
                          outcome["champion_version"] or "none", outcome["reason"])
    create_markdown_artifact(key="registry-decision", markdown=(layout.models_dir / "GATE.md").read_text(encoding="utf-8"),
                             description=f"champion gate of {outcome['model_name']}")
    return outcome


def main() -> int:
    """``python -m flows.register`` (the DVC stage): 0, or 1 after one ``error: ...`` line on stderr."""
    try:
        register_flow()
    except GenretagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
