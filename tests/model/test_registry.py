"""MLflow registry on a real SQLite store: champion gate, lineage, promote, rollback, fetch, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.export_support import audio_project, centroid_model, constant_model
from typer.testing import CliRunner

from genretag import export, registry
from genretag.config import Layout, Params
from genretag.contract import read_contract
from genretag.errors import RegistryError
from genretag.tracking import tracking_uri
from tests.conftest import REPO_ROOT

CANDIDATES = ("always_blues", "always_jazz", "perfect", "two_of_three")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """A project whose store is its own mlflow.db (params' default), with four exported candidates.

    On the 12 test clips (4 per genre): always_blues and always_jazz score 1/3, two_of_three 2/3
    (it never answers rock), perfect 1.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        params, paths = audio_project(tmp_path_factory.mktemp("registry-project"))
        models = {
            "always_blues": constant_model(0),
            "always_jazz": constant_model(1),
            "perfect": centroid_model(paths),
            "two_of_three": centroid_model(paths, classes=[0, 1]),
        }
        onnx = {}
        for name, model in models.items():
            onnx[name] = export.export_model(params, paths, keras_model=model, onnx_path=paths.models_dir / name / "model.onnx").onnx_path
        yield params, paths, onnx


@pytest.fixture(autouse=True)
def _project_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _named(params: Params, name: str) -> Params:
    return params.model_copy(update={"registry": params.registry.model_copy(update={"model_name": name})})


def _register(params: Params, paths: Layout, onnx: Path) -> registry.Decision:
    return registry.register_model(params, paths, onnx_path=onnx)


def test_the_gate_first_champion_worse_challenger_better_champion_rollback_promote(project) -> None:
    base, paths, onnx = project
    params = _named(base, "gate-lifecycle")

    first = _register(params, paths, onnx["always_blues"])
    assert (first.version, first.alias, first.decision) == ("1", "champion", "promoted")
    assert first.reason.startswith("first version of gate-lifecycle") and first.champion_version is None
    assert first.accuracy == pytest.approx(1 / 3)
    record = json.loads((paths.models_dir / "registry.json").read_text())
    assert record["version"] == "1" and record["alias"] == "champion" and record["decision"] == "promoted"
    assert {"reason", "accuracy", "champion_accuracy"} <= set(record)

    same = _register(params, paths, onnx["always_jazz"])  # 1/3 vs 1/3: no improvement
    assert (same.version, same.alias) == ("2", "challenger")
    assert same.champion_version == "1" and same.champion_accuracy == pytest.approx(1 / 3)
    assert "+0.0000 < min_improvement 0.005; champion kept" in same.reason
    assert json.loads((paths.models_dir / "registry.json").read_text())["alias"] == "challenger"

    better = _register(params, paths, onnx["perfect"])
    assert (better.version, better.alias, better.accuracy) == ("3", "champion", 1.0)
    assert "+0.6667 >= min_improvement" in better.reason and "re-scored on the same 12 test clips" in better.reason

    worse = _register(params, paths, onnx["two_of_three"])
    assert (worse.version, worse.alias) == ("4", "challenger")
    assert worse.accuracy == pytest.approx(2 / 3) and worse.champion_accuracy == 1.0
    assert "champion v3 1.0000" in worse.reason and "champion kept" in worse.reason

    rows = {row.version: row for row in registry.list_versions(params, root=paths.root)}
    assert rows["3"].aliases == ("champion",) and rows["4"].aliases == ("challenger",) and rows["1"].aliases == ()
    assert [rows[v].decision for v in "1234"] == ["promoted", "challenger", "promoted", "challenger"]
    assert rows["2"].reason == same.reason and rows["4"].accuracy == pytest.approx(2 / 3, abs=1e-6)

    back = registry.rollback(params, root=paths.root, reason="v3 mis-tags live traffic")
    assert (back.from_version, back.to_version) == ("3", "1")
    assert _champion(params, paths) == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(params, root=paths.root, reason="again")

    promoted = registry.promote(params, root=paths.root, version="4", reason="editors prefer it")
    assert (promoted.from_version, promoted.to_version) == ("1", "4")
    rows = {row.version: row for row in registry.list_versions(params, root=paths.root)}
    assert rows["4"].aliases == ("champion",)  # the challenger alias left with the promotion
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(params, root=paths.root, version="4", reason="twice")
    assert registry.rollback(params, root=paths.root, reason="editors changed their mind").to_version == "1"

    client = registry._client(params, paths.root)
    assert json.loads(client.get_model_version("gate-lifecycle", "3").tags["genretag.rolled_back"])["reason"] == "v3 mis-tags live traffic"
    assert json.loads(client.get_model_version("gate-lifecycle", "4").tags["genretag.promoted"])["reason"] == "editors prefer it"
    history = registry.champion_history(params, root=paths.root)
    assert [(h["action"], h["from"], h["version"]) for h in history] == [
        ("gate", None, "1"), ("gate", "1", "3"), ("rollback", "3", "1"), ("promote", "1", "4"), ("rollback", "4", "1"),
    ]
    assert history[2]["reason"] == "v3 mis-tags live traffic"


def _champion(params: Params, paths: Layout) -> str:
    return str(registry._client(params, paths.root).get_model_version_by_alias(params.registry.model_name, "champion").version)


def test_the_champion_is_rescored_not_trusted(project) -> None:
    """A champion whose recorded accuracy is stale (here: faked to 0) still wins on today's test clips."""
    base, paths, onnx = project
    params = _named(base, "rescored")
    _register(params, paths, onnx["perfect"])
    client = registry._client(params, paths.root)
    client.set_model_version_tag("rescored", "1", "genretag.test_accuracy", "0.0")
    decision = _register(params, paths, onnx["two_of_three"])
    assert decision.alias == "challenger" and decision.champion_accuracy == 1.0


def test_versions_carry_lineage_and_join_the_training_run(project) -> None:
    import mlflow

    base, paths, onnx = project
    params = _named(base, "lineage")
    registry.use_tracking(params, root=paths.root)
    with mlflow.start_run(run_name="training") as run:
        mlflow.log_param("train.experiment", "exp8")
    (paths.models_dir / "training.json").write_text(json.dumps({"mlflow_run_id": run.info.run_id}))
    try:
        decision = _register(params, paths, onnx["perfect"])
    finally:
        (paths.models_dir / "training.json").unlink()
    assert decision.run_id == run.info.run_id

    client = registry._client(params, paths.root)
    version = client.get_model_version("lineage", decision.version)
    tags = version.tags
    assert version.run_id == run.info.run_id
    assert tags["genretag.git_commit"] == "unknown"
    assert tags["genretag.dvc.data_raw_md5"] == "0123456789abcdef0123456789abcdef.dir"
    assert tags["genretag.dvc.data_images_md5"] == "fedcba9876543210fedcba9876543210.dir"
    assert tags["genretag.model_version"] == read_contract(onnx["perfect"]).model_version
    assert tags["params.train.experiment"] == "exp8" and tags["params.register.min_improvement"] == "0.005"
    assert tags["params.genres"] == '["blues", "jazz", "rock"]'
    assert tags["metrics.test_accuracy"] == "0.75"
    assert tags["genretag.decision"] == "promoted" and tags["genretag.reason"] == decision.reason
    assert tags["genretag.test_accuracy"] == "1.000000" and tags["genretag.test_clips"] == "12"
    assert version.description == decision.reason
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED" and finished.data.metrics["onnx_test_accuracy"] == 1.0

    # Without training.json the model goes into a new run of the experiment, with the params logged.
    other = _register(params, paths, onnx["two_of_three"])
    assert other.run_id and other.run_id != run.info.run_id
    assert client.get_run(other.run_id).data.params["train.experiment"] == "exp8"

    # The stored model: ONNX flavour, CPU provider, explicit pins, the handoff files alongside.
    folder = registry.download_onnx("lineage", decision.version, paths.root / "downloaded")
    mlmodel = (folder / "MLmodel").read_text()
    assert "CPUExecutionProvider" in mlmodel and "CUDAExecutionProvider" not in mlmodel
    requirements = (folder / "requirements.txt").read_text().split()
    pins = dict(r.split("==") for r in requirements)  # every requirement pinned; mlflow adds itself
    assert set(pins) == {"mlflow", "numpy", "onnx", "onnxruntime-gpu"}  # not both onnxruntime packages
    assert pins == {**pins, **dict(r.split("==") for r in registry.pip_requirements(paths.root))}
    assert (folder / "model.onnx").read_bytes() == onnx["perfect"].read_bytes()
    assert {p.name for p in (folder / "extra_files").iterdir()} == {"genretag_spectrogram.py", "genretag_reference.py", "MODEL_CARD.md"}


def test_pip_requirements_are_pinned_from_requirements_lock() -> None:
    lock = {line.split("==")[0]: line.strip() for line in (REPO_ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    assert registry.pip_requirements(REPO_ROOT) == [lock["onnxruntime-gpu"], lock["onnx"], lock["numpy"]]


def test_flattened_params_mask_passwords_in_urls(project) -> None:
    params, _, _ = project
    secret = params.model_copy(update={"score": params.score.model_copy(update={"database_url": "postgresql://tagger:s3cret@db/catalog"})})
    flat = registry.flatten_params(secret)
    assert flat["score.database_url"] == "postgresql://tagger:***@db/catalog"
    assert flat["genres"] == '["blues", "jazz", "rock"]' and flat["spectrogram.fmax"] == "null"


def test_a_failed_registration_is_resumed_not_duplicated(project, monkeypatch) -> None:
    base, paths, onnx = project
    params = _named(base, "resumed")

    def fail_before_logging() -> None:
        raise OSError("tracking server went away")

    with pytest.raises(OSError):
        registry.register_model(params, paths, onnx_path=onnx["always_blues"], before_log=fail_before_logging)
    assert registry.list_versions(params, root=paths.root) == []  # failed before the version existed

    # Failure after the version was created, before the gate: the retry completes that version.
    with monkeypatch.context() as patch:
        patch.setattr(registry, "_gate", lambda *a, **k: (_ for _ in ()).throw(OSError("flaky download")))
        with pytest.raises(OSError):
            registry.register_model(params, paths, onnx_path=onnx["always_blues"])
    assert [row.decision for row in registry.list_versions(params, root=paths.root)] == ["incomplete"]
    first = registry.register_model(params, paths, onnx_path=onnx["always_blues"])
    assert (first.version, first.alias) == ("1", "champion")

    # Failure after the champion alias moved, before the registration was marked complete: the retry
    # keeps the decision taken (not "first version", although the alias already points at v2).
    with monkeypatch.context() as patch:
        patch.setattr(registry, "_record_champion", lambda *a, **k: (_ for _ in ()).throw(OSError("flaky write")))
        with pytest.raises(OSError):
            registry.register_model(params, paths, onnx_path=onnx["perfect"])
    assert _champion(params, paths) == "2"
    second = registry.register_model(params, paths, onnx_path=onnx["perfect"])
    assert (second.version, second.alias, second.champion_version) == ("2", "champion", "1")
    assert "vs champion v1 0.3333" in second.reason
    history = registry.champion_history(params, root=paths.root)
    assert [(h["from"], h["version"]) for h in history] == [(None, "1"), ("1", "2")]
    client = registry._client(params, paths.root)
    assert len(client.search_model_versions("name = 'resumed'")) == 2


def test_fetch_onnx_and_bundle_for_scoring(project, tmp_path, monkeypatch) -> None:
    base, paths, onnx = project
    params = _named(base, "fetched")
    _register(params, paths, onnx["perfect"])
    _register(params, paths, onnx["always_blues"])
    monkeypatch.setenv("GENRETAG_MODEL_CACHE", str(tmp_path / "cache"))
    uri = tracking_uri(params, root=paths.root)

    local = registry.fetch_onnx("champion", tracking_uri=uri, model_name="fetched")
    assert local.read_bytes() == onnx["perfect"].read_bytes()
    assert registry.fetch_onnx("2", tracking_uri=uri, model_name="fetched").read_bytes() == onnx["always_blues"].read_bytes()
    with pytest.raises(RegistryError, match="no version or alias 'gold'"):
        registry.fetch_onnx("gold", tracking_uri=uri, model_name="fetched")
    from genretag.scoring import open_model, resolve_model  # the catalog's way in

    served = open_model(resolve_model("champion", tracking_uri=uri, model_name="fetched"), prefer_gpu=False)
    assert served.path == local and served.model_version == read_contract(onnx["perfect"]).model_version

    bundle = registry.fetch(params, root=paths.root, ref="challenger", out=tmp_path / "bundle")
    assert json.loads((bundle / "labels.json").read_text()) == ["blues", "jazz", "rock"]
    assert (bundle / "model.onnx").read_bytes() == onnx["always_blues"].read_bytes()
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["registry_version"] == "2" and "genretag_spectrogram.py" in manifest["sha256"]


def test_the_cli_lists_promotes_rolls_back_and_fetches(project, tmp_path, monkeypatch) -> None:
    from genretag.cli import app

    base, paths, onnx = project
    params = base  # the CLI reads params.yaml: model name genretag-cnn
    for name in ("always_blues", "perfect"):
        _register(params, paths, onnx[name])
    monkeypatch.setenv("GENRETAG_ROOT", str(paths.root))
    runner = CliRunner()

    listed = runner.invoke(app, ["registry", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split()[:4] == ["version", "aliases", "accuracy", "created"]
    assert lines[1].split()[:3] == ["1", "-", "0.3333"] and "promoted" in lines[1]
    assert lines[2].split()[:3] == ["2", "champion", "1.0000"]

    rolled = runner.invoke(app, ["registry", "rollback", "--reason", "drill"])
    assert rolled.exit_code == 0 and "v2 -> v1 (drill)" in rolled.output
    promoted = runner.invoke(app, ["registry", "promote", "2", "--reason", "drill over"])
    assert promoted.exit_code == 0 and "v1 -> v2 (drill over)" in promoted.output
    history = runner.invoke(app, ["registry", "history"])
    assert "rollback" in history.output and "drill over" in history.output

    missing = runner.invoke(app, ["registry", "promote", "99"])
    assert missing.exit_code == 1 and "no version or alias '99'" in missing.output

    fetched = runner.invoke(app, ["registry", "fetch", "champion", "--out", str(tmp_path / "out")])
    assert fetched.exit_code == 0, fetched.output
    assert (tmp_path / "out" / "model.onnx").read_bytes() == onnx["perfect"].read_bytes()
