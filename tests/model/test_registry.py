"""MLflow registry on a real SQLite store, gated on test audio through real onnxruntime: first champion,
the floor, a non-significant gain, a significantly better model of another family at another sample
rate, resume without duplicates, tagging's one-line refusal, promote/rollback/history, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.gate_support import MEDIOCRE, PARTIAL, PERFECT, save_candidate, tone_model, tone_project, votes
from typer.testing import CliRunner

from genretag.registry.champion import champion_history, promote, rollback
from genretag.registry.client import open_client
from genretag.registry.lineage import flatten_params, pip_requirements
from genretag.registry.listing import list_versions
from genretag.registry.register import register_candidates
from genretag.core.config import Layout, Params
from genretag.core.errors import RegistryError
from genretag.registry.fetch import resolve_model
from genretag.core.tracking import tracking_uri
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def _project_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Layout]:
    """18 test tracks (6 per genre). On them: PERFECT 18/18, PARTIAL 15/18, MEDIOCRE 12/18, a constant 6/18."""
    return tone_project(tmp_path_factory.mktemp("gate-project"))


def _named(params: Params, name: str, **register: object) -> Params:
    return params.model_copy(update={"registry": params.registry.model_copy(update={"model_name": name, **register})})


def _only(paths: Layout, **models) -> dict[str, Path]:
    """Write these candidates (id -> ONNX model) and return exactly them (other tests' files stay out)."""
    return {candidate.replace("_", "-"): save_candidate(paths, candidate.replace("_", "-"), model) for candidate, model in models.items()}


def _champion(params: Params, paths: Layout) -> str | None:
    rows = list_versions(params, root=paths.root)
    return next((row.version for row in rows if "champion" in row.aliases), None)


def test_a_constant_or_random_first_model_is_never_served_and_tagging_refuses_in_one_line(project) -> None:
    base, paths = project
    params = _named(base, "below-floor", baseline=None)  # null: the floor checks chance only
    constant = tone_model(np.zeros((4, 3)), bias=[5.0, 0.0, 0.0], name="constant")
    random_weights = tone_model(np.random.default_rng(7).normal(size=(4, 3)) * 0.01, name="random")
    outcome = register_candidates(params, paths, candidates=_only(paths, paper_exp8=constant, compact=random_weights))
    assert outcome.decision == "none" and outcome.champion_version is None and outcome.rule == "floor"
    assert "paper-exp8: not significantly above chance" in outcome.reason
    assert {row["model"]: row["servable"] for row in outcome.candidates} == {"compact": False, "paper-exp8": False}
    assert "(register.baseline is null: the floor checked chance only)" in outcome.reason
    record = json.loads((paths.models_dir / "registry.json").read_text())
    assert record["champion_version"] is None and record["candidates"][1]["chance_p"] > 0.05
    assert "| paper-exp8 |" in (paths.models_dir / "GATE.md").read_text()

    with pytest.raises(RegistryError) as refused:
        resolve_model("champion", tracking_uri=tracking_uri(params, root=paths.root), model_name="below-floor")
    message = str(refused.value)
    assert "\n" not in message and "serves no champion" in message
    assert "paper-exp8: not significantly above chance (track accuracy 0.333 on 18 tracks" in message and "compact:" in message
    with pytest.raises(RegistryError, match="failed the gate's floor"):
        promote(params, root=paths.root, version="1", reason="by hand")


def test_gate_first_champion_non_significant_gain_then_another_family_at_16k(project) -> None:
    base, paths = project
    params = _named(base, "lifecycle")
    first = register_candidates(params, paths, candidates=_only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc")))
    assert (first.decision, first.rule, first.champion_version) == ("promote", "first-champion", "1")

    # PARTIAL (15/18) vs the champion (12/18): 3 discordant tracks, exact McNemar p = 1/8: not significant.
    kept = register_candidates(params, paths, candidates=_only(
        paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc"), paper_exp8=tone_model(votes(PARTIAL), name="exp8")))
    assert (kept.decision, kept.rule, kept.champion_version) == ("keep", "not-significant", "1")
    assert "p=0.125" in kept.reason and _champion(params, paths) == "1"
    rows = {row.version: row for row in list_versions(params, root=paths.root)}
    assert rows["2"].decision == "challenger" and "challenger" in rows["2"].aliases

    # Another family at 16 kHz, 18/18: 6 discordant tracks, p = 2^-6 < 0.05/2 (Bonferroni over two challengers).
    promoted = register_candidates(params, paths, candidates=_only(
        paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc"), paper_exp8=tone_model(votes(PARTIAL), name="exp8"),
        musicnn_msd=tone_model(votes(PERFECT), sample_rate=16000, family="musicnn", name="musicnn")))
    assert (promoted.decision, promoted.rule, promoted.champion, promoted.champion_version) == (
        "promote", "significant-improvement", "musicnn-msd", "3")
    assert "p=0.0156" in promoted.reason and promoted.previous_champion_version == "1"
    table = {row["model"]: row for row in promoted.candidates}
    assert table["musicnn-msd"]["sample_rate"] == 16000 and table["musicnn-msd"]["track_accuracy"]["estimate"] == 1.0
    assert table["musicnn-msd"]["mcnemar"]["only_a"] == 6 and table["musicnn-msd"]["gain"]["low"] > 0
    assert len(list_versions(params, root=paths.root)) == 3  # the same files were never registered twice
    client = open_client(params, root=paths.root)
    version = client.get_model_version("lifecycle", "3")
    assert version.tags["genretag.decision"] == "champion" and version.tags["genretag.gate.servable"] == "true"
    assert json.loads(version.tags["genretag.gate.evidence"])["metrics"]["track_accuracy"]["estimate"] == 1.0
    assert client.get_registered_model("lifecycle").tags["genretag.gate.rule"] == "significant-improvement"

    back = rollback(params, root=paths.root, reason="drill")
    assert (back.from_version, back.to_version) == ("3", "1")
    assert promote(params, root=paths.root, version="3", reason="drill over").to_version == "3"
    history = champion_history(params, root=paths.root)
    assert [(h["action"], h["version"]) for h in history] == [("gate", "1"), ("gate", "3"), ("rollback", "1"), ("promote", "3")]


def test_a_baseline_that_names_no_candidate_or_cannot_be_scored_refuses_in_one_line_and_moves_nothing(project) -> None:
    base, paths = project
    params = _named(base, "baseline-refusal")
    first = register_candidates(params, paths, candidates=_only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc")))
    assert first.champion_version == "1"
    better = {"musicnn-msd": save_candidate(paths, "musicnn-msd", tone_model(votes(PERFECT), sample_rate=16000, name="musicnn"))}

    typo = _named(base, "baseline-refusal", baseline="mfcc-logreg-typo")  # model_copy skips the params check, as a stale caller would
    with pytest.raises(RegistryError) as refused:
        register_candidates(typo, paths, candidates={**better, **_only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc"))})
    message = str(refused.value)
    assert "\n" not in message and "gate refused" in message and "baseline 'mfcc-logreg-typo' is not among the candidates" in message
    assert message in (paths.models_dir / "GATE.md").read_text()
    assert json.loads((paths.models_dir / "registry.json").read_text())["decision"] == "refused"

    broken = paths.models_dir / "candidates" / "mfcc-logreg" / "model.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(RegistryError, match=r"gate refused: baseline 'mfcc-logreg' cannot be scored \(.*not a readable ONNX model"):
        register_candidates(params, paths, candidates={**better, "mfcc-logreg": broken})
    assert _champion(params, paths) == "1" and len(list_versions(params, root=paths.root)) == 1  # nothing moved, nothing added
    assert [h["version"] for h in champion_history(params, root=paths.root)] == ["1"]


def test_register_reads_the_scores_evaluate_stored_and_trusts_them_only_for_the_same_file(tmp_path: Path) -> None:
    from genretag.evaluation.evaluate import evaluate_candidate, read_test_audio
    from genretag.evaluation.test_scores import scores_path

    params, paths = tone_project(tmp_path / "stored", model_name="stored-scores")
    candidates = _only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc"),
                       musicnn_msd=tone_model(votes(PERFECT), sample_rate=16000, name="musicnn"))
    test = read_test_audio(paths, genres=params.genres)
    for candidate, onnx_path in candidates.items():
        evaluate_candidate(candidate, onnx_path, test, metrics_path=paths.metrics_dir / "candidates" / f"{candidate}.json",
                           plots_dir=tmp_path / "plots" / candidate, tsne_clips=0, scores_path=scores_path(paths, candidate=candidate))
    for wav in paths.raw_dir.rglob("*.wav"):
        wav.unlink()  # register must not decode: the candidates' scores are stored
    outcome = register_candidates(params, paths, candidates=candidates)
    assert (outcome.champion, outcome.champion_version) == ("musicnn-msd", "2")
    assert {row["model"]: row["track_accuracy"]["estimate"] for row in outcome.candidates} == pytest.approx({"mfcc-logreg": 2 / 3, "musicnn-msd": 1.0})

    save_candidate(paths, "mfcc-logreg", tone_model(votes(PARTIAL), name="mfcc"))  # another file: its stored scores are not its own
    with pytest.raises(RegistryError, match=r"gate refused: baseline 'mfcc-logreg' cannot be scored \(.*\.wav"):
        register_candidates(params, paths, candidates=candidates)


def test_an_interrupted_registration_resumes_without_duplicates(project) -> None:
    base, paths = project
    params = _named(base, "resumed")
    candidates = _only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc"),
                       musicnn_msd=tone_model(votes(PERFECT), sample_rate=16000, name="musicnn"))
    calls = []

    def fail_on_second_log() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("tracking server went away")

    with pytest.raises(OSError):
        register_candidates(params, paths, candidates=candidates, before_log=fail_on_second_log)
    assert [row.decision for row in list_versions(params, root=paths.root)] == ["incomplete"]
    done = register_candidates(params, paths, candidates=candidates)
    assert done.champion == "musicnn-msd" and done.champion_version == "2"
    again = register_candidates(params, paths, candidates=candidates)
    assert (again.decision, again.champion_version) == ("keep", "2")
    assert len(list_versions(params, root=paths.root)) == 2
    assert [h["version"] for h in champion_history(params, root=paths.root)] == ["2"]


def test_a_v1_or_unreadable_candidate_is_reported_and_the_others_still_go_through(project) -> None:
    base, paths = project
    params = _named(base, "mixed")
    broken = paths.models_dir / "candidates" / "broken" / "model.onnx"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"not onnx")
    candidates = {"broken": broken, **_only(paths, mfcc_logreg=tone_model(votes(PERFECT), name="mfcc"))}
    outcome = register_candidates(params, paths, candidates=candidates)
    assert outcome.champion == "mfcc-logreg"
    row = next(r for r in outcome.candidates if r["model"] == "broken")
    assert row["version"] is None and not row["servable"] and "not a readable ONNX model" in row["floor"]


def test_pip_requirements_are_pinned_from_requirements_lock() -> None:
    lock = {line.split("==")[0]: line.strip() for line in (REPO_ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    cpu_runtime = lock["onnxruntime-gpu"].replace("onnxruntime-gpu", "onnxruntime")  # a CPU consumer must not get the GPU wheel
    assert pip_requirements(REPO_ROOT) == [cpu_runtime, lock["onnx"], lock["numpy"]]


def test_flattened_params_mask_passwords_in_urls(project) -> None:
    params, _ = project
    secret = params.model_copy(update={"score": params.score.model_copy(update={"database_url": "postgresql://tagger:s3cret@db/catalog"})})
    flat = flatten_params(secret)
    assert flat["score.database_url"] == "postgresql://tagger:***@db/catalog"
    assert flat["genres"] == '["blues", "jazz", "rock"]' and flat["register.alpha"] == "0.05"


def test_the_cli_lists_promotes_and_rolls_back(project, monkeypatch) -> None:
    from genretag.cli.app import app

    base, paths = project
    params = base  # the CLI reads params.yaml: model name gate-test
    register_candidates(params, paths, candidates=_only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc")))
    register_candidates(params, paths, candidates=_only(
        paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc"), musicnn_msd=tone_model(votes(PERFECT), sample_rate=16000, name="m")))
    monkeypatch.setenv("GENRETAG_ROOT", str(paths.root))
    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[1].split()[:3] == ["1", "challenger", "0.6667"]
    assert lines[2].split()[:3] == ["2", "champion", "1.0000"]
    as_json = runner.invoke(app, ["registry", "list", "--json"])
    assert as_json.exit_code == 0, as_json.output
    versions = json.loads(as_json.output)
    assert [(v["version"], v["aliases"], v["accuracy"]) for v in versions] == [("1", ["challenger"], pytest.approx(2 / 3, abs=1e-4)),
                                                                              ("2", ["champion"], 1.0)]
    assert all(v["created"] and v["decision"] and v["run_id"] for v in versions)
    rolled = runner.invoke(app, ["registry", "rollback", "--reason", "drill"])
    assert rolled.exit_code == 0 and "v2 -> v1 (drill)" in rolled.output


def test_one_process_serves_two_projects_each_from_its_own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which tracking_uri() reads as the operator's
    server: pointing MLflow at the first project must not capture every later project."""
    import os

    from genretag.core.tracking import use_tracking

    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    use_tracking(Params(), root=first)
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    assert str(second) in tracking_uri(Params(), root=second) and str(first) not in tracking_uri(Params(), root=second)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")  # an operator's server still wins, and stays
    assert tracking_uri(Params(), root=second) == "http://mlflow.internal:5000"


def test_the_champion_resolves_and_fetches_from_sqlite_without_importing_mlflow(project) -> None:
    """Issue 22: predict and registry fetch with the champion read MLflow's SQLite tables and the local artifact
    folder directly; the file is the one MLflow itself downloads, and a missing alias still fails in one line."""
    import subprocess
    import sys

    from genretag.registry.fetch import download_onnx

    base, paths = project
    params = _named(base, "fast-resolve")
    register_candidates(params, paths, candidates=_only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc")))
    uri = tracking_uri(params, root=paths.root)
    script = (
        "import json, sys, pathlib\n"
        "from genretag.core.config import Params\n"
        "from genretag.registry.fetch import fetch, resolve_model\n"
        f"params = Params.model_validate_json({params.model_dump_json(by_alias=True)!r})\n"
        f"path = resolve_model('champion', tracking_uri={uri!r}, model_name='fast-resolve')\n"
        f"out = fetch(params, root=pathlib.Path({str(paths.root)!r}), ref='champion', out=pathlib.Path(sys.argv[1]))\n"
        "print(json.dumps({'path': str(path), 'mlflow': 'mlflow' in sys.modules}))\n"
    )
    out = paths.root / "fast-bundle"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**__import__("os").environ, "GENRETAG_MODEL_CACHE": str(paths.root / "cache")})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["mlflow"] is False
    downloaded = download_onnx("fast-resolve", version="1", into=paths.root / "mlflow-download")
    assert Path(result["path"]).read_bytes() == (downloaded / "model.onnx").read_bytes()
    assert (out / "model.onnx").read_bytes() == (downloaded / "model.onnx").read_bytes()
    assert json.loads((out / "MANIFEST.json").read_text())["registry_version"] == "1"
    with pytest.raises(RegistryError, match="has no version or alias 'challenger'") as missing:
        resolve_model("challenger", tracking_uri=uri, model_name="fast-resolve")
    assert "\n" not in str(missing.value)


def test_mlflow_as_its_users_expect_metrics_on_runs_that_ended_a_gate_run_a_description_a_classic_experiment(project) -> None:
    """Issue 22: registering never reopens the training run (its end time stays), the test figures are metrics
    of that run and of its logged model, the gate's figures are metrics of a run of its own linked from every
    version, the version's description is the model card's head, and the experiment opens as a classic ML one."""
    import time as clock

    from genretag.core.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, EXPERIMENT_NAME, use_tracking

    base, paths = project
    params = _named(base, "mlflow-users")
    candidates = _only(paths, mfcc_logreg=tone_model(votes(MEDIOCRE), name="mfcc"), compact=tone_model(votes(PERFECT), name="compact"))
    client = open_client(params, root=paths.root)
    experiment_id = use_tracking(params, root=paths.root)
    training = client.create_run(experiment_id, run_name="compact")
    client.set_terminated(training.info.run_id, status="FINISHED")
    ended = client.get_run(training.info.run_id).info.end_time
    (candidates["compact"].parent / "training.json").write_text(json.dumps({"mlflow_run_id": training.info.run_id}))
    (candidates["compact"].parent / "MODEL_CARD.md").write_text(
        "# Model card: mlflow-users\n\n| | |\n| --- | --- |\n| family | `compact` |\n\n## Intended use\n\nSuggest genres.\n\n"
        "## Data\n\nnot in the description\n")
    (paths.metrics_dir / "candidates").mkdir(parents=True, exist_ok=True)
    (paths.metrics_dir / "candidates" / "compact.json").write_text(json.dumps({"track_accuracy": 1.0, "macro_f1": 0.9}))
    clock.sleep(0.05)
    outcome = register_candidates(params, paths, candidates=candidates)
    assert outcome.champion == "compact"

    run = client.get_run(training.info.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == ended  # never reopened
    assert run.data.metrics["test_track_accuracy"] == 1.0 and run.data.metrics["test_macro_f1"] == 0.9
    assert [output.model_id for output in run.outputs.model_outputs]  # the model is logged as this run's
    rows = {row.version: row for row in list_versions(params, root=paths.root)}
    compact = next(v for v in rows if rows[v].run_id == training.info.run_id)
    version = client.get_model_version("mlflow-users", compact)
    assert version.description.startswith("# Model card: mlflow-users") and "Suggest genres." in version.description
    assert "not in the description" not in version.description

    gate = client.get_run(version.tags["genretag.gate.run_id"])
    assert gate.info.status == "FINISHED" and gate.data.tags["genretag.stage"] == "gate"
    assert gate.data.metrics["compact.track_accuracy"] == 1.0 and gate.data.metrics["mfcc-logreg.track_accuracy"] == pytest.approx(12 / 18)
    assert gate.data.metrics["compact.servable"] == 1.0 and 0 < gate.data.metrics["mfcc-logreg.track_accuracy_low"] < 12 / 18
    assert gate.data.tags["genretag.gate.decision"] == "promote"
    assert {item.path for item in client.list_artifacts(gate.info.run_id, "gate")} == {"gate/GATE.md", "gate/registry.json"}
    other = client.get_model_version("mlflow-users", next(v for v in rows if v != compact))
    register_run = client.get_run(other.run_id)  # no training run in the store: a run of its own, ended
    assert register_run.info.status == "FINISHED" and register_run.info.run_name == "register-mfcc-logreg"

    assert client.get_experiment_by_name(EXPERIMENT_NAME).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def _labelled_champion(project, name: str) -> tuple[Params, Layout, str]:
    base, paths = project
    params = _named(base, name, baseline=None)
    outcome = register_candidates(params, paths, candidates=_only(paths, musicnn_msd=tone_model(votes(PERFECT), name="served")))
    assert outcome.champion_version == "1"
    return params, paths, f"models:/{name}@champion"


def _clips() -> np.ndarray:
    """Three 3-s clips at 22,050 Hz: a 220 Hz tone (blues), 880 Hz (jazz), 3,000 Hz (rock)."""
    t = np.arange(3 * 22050) / 22050
    return np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in (220.0, 880.0, 3000.0)]).astype(np.float32)


def test_the_registered_model_answers_with_labels_through_mlflow_pyfunc(project) -> None:
    import mlflow.onnx
    import mlflow.pyfunc

    from genretag.core.tracking import use_tracking

    params, paths, uri = _labelled_champion(project, "labelled")
    use_tracking(params, root=paths.root)
    model = mlflow.pyfunc.load_model(uri)
    answer = model.predict(_clips())
    assert mlflow.onnx.load_model(uri).graph.output[0].name == "probabilities"  # the ONNX flavour is still there
    assert list(answer.columns) == ["genre", "confidence", "top3", "blues", "jazz", "rock"]
    assert list(answer["genre"]) == ["blues", "jazz", "rock"]
    probabilities = answer[["blues", "jazz", "rock"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.allclose(answer["confidence"], probabilities.max(axis=1))
    top = answer["top3"][2]
    assert [entry["genre"] for entry in top][0] == "rock" and len(top) == 3
    assert [entry["probability"] for entry in top] == sorted((entry["probability"] for entry in top), reverse=True)
    with pytest.raises(Exception, match="expected \\[n, 66150\\]|shape"):
        model.predict(_clips()[:, :1000])
    # what fetch resolves (model.onnx in the version's folder) is unchanged
    assert resolve_model("champion", tracking_uri=tracking_uri(params, root=paths.root), model_name="labelled").name == "model.onnx"


@pytest.mark.server
def test_mlflow_models_serve_answers_a_request_with_labels(project, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    params, paths, uri = _labelled_champion(project, "served")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(params, root=paths.root)}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"))
    try:
        body = json.dumps({"inputs": _clips()[:2].tolist()}).encode()
        deadline, answer = time.monotonic() + 180, None
        while answer is None:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    predictions = answer["predictions"]
    assert [p["genre"] for p in predictions] == ["blues", "jazz"]
    assert set(predictions[0]) == {"genre", "confidence", "top3", "blues", "jazz", "rock"}
    assert predictions[1]["top3"][0] == {"genre": "jazz", "probability": predictions[1]["jazz"]}
