"""The out-of-taxonomy score (issue 21) on real onnxruntime: the export writes the bank of train-track embeddings
into the metadata (the score is the cosine distance of a track's embedding to its k-th nearest train track) and
fits its threshold on the validation tracks only; the tagger records a track past it as genre ``unknown`` with its top 3 kept and needs_review set;
a model exported before it tags as before, with one notice."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from tests.export_support import GENRES, GraphFamily, audio_project
from tests.tagging_support import make_onnx_model

from genretag.evaluation.open_set import fit_threshold
from genretag.onnx.contract import (
    EMBEDDING_NAME,
    KEY_OPEN_SET,
    METHOD_TRACK_KNN,
    UNKNOWN,
    ModelContract,
    OpenSet,
    read_contract,
)
from genretag.onnx.session import cpu_session, open_model, predict_waveforms
from genretag.tagging.rows import is_unknown
from genretag.training import export
from genretag.training.open_set import fit_open_set
from genretag.training.parity import TestClips
from genretag.training.train import parity_clips


K, BANK = 2, 6  # the toy's neighbours and its bank: fewer than its 9 train tracks, so the seeded sample is exercised


class Toy(GraphFamily):
    """A test family: tests.tagging_support's onnx.helper graph (log energies -> embedding [N, 16] -> softmax)."""

    def __init__(self, folder: Path) -> None:
        self.proto = onnx.load(make_onnx_model(folder / "toy.onnx", version="toy", seed=3, labels=GENRES))


def _export(root: Path, family: Toy, *, train: TestClips, validation: TestClips, test: TestClips, name: str = "model.onnx") -> export.ExportResult:
    contract = ModelContract(labels=GENRES, model_name="genretag-cnn", model_version="open-0001", sample_rate=family.sample_rate,
                             clip_samples=family.clip_samples, family=family.name)
    return export.export_candidate(family, contract=contract, onnx_path=root / "out" / name, test=test, validation=validation,
                                   train=train, unknown_accept=0.75, unknown_neighbours=K, unknown_bank_tracks=BANK, seed=5)


def _first(clips: TestClips, n: int) -> TestClips:
    """The first ``n`` clips of ``clips``."""
    return TestClips(waveforms=clips.waveforms[:n], genres=clips.genres[:n], clip_ids=clips.clip_ids[:n],
                     sample_rate=clips.sample_rate, track_ids=clips.track_ids[:n])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("open-set")
    params, paths = audio_project(root / "project", tracks={"train": 3, "validation": 4, "test": 2}, clips_per_track=2)
    family = Toy(root)
    splits = {split: parity_clips(params, paths, family, split) for split in ("train", "validation", "test")}
    return root, params, paths, family, splits, _export(root, family, **splits)


def test_the_score_is_the_track_embeddings_distance_to_the_bank_and_the_threshold_is_the_validation_quantile(project) -> None:
    root, params, paths, family, splits, result = project
    contract = read_contract(result.onnx_path)
    open_set = contract.open_set
    assert open_set.available and (open_set.method, open_set.output) == (METHOD_TRACK_KNN, EMBEDDING_NAME)
    session = cpu_session(result.onnx_path)
    assert [o.name for o in session.get_outputs()] == ["probabilities", EMBEDDING_NAME]  # the score needs no extra output
    train, validation = (parity_clips(params, paths, family, split) for split in ("train", "validation"))
    train_embeddings = predict_waveforms(session, train.waveforms).embedding
    validation_embeddings = predict_waveforms(session, validation.waveforms).embedding

    def unit(e: np.ndarray) -> np.ndarray:
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    # by hand: a track's embedding is the mean of its windows'; the bank a seeded sample of the train tracks', normalised
    train_ids = list(dict.fromkeys(train.track_ids))
    train_tracks = unit(np.stack([train_embeddings[np.array(train.track_ids) == t].mean(axis=0) for t in train_ids]))
    assert len(train_ids) > BANK and open_set.bank_vectors.shape == (BANK, train_embeddings.shape[1])
    assert all(np.isclose(train_tracks @ row, 1.0, atol=1e-6).any() for row in open_set.bank_vectors)
    validation_ids = list(dict.fromkeys(validation.track_ids))
    vectors = np.stack([validation_embeddings[np.array(validation.track_ids) == t].mean(axis=0) for t in validation_ids])
    by_hand = 1 - np.sort(unit(vectors) @ open_set.bank_vectors.T.astype(np.float64), axis=1)[:, -K]
    np.testing.assert_allclose([open_set.track_score(v) for v in vectors], by_hand, atol=1e-6)
    assert len(validation_ids) == 12 and open_set.validation_tracks == 12
    assert open_set.threshold == pytest.approx(fit_threshold(by_hand, accept=0.75), abs=1e-6)
    assert open_set.validation_accepted >= 0.75
    fit = fit_open_set(train_embeddings=train_embeddings, train_tracks=train.track_ids, validation_embeddings=validation_embeddings,
                       validation_tracks=validation.track_ids, accept=0.75, k=K, max_tracks=BANK, seed=5)
    assert fit.open_set == open_set
    record = json.loads({p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}[KEY_OPEN_SET])
    assert (record["method"], record["neighbours"], record["bank_tracks"], record["dimension"]) == (
        METHOD_TRACK_KNN, K, BANK, train_embeddings.shape[1])


