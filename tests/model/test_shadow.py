"""Shadow scoring on a real MLflow SQLite registry and a real catalog: a challenger (registry v1,
every rock tone -> blues) against the champion's tags (v2, right on every tone), stratified sample,
numbers checked by hand from the rows, report stored with the version and printed by promote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import tone, write_audio
from tests.gate_support import MEDIOCRE, PERFECT, save_candidate, tone_model, tone_project, votes
from typer.testing import CliRunner

from genretag.registry.client import TAG_SHADOW
from genretag.registry.register import register_candidates
from genretag.tagging.run import tag_catalog
from genretag.tagging.store import Catalog
from genretag.core.config import Layout, Params
from genretag.onnx.session import open_model
from genretag.registry.fetch import resolve_model
from genretag.tagging.scoring import score_file
from genretag.tagging.shadow import ChampionTag, allocate, shadow_run, stratified_sample
from genretag.core.tracking import tracking_uri

# catalog file -> tone (Hz): the champion tags 4 blues, 2 jazz, 6 rock
CATALOG = {**{f"b{i}": 220.0 for i in range(4)}, **{f"j{i}": 880.0 for i in range(2)},
           **{f"r{i}": 3000.0 for i in range(3)}, **{f"s{i}": 5000.0 for i in range(3)}}


@pytest.fixture(autouse=True)
def _project_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Layout, str]:
    """v1 = MEDIOCRE (challenger), v2 = PERFECT (champion); the catalog tagged by the champion."""
    params, paths = tone_project(tmp_path_factory.mktemp("shadow-project"), model_name="shadow-test")
    candidates = {"mfcc-logreg": save_candidate(paths, "mfcc-logreg", tone_model(votes(MEDIOCRE), name="mediocre")),
                  "musicnn-msd": save_candidate(paths, "musicnn-msd", tone_model(votes(PERFECT), name="perfect"))}
    outcome = register_candidates(params, paths, candidates=candidates)
    assert outcome.champion_version == "2"
    for number, (name, frequency) in enumerate(CATALOG.items()):
        write_audio(paths.root / "catalog" / f"{name}.wav", tone(4.0, frequency=frequency, seed=100 + number))
    url = f"sqlite:///{paths.root / 'catalog.db'}"
    champion = open_model(resolve_model("champion", tracking_uri=tracking_uri(params, root=paths.root), model_name="shadow-test"))
    assert tag_catalog(paths.root / "catalog", model=champion, database_url=url).tagged == len(CATALOG)
    return params, paths, url


def _champion_tags(url: str) -> list[ChampionTag]:
    with Catalog(url) as catalog:
        frame = catalog.read("catalog_tags")
    return [ChampionTag(r.track_id, r.path, r.sha256, r.genre, float(r.confidence)) for r in frame.itertuples(index=False)]


def test_allocation_is_proportional_with_every_genre_seen() -> None:
    assert allocate({"blues": 4, "jazz": 2, "rock": 6}, n=6) == {"blues": 2, "jazz": 1, "rock": 3}
    assert allocate({"blues": 100, "jazz": 1, "rock": 1}, n=3) == {"blues": 1, "jazz": 1, "rock": 1}  # each genre once
    assert allocate({"blues": 1, "jazz": 1}, n=10) == {"blues": 1, "jazz": 1}  # never more than a genre holds
    assert sum(allocate({"a": 7, "b": 5, "c": 3}, n=8).values()) == 8


def test_shadow_numbers_match_a_hand_count_from_the_rows(shadowed) -> None:
    params, paths, url = shadowed
    tags = _champion_tags(url)
    assert sorted(t.genre for t in tags).count("rock") == 6
    sample = stratified_sample(tags, n=6, seed=3)
    assert sorted(t.genre for t in sample) == ["blues", "blues", "jazz", "rock", "rock", "rock"]
    assert stratified_sample(tags, n=6, seed=3) == sample  # seeded

    challenger = open_model(resolve_model("1", tracking_uri=tracking_uri(params, root=paths.root), model_name="shadow-test"))
    report = shadow_run(tags, model=challenger, registry_version="1", champion="perfect", sample=6, seed=3)
    # by hand: the challenger's own score of each sampled file against the champion's stored row
    new = {t.sha256: score_file(challenger, t.path, max_windows=20) for t in sample}
    agree = [t for t in sample if new[t.sha256].label == t.genre]
    assert report.sampled == report.scored == 6 and report.missing == report.errors == 0
    assert report.agreement == pytest.approx(len(agree) / 6) == pytest.approx(0.5)  # every rock track became blues
    assert report.agreement_by_genre["rock"] == {"tracks": 3, "agree": 0, "agreement": 0.0}
    assert report.agreement_by_genre["blues"]["agreement"] == 1.0
    assert report.confusion == {"blues": {"blues": 2}, "jazz": {"jazz": 1}, "rock": {"blues": 3}}
    shifts = sorted(new[t.sha256].confidence - t.confidence for t in sample)
    assert report.confidence_shift_mean == pytest.approx(sum(shifts) / 6, abs=1e-5)
    assert report.confidence_shift_median == pytest.approx((shifts[2] + shifts[3]) / 2, abs=1e-5)
    assert "| rock | 3 | 0 | 0.0 % |" in report.to_markdown()


def test_the_cli_stores_the_report_counts_missing_files_and_promote_prints_it(shadowed, monkeypatch) -> None:
    from genretag.cli.app import app

    params, paths, url = shadowed
    monkeypatch.setenv("GENRETAG_ROOT", str(paths.root))
    monkeypatch.setenv("GENRETAG_CATALOG_URL", url)
    missing = paths.root / "catalog" / "j1.wav"
    kept = missing.read_bytes()
    missing.unlink()
    runner = CliRunner()
    try:
        done = runner.invoke(app, ["shadow", "1", "--sample", "100"])
    finally:
        missing.write_bytes(kept)
    assert done.exit_code == 0, done.output
    stored = json.loads((paths.models_dir / "shadow" / "v1.json").read_text(encoding="utf-8"))
    assert (stored["sampled"], stored["scored"], stored["missing"], stored["errors"]) == (12, 11, 1, 0)
    assert [(Path(f["path"]).name, f["reason"]) for f in stored["failures"]] == [("j1.wav", "missing: no such file")]
    assert stored["confusion"]["rock"] == {"blues": 6}
    assert (paths.models_dir / "shadow" / "v1.md").read_text(encoding="utf-8") in done.output + "\n"
    assert not list((paths.models_dir / "shadow").glob(".*tmp"))  # atomic writes leave nothing behind
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri(params, root=paths.root))
    assert client.get_model_version("shadow-test", "1").tags[TAG_SHADOW] == "models/shadow/v1.json"

    promoted = runner.invoke(app, ["registry", "promote", "1", "--reason", "shadow looked fine"])
    assert promoted.exit_code == 0, promoted.output
    assert promoted.output.index("# Shadow run: registry v1") < promoted.output.index("champion: v2 -> v1")
    back = runner.invoke(app, ["registry", "promote", "2", "--reason", "back"])
    assert back.exit_code == 0, back.output
    assert back.output.splitlines()[0] == "no shadow report for v2: run `genretag shadow 2 --sample 200` to compare it with the champion's tags first"
    again = runner.invoke(app, ["registry", "promote", "2"])  # the champion already: refused before any report
    assert again.exit_code == 1 and again.output.splitlines() == ["error: shadow-test v2 is already the champion"], again.output
