"""Stage `validate`: data/raw + manifest -> data/tracks.csv, data/quarantine.csv, reports/validation (GX)."""

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.core.config import Layout, Params
from genretag.data.validation import (
    ValidationOutcome,
    check_bad_fraction,
    read_manifest,
    validate_manifest,
    write_validation_outputs,
)


@task(name="read-manifest", cache_policy=NO_CACHE, **IO_RETRIES)
def read_manifest_task(layout: Layout) -> pd.DataFrame:
    maybe_inject_fault("validate.read", subject=layout.manifest)
    return read_manifest(layout.manifest)


@task(name="run-expectations", cache_policy=NO_CACHE)
def run_expectations(manifest: pd.DataFrame, params: Params, layout: Layout) -> ValidationOutcome:
    return validate_manifest(manifest, root=layout.root, params=params)


@task(name="write-validation-outputs", cache_policy=NO_CACHE, **IO_RETRIES)
def write_outputs(outcome: ValidationOutcome, layout: Layout) -> None:
    write_validation_outputs(outcome, layout=layout)


def _summary_markdown(outcome: ValidationOutcome, params: Params) -> str:
    s = outcome.summary
    lines = [
        "## Validation",
        f"tracks in: {s['tracks_in']}; passed: {s['tracks_passed']}; quarantined: {s['tracks_quarantined']}; "
        f"bad fraction: {s['bad_fraction']:.3f} (limit {params.validation.max_bad_fraction})",
        "",
        "| check | files quarantined |",
        "| --- | --- |",
        *(f"| {name} | {count} |" for name, count in sorted(outcome.reason_counts.items(), key=lambda kv: -kv[1])),
    ]
    if outcome.warnings:
        lines += ["", "### Warnings", *(f"- {warning}" for warning in outcome.warnings)]
    lines += ["", "Details: `data/quarantine.csv`, the report in `reports/validation/summary.html` (GX Data Docs: `index.html`)."]
    return "\n".join(lines)


@flow(name="validate")
def validate_flow() -> dict:
    """Run the GX suites, quarantine bad files, write the report; fail past validate.max_bad_fraction."""
    logger = get_run_logger()
    params, layout = stage_context()
    manifest = read_manifest_task(layout)
    outcome = run_expectations(manifest, params, layout)
    write_outputs(outcome, layout)

    s = outcome.summary
    logger.info(
        "validated %d tracks: %d passed, %d quarantined (bad fraction %.3f, limit %s)",
        s["tracks_in"], s["tracks_passed"], s["tracks_quarantined"], s["bad_fraction"], params.validation.max_bad_fraction,
    )
    for row in outcome.quarantine.itertuples(index=False):
        logger.warning("quarantined %s (%s): %s", row.track_id, row.source_path, row.reason)
    for warning in outcome.warnings:
        logger.warning(warning)
    create_markdown_artifact(key="validation-summary", markdown=_summary_markdown(outcome, params))
    if len(outcome.quarantine):
        create_table_artifact(
            key="validation-quarantine",
            table=outcome.quarantine.to_dict("records"),
            description=f"{len(outcome.quarantine)} of {s['tracks_in']} files quarantined (data/quarantine.csv)",
        )

    check_bad_fraction(outcome, max_bad_fraction=params.validation.max_bad_fraction)
    return dict(s)


if __name__ == "__main__":
    validate_flow()
