"""The review loop closed: tag a catalog, export the review sheet, correct a genre, import it, `dvc repro split`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from genretag.audio.decoding import file_sha256
from genretag.tagging.run import tag_catalog
from genretag.core.config import layout, load_params
from genretag.data.ingest import read_table
from genretag.tagging.review import export_review, import_review
from genretag.onnx.session import open_model
from tests.conftest import tone, write_audio
from tests.pipeline.conftest import TINY_PARAMS, run, stages_run
from tests.tagging_support import make_onnx_model

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.dvc]


def test_a_corrected_genre_reaches_the_training_split_with_its_provenance(make_project, tmp_path: Path) -> None:
    root = make_project("review-loop")
    first = run(root, sys.executable, "-m", "flows.server", "dvc", "repro", "split")
    assert {"ingest", "validate", "split"} <= stages_run(first.stdout)
    corpus = read_table(root / "data" / "tracks.csv").set_index("track_id")

    catalog = tmp_path / "catalog"
    new_song = write_audio(catalog / "new_song.wav", tone(9.0, frequency=330.0, seed=5))
    copy = shutil.copy(root / "data" / "raw" / "blues" / "blues.00000.wav", catalog / "same_as_corpus.wav")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    model = open_model(make_onnx_model(tmp_path / "model.onnx", version="7", labels=tuple(TINY_PARAMS["genres"])), prefer_gpu=False)
    summary = tag_catalog(catalog, model=model, database_url=url, max_windows=3, workers=1, review_below=1.0)  # every tag flagged
    assert summary.tagged == 2

    sheet = export_review(url, out=tmp_path / "review.csv")
    assert set(sheet["reason"]) == {"needs_review"} and len(sheet) == 2
    sheet = sheet.set_index("path")
    sheet.loc[str(new_song), "corrected_genre"] = "metal"
    sheet.loc[str(Path(copy)), "corrected_genre"] = "reggae"  # a corpus track (blues) seen again in the catalog
    sheet.reset_index()[list(sheet.reset_index().columns)].to_csv(tmp_path / "review.csv", index=False)
    params = load_params(root / "params.yaml")
    outcome = import_review(tmp_path / "review.csv", database_url=url, genres=params.genres,
                            feedback=layout(root).feedback(params), reviewer="ann")
    assert (outcome.added, outcome.problems) == (2, [])

    second = run(root, sys.executable, "-m", "flows.server", "dvc", "repro", "split")
    assert "ingest" in stages_run(second.stdout)  # the feedback file is a dependency of ingest
    tracks = read_table(root / "data" / "tracks.csv")
    clips = read_table(root / "data" / "clips.csv")
    reviewed = tracks[tracks["track_id"] == f"metal.review-{file_sha256(new_song)[:12]}"]
    assert len(reviewed) == 1 and reviewed["genre"].iloc[0] == "metal"
    provenance = reviewed["provenance"].iloc[0]
    assert provenance.startswith(f"review:review.csv@{file_sha256(tmp_path / 'review.csv')[:12]};reviewer=ann;model_version=7;")
    its_clips = clips[clips["track_id"] == reviewed["track_id"].iloc[0]]
    assert len(its_clips) == 3 and set(its_clips["genre"]) == {"metal"} and set(its_clips["provenance"]) == {provenance}
    assert its_clips["split"].nunique() == 1  # the split is by track
    assert set(clips.loc[clips["track_id"].isin(corpus.index), "provenance"]) == {"corpus"}
    # the same audio as corpus track blues.00000: one track, one split, never both
    same = tracks[tracks["content_sha256"] == corpus.at["blues.00000", "content_sha256"]]
    assert len(same) == 1
    assert clips.loc[clips["track_id"] == same["track_id"].iloc[0], "split"].nunique() == 1
    # ... and the reviewer's label wins over the corpus label, though "reggae" sorts after "blues"
    corrected = f"reggae.review-{file_sha256(Path(copy))[:12]}"
    assert same["track_id"].iloc[0] == corrected and same["genre"].iloc[0] == "reggae"
    assert set(clips.loc[clips["track_id"] == corrected, "genre"]) == {"reggae"}
    assert "blues.00000" not in set(clips["track_id"])
    quarantine = read_table(root / "data" / "quarantine.csv").set_index("track_id")
    assert quarantine.at["blues.00000", "reason"] == f"duplicate of {corrected} (same audio content)"