def test_with_no_validation_split_the_threshold_is_fitted_leave_one_out_over_the_train_tracks() -> None:
    """A model trained on every labelled track (the refit the CV gate serves): each train track is scored against
    the bank without itself, and the threshold is the accept quantile of those scores."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 8))
    tracks = tuple(f"t{i // 2}" for i in range(24))  # 12 tracks of 2 windows, 4 per centre
    windows = np.repeat(centres, 8, axis=0) + 0.3 * rng.normal(size=(24, 8))
    fit = fit_open_set(train_embeddings=windows, train_tracks=tracks, validation_embeddings=np.zeros((0, 8)),
                       validation_tracks=(), accept=0.75, k=1, max_tracks=100, seed=0)
    open_set = fit.open_set
    assert open_set.available and open_set.fitted_on == "leave-one-out" and open_set.validation_tracks == 12
    means = np.stack([windows[np.array(tracks) == t].mean(axis=0) for t in dict.fromkeys(tracks)])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    by_hand = 1 - similarity.max(axis=1)
    assert open_set.threshold == pytest.approx(fit_threshold(by_hand, accept=0.75), abs=1e-6)
    assert open_set.track_score(means[0]) == pytest.approx(0.0, abs=1e-6)  # a train track is its own nearest bank row
    assert "leave-one-out" in fit.reason


def test_a_per_window_record_of_an_older_export_reads_as_no_open_set() -> None:
    """Models exported with the first, per-window score (an ``unknown_score`` output, no bank) cannot say unknown."""
    older = {"method": "knn", "output": "unknown_score", "threshold": 0.3, "accept": 0.95, "neighbours": 1, "bank_clips": 2000}
    assert not OpenSet.from_dict(older).available and OpenSet.from_dict(older) == OpenSet.absent()
    assert OpenSet.from_dict({}).track_score(np.ones(4)) is None


def test_the_threshold_moves_with_the_validation_split_only(project) -> None:
    root, params, paths, family, splits, result = project
    other_test = _export(root, family, **{**splits, "test": splits["validation"]}, name="other-test.onnx")
    assert other_test.open_set.threshold == result.open_set.threshold
    fewer = _export(root, family, **{**splits, "validation": _first(splits["validation"], 12)}, name="other-validation.onnx")
    assert fewer.open_set.validation_tracks == 6 and fewer.open_set.threshold != result.open_set.threshold


def test_the_model_card_says_how_unknown_is_decided(project) -> None:
    from genretag.training.card import render_model_card

    root, params, paths, family, splits, result = project
    card = render_model_card(params, result.contract, parity=result.parity, test=splits["test"], open_set=result.open_set)
    section = card.split("## Out-of-taxonomy", 1)[1].split("\n## ", 1)[0]
    assert f"{K}-th nearest of {BANK}" in section and "train tracks' embeddings" in section and f"**{result.open_set.threshold:.4g}**" in section
    assert f"accepts {result.open_set.validation_accepted:.1%} of the 12 validation tracks" in section
    assert "cannot say" in render_model_card(params, result.contract, parity=result.parity, test=splits["test"]).split(
        "## Out-of-taxonomy", 1)[1]


def test_the_open_set_facts_go_to_the_finished_training_run_without_reopening_it(project, monkeypatch) -> None:
    import mlflow

    from genretag.core.tracking import use_tracking
    from genretag.training.train import log_export_facts

    root, params, paths, family, splits, result = project
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_tracking(params, root=paths.root)
    with mlflow.start_run(run_name="training") as run:
        pass
    client = mlflow.MlflowClient()
    ended = client.get_run(run.info.run_id).info.end_time
    log_export_facts(params, paths, run.info.run_id, result.calibration, result.track_calibration, result.open_set)
    logged = client.get_run(run.info.run_id)
    assert logged.info.status == "FINISHED" and logged.info.end_time == ended
    assert logged.data.metrics["unknown_threshold"] == pytest.approx(result.open_set.threshold)
    assert logged.data.metrics["unknown_validation_accepted"] == pytest.approx(result.open_set.validation_accepted)
    assert logged.data.metrics["unknown_validation_tracks"] == 12 and "temperature" in logged.data.metrics
    assert logged.data.params == {"unknown_method": METHOD_TRACK_KNN, "unknown_accept": "0.75", "unknown_neighbours": str(K),
                                  "unknown_bank_tracks": str(BANK)}


def _tag(folder: Path, model_path: Path, database: Path, caplog: pytest.LogCaptureFixture):
    from genretag.tagging.run import tag_catalog
    from genretag.tagging.store import Catalog

    url = f"sqlite:///{database}"
    with caplog.at_level(logging.WARNING):
        summary = tag_catalog(folder, model=open_model(model_path, prefer_gpu=False), database_url=url, workers=1, review_below=0.0)
    with Catalog(url) as catalog:
        rows = {Path(row["path"]).name: row for row in catalog.read("catalog_tags").to_dict("records")}
    return summary, rows


@pytest.fixture(scope="module")
def catalog_music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training-like tone per genre, and white noise at full scale: nothing like any genre's tone."""
    from tests.conftest import write_audio
    from tests.export_support import genre_audio

    folder = tmp_path_factory.mktemp("catalog-music")
    for number, genre in enumerate(GENRES):
        write_audio(folder / f"{genre}.wav", genre_audio(genre, 9.0, seed=100 + number))
    write_audio(folder / "noise.wav", (np.random.default_rng(7).uniform(-0.9, 0.9, 9 * 22050)).astype(np.float32))
    return folder


