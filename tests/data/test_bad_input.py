"""Bad files made by the test go through real ingest and real GX validation: each is quarantined
with its reason, the good ones in the same batch go through, and the stage's outputs are complete."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genretag.core.config import layout, load_params
from genretag.data.ingest import discover_sources, ingest
from genretag.core.errors import ValidationFailed
from genretag.data.validation import run_validation
from tests.conftest import REPO_ROOT, tone, write_audio

GENRES = ("blues", "jazz", "rock")


@pytest.fixture
def batch(tmp_path):
    """Two good 5-s tracks per genre in several formats, plus one of every kind of bad file."""
    src = tmp_path / "incoming"
    stereo = np.stack([tone(5, sample_rate=44100, frequency=330), tone(5, sample_rate=44100, frequency=550, seed=3)], axis=1)
    write_audio(src / "blues" / "blues.00000.wav", tone(5, seed=1))
    write_audio(src / "blues" / "blues.00001.flac", stereo, sample_rate=44100)
    write_audio(src / "jazz" / "jazz.00000.ogg", stereo, sample_rate=44100)
    write_audio(src / "jazz" / "jazz.00001.mp3", stereo, sample_rate=44100)
    write_audio(src / "rock" / "rock.00000.wav", tone(5, seed=4, frequency=600))
    write_audio(src / "rock" / "rock.00001.wav", tone(5, seed=5, frequency=700))
    whole = write_audio(tmp_path / "whole.wav", tone(5, seed=6)).read_bytes()
    (src / "blues" / "blues.00002.wav").write_bytes(whole[:44 + 2000])  # header says 5 s, 1000 samples left
    (src / "blues" / "blues.00003.wav").write_bytes(b"")
    (src / "jazz" / "jazz.00002.wav").write_text("not audio at all")
    write_audio(src / "jazz" / "jazz.00003.wav", tone(1, seed=7))
    write_audio(src / "rock" / "rock.00002.wav", np.zeros(5 * 22050, dtype=np.float32))
    nan = tone(5, seed=8)
    nan[1000:1100] = np.nan
    write_audio(src / "rock" / "rock.00003.wav", nan, subtype="FLOAT")
    (src / "rock" / "rock.00004.wav").write_bytes((src / "rock" / "rock.00000.wav").read_bytes())  # exact duplicate
    root = tmp_path / "project"
    root.mkdir()
    params_text = (REPO_ROOT / "params.yaml").read_text().replace("genres: [blues, classical, country, disco, hiphop, jazz, metal, pop, reggae, rock]",
                                                                   f"genres: [{', '.join(GENRES)}]")
    (root / "params.yaml").write_text(params_text)
    return src, layout(root)


EXPECTED_REASONS = {
    "blues.00002": "duration",
    "blues.00003": "empty file",
    "jazz.00002": "cannot decode",
    "jazz.00003": "duration 1.0 s below 3.0 s",
    "rock.00002": "silent",
    "rock.00003": "100 non-finite samples",
    "rock.00004": "duplicate of rock.00000",
}
GOOD = {"blues.00000", "blues.00001", "jazz.00000", "jazz.00001", "rock.00000", "rock.00001"}


def test_each_bad_file_is_quarantined_with_its_reason_and_the_good_ones_pass(batch):
    src, paths = batch
    params = load_params(paths.root / "params.yaml")
    params = params.model_copy(update={"validation": params.validation.model_copy(update={"max_bad_fraction": 0.6})})
    ingest(discover_sources(src, genres=GENRES), layout=paths, sample_rate=22050)
    outcome = run_validation(params=params, layout=paths)

    quarantine = pd.read_csv(paths.quarantine).set_index("track_id")
    assert set(quarantine.index) == set(EXPECTED_REASONS)
    for track, fragment in EXPECTED_REASONS.items():
        assert fragment in quarantine.at[track, "reason"], (track, quarantine.at[track, "reason"])
        assert quarantine.at[track, "source_path"].endswith(track + ".wav")
    tracks = pd.read_csv(paths.tracks)
    assert set(tracks["track_id"]) == GOOD == set(outcome.passed["track_id"])
    metrics = json.loads((paths.metrics_dir / "validation.json").read_text())
    assert (metrics["tracks_in"], metrics["tracks_passed"], metrics["tracks_quarantined"]) == (13, 6, 7)
    assert (paths.reports_dir / "validation" / "index.html").is_file()
    assert not list(paths.root.rglob("*.tmp"))


def test_too_many_bad_files_stop_the_pipeline_with_the_reasons(batch):
    src, paths = batch
    params = load_params(paths.root / "params.yaml")  # max_bad_fraction 0.2 < 7/13
    ingest(discover_sources(src, genres=GENRES), layout=paths, sample_rate=22050)
    with pytest.raises(ValidationFailed, match=r"7 of 13 tracks quarantined.*0\.2"):
        run_validation(params=params, layout=paths)
    assert len(pd.read_csv(paths.quarantine)) == 7  # written before stopping, so the user sees why
