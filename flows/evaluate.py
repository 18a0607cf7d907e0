"""Stage `evaluate`: the models/candidates/<id>/model.onnx of every train.candidates id on the test split's audio ->
metrics/candidates/<id>.json, plots/candidates/<id>/ (confusion matrix, t-SNE of the embedding) and
data/scores/<id>.npz (the test clips' probabilities, which the register stage reads instead of scoring again)."""

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import IO_RETRIES, maybe_inject_fault, stage_context
from genretag.core.config import Layout, Params
from genretag.core.errors import GenretagError
from genretag.evaluation.evaluate import TestAudio, evaluate_candidate, find_candidates, read_test_audio
from genretag.evaluation.test_scores import scores_path

HEADLINE = ("track_accuracy_mean_prob", "track_accuracy_vote", "test_accuracy", "macro_f1", "test_loss", "sample_rate")


@task(**IO_RETRIES, cache_policy=NO_CACHE, persist_result=False)
def score_candidate(params: Params, layout: Layout, candidate: str, test: TestAudio, waveforms: dict) -> dict:
    """One candidate from audio through its ONNX graph; a model that cannot run is reported, the others go on."""
    onnx_path = find_candidates(layout, candidates=[candidate])[candidate]
    maybe_inject_fault("evaluate.predict", subject=onnx_path)
    try:
        return evaluate_candidate(candidate, onnx_path, test, metrics_path=layout.metrics_dir / "candidates" / f"{candidate}.json",
                                  plots_dir=layout.plots_dir / "candidates" / candidate, tsne_clips=params.evaluate.tsne_clips,
                                  waveforms=waveforms, scores_path=scores_path(layout, candidate=candidate))
    except GenretagError as exc:
        get_run_logger().error("%s: not evaluated: %s", candidate, exc)
        return {"error": str(exc)}


@flow(name="evaluate")
def evaluate_flow() -> dict:
    """Score every candidate on the same test clips (each at its own sample rate)."""
    params, layout = stage_context()
    test = read_test_audio(layout, genres=params.genres)
    waveforms: dict = {}  # one decoding per sample rate, shared by the candidates (tasks run in this process)
    results = {c: score_candidate(params, layout, c, test, waveforms) for c in find_candidates(layout, candidates=params.train.candidates)}
    rows = "\n".join(
        f"| {c} | " + (" | ".join(f"{m[k]:.4f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in HEADLINE)
                       if "error" not in m else f"not evaluated: {m['error']} |" + " |" * (len(HEADLINE) - 1)) + " |"
        for c, m in results.items()
    )
    create_markdown_artifact(
        key="evaluate-metrics",
        markdown=f"# Candidates on {len(test)} test clips (from audio)\n\n| candidate | {' | '.join(HEADLINE)} |\n"
                 f"| --- |{' --- |' * len(HEADLINE)}\n{rows}\n",
        description="evaluate stage",
    )
    for candidate, metrics in results.items():
        if "error" not in metrics:
            get_run_logger().info("%s: track accuracy %.3f, clip accuracy %.3f, macro F1 %.3f", candidate,
                                  metrics["track_accuracy_mean_prob"], metrics["test_accuracy"], metrics["macro_f1"])
    return results


if __name__ == "__main__":
    evaluate_flow()
