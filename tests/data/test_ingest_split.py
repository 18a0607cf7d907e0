"""Ingest (formats, layouts, bad files, incremental), clips and splits, and the clips read back from the WAVs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genretag.core.config import AudioParams, SplitParams, layout, load_params
from genretag.data.ingest import discover_sources, ingest, read_table
from genretag.data.splits import assign_splits, clips_for_tracks, make_clips
from genretag.core.errors import ConfigError
from tests.conftest import REPO_ROOT, tone, write_audio

GENRES = ("blues", "jazz", "rock")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    return layout(tmp_path)


def test_discover_understands_gtzan_layouts(tmp_path):
    write_audio(tmp_path / "src" / "genres_original" / "blues" / "blues.00000.wav", tone(1))
    write_audio(tmp_path / "src" / "genres_original" / "jazz" / "jazz.00054.wav", tone(1))
    (tmp_path / "src" / "genres_original" / "jazz" / "notes.txt").write_text("not audio")
    write_audio(tmp_path / "other" / "misc" / "rock" / "My Song!.flac", tone(1))
    write_audio(tmp_path / "other" / "unlabelled" / "x.wav", tone(1))
    found = discover_sources(tmp_path / "src", genres=GENRES)
    assert [(s.genre, s.track_id) for s in found] == [("blues", "blues.00000"), ("jazz", "jazz.00054")]
    found = discover_sources(tmp_path / "other", genres=GENRES)
    assert [(s.genre, s.track_id) for s in found] == [("rock", "rock.My_Song")]
    with pytest.raises(ConfigError, match="not a folder"):
        discover_sources(tmp_path / "missing", genres=GENRES)


def test_ingest_normalises_formats_and_records_bad_files(project, tmp_path):
    src = tmp_path / "incoming"
    stereo = np.stack([tone(4, sample_rate=44100), tone(4, sample_rate=44100, frequency=660)], axis=1)
    write_audio(src / "blues" / "blues.00000.wav", tone(4))
    write_audio(src / "blues" / "blues.00001.flac", stereo, sample_rate=44100)
    write_audio(src / "jazz" / "jazz.00000.ogg", stereo, sample_rate=44100)
    write_audio(src / "jazz" / "jazz.00001.mp3", stereo, sample_rate=44100)
    write_audio(src / "rock" / "rock.00000.au", tone(4, sample_rate=8000), sample_rate=8000)
    (src / "rock").mkdir(parents=True, exist_ok=True)
    (src / "rock" / "rock.00001.wav").write_bytes(b"")
    (src / "rock" / "rock.00002.wav").write_text("this is not audio")
    manifest = ingest(discover_sources(src, genres=GENRES), layout=project, sample_rate=22050, workers=2)

    rows = manifest.set_index("track_id")
    for track in ("blues.00000", "blues.00001", "jazz.00000", "jazz.00001", "rock.00000"):
        info = sf.info(project.root / rows.at[track, "path"])
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16"), track
        assert abs(float(rows.at[track, "duration_s"]) - 4.0) < 0.1, track
    assert int(rows.at["blues.00001", "channels"]) == 2 and int(rows.at["blues.00001", "original_sample_rate"]) == 44100
    assert "empty file" in rows.at["rock.00001", "error"] and rows.at["rock.00001", "path"] == ""
    assert "not a decodable audio file (soundfile: " in rows.at["rock.00002", "error"]
    assert read_table(project.manifest).shape == manifest.shape


def test_ingest_records_nonfinite_and_content_duplicates(project, tmp_path):
    src = tmp_path / "incoming"
    bad = tone(4)
    bad[100:200] = np.nan
    write_audio(src / "blues" / "blues.00000.wav", bad, subtype="FLOAT")
    pcm = (tone(4, seed=9) * 32767).astype(np.int16)
    write_audio(src / "blues" / "blues.00001.wav", pcm)
    write_audio(src / "jazz" / "jazz.00000.flac", pcm)  # same music, other container
    rows = ingest(discover_sources(src, genres=GENRES), layout=project, sample_rate=22050).set_index("track_id")
    assert int(rows.at["blues.00000", "nonfinite_samples"]) == 100
    assert rows.at["blues.00001", "content_sha256"] == rows.at["jazz.00000", "content_sha256"]
    assert rows.at["blues.00001", "sha256"] != rows.at["jazz.00000", "sha256"]


def test_ingest_is_incremental_and_prunes(project, tmp_path):
    src = tmp_path / "incoming"
    write_audio(src / "blues" / "blues.00000.wav", tone(4))
    write_audio(src / "jazz" / "jazz.00000.wav", tone(4, seed=1))
    ingest(discover_sources(src, genres=GENRES), layout=project, sample_rate=22050)
    kept = project.raw_dir / "blues" / "blues.00000.wav"
    before = kept.stat().st_mtime_ns
    (src / "jazz" / "jazz.00000.wav").unlink()
    write_audio(src / "rock" / "rock.00000.wav", tone(4, seed=2))
    manifest = ingest(discover_sources(src, genres=GENRES), layout=project, sample_rate=22050)
    assert kept.stat().st_mtime_ns == before  # unchanged source: not decoded again
    assert sorted(manifest["track_id"]) == ["blues.00000", "rock.00000"]
    assert not (project.raw_dir / "jazz" / "jazz.00000.wav").exists()


def _tracks(per_genre: int, duration: float = 30.0) -> pd.DataFrame:
    return pd.DataFrame(
        [{"track_id": f"{g}.{i:05d}", "genre": g, "duration_s": duration} for g in GENRES for i in range(per_genre)]
    )


def test_clips_are_whole_and_at_most_ten():
    audio_params = AudioParams()
    tracks = pd.concat([_tracks(1), pd.DataFrame([{"track_id": "rock.00099", "genre": "rock", "duration_s": 10.4}])])
    clips = clips_for_tracks(tracks, audio_params=audio_params)
    per_track = clips.groupby("track_id").size()
    assert per_track["blues.00000"] == 10 and per_track["rock.00099"] == 3
    assert clips["start_s"].max() == pytest.approx(27.0)


def test_track_split_never_leaks_and_is_stratified():
    clips = clips_for_tracks(_tracks(10), audio_params=AudioParams())
    split = assign_splits(clips, split_params=SplitParams(method="track", seed=1))
    assert (split.groupby("track_id")["split"].nunique() == 1).all()
    tracks_per = split.drop_duplicates("track_id").groupby(["genre", "split"]).size().unstack()
    assert (tracks_per["train"] == 8).all() and (tracks_per["validation"] == 1).all() and (tracks_per["test"] == 1).all()
    again = assign_splits(clips, split_params=SplitParams(method="track", seed=1))
    pd.testing.assert_frame_equal(split, again)
    other = assign_splits(clips, split_params=SplitParams(method="track", seed=2))
    assert not split["split"].equals(other["split"])


def test_clip_split_is_the_papers_leaky_one():
    clips = clips_for_tracks(_tracks(10), audio_params=AudioParams())
    split = assign_splits(clips, split_params=SplitParams(method="clip", seed=1))
    assert (split.groupby("track_id")["split"].nunique() > 1).any()
    assert split["split"].value_counts().to_dict() == {"train": 240, "validation": 30, "test": 30}


def test_filtered_split_uses_kereliuk_partition():
    tracks = pd.DataFrame([{"track_id": f"{g}.{i:05d}", "genre": g, "duration_s": 30.0}
                           for g in ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
                           for i in range(100)])
    clips = clips_for_tracks(tracks, audio_params=AudioParams(clips_per_track=1))
    split = assign_splits(clips, split_params=SplitParams(method="filtered"))
    assert split["split"].value_counts().to_dict() == {"train": 443, "test": 290, "validation": 197}
    assert split.set_index("track_id").at["blues.00000", "split"] == "validation"
    assert len(split) == 930  # 70 faulty tracks belong to no split
    with pytest.raises(ConfigError, match="GTZAN file names"):
        assign_splits(clips_for_tracks(pd.DataFrame([{"track_id": "blues.my_song", "genre": "blues", "duration_s": 3.0}]),
                                       audio_params=AudioParams()), split_params=SplitParams(method="filtered"))


def test_clips_csv_is_what_every_family_reads_back_from_the_wavs(project, tmp_path):
    """make_clips writes clips.csv (no images); load_split cuts the same clips from the ingested WAVs, at any rate."""
    from genretag.audio.decoding import load_wav
    from genretag.data.splits import CLIP_COLUMNS
    from genretag.families import load_split

    src = tmp_path / "incoming"
    for genre in GENRES:
        for i in range(3):
            write_audio(src / genre / f"{genre}.{i:05d}.wav", tone(6.5, frequency=200 + 100 * i, seed=i))
    params = load_params(project.root / "params.yaml")
    manifest = ingest(discover_sources(src, genres=GENRES), layout=project, sample_rate=22050)
    clips = make_clips(manifest.assign(duration_s=manifest["duration_s"].astype(float)), params=params, layout=project)
    assert len(clips) == 18  # 9 tracks x 2 whole clips
    assert tuple(read_table(project.clips).columns) == CLIP_COLUMNS and "image" not in CLIP_COLUMNS
    for split in ("train", "validation", "test"):
        rows = clips[clips["split"] == split]
        at_22k = load_split(clips, split=split, raw_dir=project.raw_dir, labels=GENRES, source_rate=22050, sample_rate=22050, clip_seconds=3.0)
        assert sorted(at_22k.clip_ids) == sorted(rows["clip_id"]) and at_22k.waveforms.shape == (len(rows), 66150)
        for clip_id, waveform in zip(at_22k.clip_ids, at_22k.waveforms):
            row = rows.set_index("clip_id").loc[clip_id]
            audio = load_wav(project.raw_dir / row["genre"] / f"{row['track_id']}.wav", sample_rate=22050)
            start = int(round(float(row["start_s"]) * 22050))
            np.testing.assert_array_equal(waveform, audio[start : start + 66150])
        at_16k = load_split(clips, split=split, raw_dir=project.raw_dir, labels=GENRES, source_rate=22050, sample_rate=16000, clip_seconds=3.0)
        assert at_16k.waveforms.shape == (len(rows), 48000) and at_16k.clip_ids == at_22k.clip_ids


def test_silent_training_clips_are_dropped_at_the_split_and_counted(tmp_path) -> None:
    """The tagger's rule for training clips too: an all-zero or near-silent 3-s clip carries no genre."""
    from genretag.data.splits import drop_silent_clips

    rate = 22050
    waveform = np.concatenate([np.zeros(3 * rate), tone(6.0), np.full(3 * rate, 1e-5)]).astype(np.float32)  # silence, music, -100 dBFS hiss
    write_audio(tmp_path / "data/raw/rock/rock.00000.wav", waveform)
    tracks = pd.DataFrame({"track_id": ["rock.00000"], "genre": ["rock"], "path": ["data/raw/rock/rock.00000.wav"],
                           "duration_s": [len(waveform) / rate]})
    clips = clips_for_tracks(tracks, audio_params=AudioParams(sample_rate=rate, clip_seconds=3.0, clips_per_track=10))
    assert len(clips) == 4
    kept, dropped = drop_silent_clips(clips, tracks, root=tmp_path, sample_rate=rate, clip_samples=3 * rate, silence_rms_dbfs=-60.0)
    assert dropped == 2 and list(kept["clip_index"]) == [1, 2]