def test_an_out_of_taxonomy_track_is_tagged_unknown_with_its_top3_and_flagged(project, catalog_music: Path, tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    result = project[-1]
    summary, rows = _tag(catalog_music, result.onnx_path, tmp_path / "catalog.db", caplog)
    noise = rows["noise.wav"]
    assert noise["genre"] == UNKNOWN and is_unknown(noise) and noise["needs_review"]
    assert noise["unknown_score"] > result.open_set.threshold
    top3 = json.loads(noise["top3"])
    assert len(top3) == 3 and {t["genre"] for t in top3} == set(GENRES)
    known = [rows[f"{genre}.wav"] for genre in GENRES]
    assert all(row["unknown_score"] is not None for row in known)
    assert [row["genre"] for row in known if not is_unknown(row)]  # the tones are (mostly) accepted as genres
    assert not summary.notes and "cannot say 'unknown'" not in caplog.text


def test_an_old_model_without_open_set_tags_as_before_and_says_so_once(project, catalog_music: Path, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    old = make_onnx_model(tmp_path / "old.onnx", version="old-0001", seed=3, labels=GENRES)
    summary, rows = _tag(catalog_music, old, tmp_path / "catalog.db", caplog)
    assert all(row["unknown_score"] is None and not is_unknown(row) for row in rows.values())
    assert not read_contract(old).open_set.available
    assert caplog.text.count("cannot say 'unknown'") == 1 and len(summary.notes) == 1
    assert "cannot say 'unknown'" in summary.to_markdown()


@pytest.mark.node
def test_python_node_and_the_tagger_say_unknown_the_same_way(project, catalog_music: Path, tmp_path: Path) -> None:
    """The handoff bundle of a model with the unknown score: the Python client (onnxruntime), the Node client
    (onnxruntime-node) and genretag's own scoring give the same genre or ``unknown``, and the same track score."""
    import subprocess
    import sys

    from tests.model.test_handoff import _node_modules

    from genretag.handoff import write_bundle
    from genretag.tagging.scoring import score_file

    result = project[-1]
    folder = write_bundle(result.onnx_path, tmp_path / "bundle", max_windows=0, silence_rms_dbfs=-60.0)
    scoring = json.loads((folder / "scoring.json").read_text())
    assert scoring["unknown"]["threshold"] == result.open_set.threshold and scoring["unknown"]["output"] == EMBEDDING_NAME
    assert scoring["unknown"]["bank"] == result.open_set.bank and scoring["unknown"]["bank_tracks"] == BANK
    (folder / "node_modules").symlink_to(_node_modules(), target_is_directory=True)
    files = sorted(catalog_music.glob("*.wav"))
    runs = {}
    for name, command in (("python", [sys.executable, str(folder / "genretag_reference.py")]),
                          ("node", ["node", str(folder / "genretag_reference.mjs")])):
        done = subprocess.run([*command, "--json", *map(str, files)], capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = {Path(line["file"]).name: line for line in map(json.loads, done.stdout.splitlines())}
    model = open_model(result.onnx_path, prefer_gpu=False)
    for path in files:
        tagger = score_file(model, path, max_windows=0)
        python, node = runs["python"][path.name], runs["node"][path.name]
        assert python["genre"] == node["genre"] == tagger.label, path.name
        assert python["unknown"] == node["unknown"] == tagger.unknown
        assert node["unknown_score"] == pytest.approx(python["unknown_score"], rel=1e-4)
        assert tagger.unknown_score == pytest.approx(python["unknown_score"], rel=1e-4)
    assert runs["node"]["noise.wav"]["genre"] == UNKNOWN and [t["genre"] for t in runs["node"]["noise.wav"]["top"]]
    plain = subprocess.run(["node", str(folder / "genretag_reference.mjs"), str(catalog_music / "noise.wav")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert plain.stdout.split(": ", 1)[1].startswith("unknown (none of these genres; score ")


def test_predict_and_show_print_unknown_for_an_out_of_taxonomy_file(project, catalog_music: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI end to end: ``genretag predict`` scores the noise file unknown; ``tag-catalog`` records it and
    ``genretag show`` prints it the same way, the top genres after the verdict; tones are accepted."""
    from typer.testing import CliRunner

    from genretag.cli.app import app

    root, params, paths, family, splits, result = project
    for name in ("GENRETAG_CATALOG_URL", "GENRETAG_ROOT", "GENRETAG_PARAMS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(paths.root)
    runner, model, url = CliRunner(), str(result.onnx_path), f"sqlite:///{tmp_path / 'catalog.db'}"
    noise = catalog_music / "noise.wav"
    predicted = runner.invoke(app, ["predict", "--model", model, str(noise)])
    assert predicted.exit_code == 0, predicted.output
    (line,) = [line for line in predicted.stdout.splitlines() if str(noise) in line]
    assert "unknown (none of these genres; score " in line and any(genre in line.split("unknown (", 1)[1] for genre in GENRES)
    tagged = runner.invoke(app, ["tag-catalog", str(catalog_music), "--model", model, "--database", url, "--max-windows", "0"])
    assert tagged.exit_code == 0, tagged.output
    shown = runner.invoke(app, ["show", str(noise), "--database", url])
    assert shown.exit_code == 0 and ": unknown (none of these genres; score " in shown.output, shown.output
    tones = [runner.invoke(app, ["show", str(catalog_music / f"{genre}.wav"), "--database", url]).output for genre in GENRES]
    assert [output for output in tones if "unknown" not in output]  # the tones are (mostly) accepted, as by the tagger
