"""The synthetic demo corpus: GTZAN layout and format, determinism, sane audio, and genres that
no single statistic separates while a combination of features does."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genretag.audio.decoding import load_wav, to_pcm16
from genretag.core.config import GTZAN_GENRES
from genretag.data.demo import synthesize_corpus, synthesize_track, track_path
from genretag.data.demo.recipes import GENRE_RECIPES, parse_progression
from genretag.core.errors import ConfigError

SAMPLE_RATE = 22050
SEED = 2021  # params.yaml ingest.demo_seed


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("demo")
    return out, synthesize_corpus(out, genres=("blues", "metal"), tracks_per_genre=2, seed=SEED)


def test_recipes_cover_the_gtzan_genres_and_parse() -> None:
    assert set(GENRE_RECIPES) == set(GTZAN_GENRES)
    for name, recipe in GENRE_RECIPES.items():
        assert recipe.tempo_bpm[0] <= recipe.tempo_bpm[1], name
        for progression, _scale in recipe.progressions:
            assert parse_progression(progression), (name, progression)


def test_corpus_has_gtzan_layout_and_format(small_corpus: tuple[Path, list[Path]]) -> None:
    out, paths = small_corpus
    expected = [out / g / f"{g}.{i:05d}.wav" for g in ("blues", "metal") for i in range(2)]
    assert paths == expected
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "blues/blues.00000.wav", "blues/blues.00001.wav", "metal/metal.00000.wav", "metal/metal.00001.wav",
    ]
    assert track_path(out, "blues", 1) == out / "blues" / "blues.00001.wav"
    for path in paths:
        info = sf.info(path)
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", SAMPLE_RATE, 1)
        assert info.frames == 30 * SAMPLE_RATE


def test_a_track_is_reproducible_on_its_own(small_corpus: tuple[Path, list[Path]]) -> None:
    out, _ = small_corpus
    alone = synthesize_track("metal", index=1, seed=SEED)  # without rendering index 0 or blues first
    assert alone.dtype == np.float32 and alone.shape == (30 * SAMPLE_RATE,)
    on_disk = load_wav(out / "metal" / "metal.00001.wav", sample_rate=SAMPLE_RATE)
    np.testing.assert_array_equal(to_pcm16(on_disk), to_pcm16(alone))


def test_same_arguments_give_identical_bytes_and_other_seeds_differ(tmp_path: Path) -> None:
    kwargs = {"genres": ("jazz", "reggae"), "tracks_per_genre": 1, "duration_s": 5.0}
    first = synthesize_corpus(tmp_path / "a", seed=7, **kwargs)
    again = synthesize_corpus(tmp_path / "b", seed=7, **kwargs)
    other = synthesize_corpus(tmp_path / "c", seed=8, **kwargs)
    for a, b, c in zip(first, again, other, strict=True):
        assert a.read_bytes() == b.read_bytes()
        x, y = sf.read(a, dtype="float32")[0], sf.read(c, dtype="float32")[0]
        assert x.shape == y.shape == (5 * SAMPLE_RATE,)
        assert not np.allclose(x, y, atol=1e-3)
    # rewriting over an existing corpus leaves the same bytes
    assert synthesize_corpus(tmp_path / "a", seed=7, **kwargs) == first
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert synthesize_track("jazz", index=0, seed=7, duration_s=5.0).tobytes() != \
        synthesize_track("jazz", index=1, seed=7, duration_s=5.0).tobytes()


def test_unknown_genre_or_bad_argument_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="polka"):
        synthesize_corpus(tmp_path, genres=("blues", "polka"), tracks_per_genre=1, seed=1)
    assert not any(tmp_path.iterdir())  # checked before anything is written
    with pytest.raises(ConfigError, match="polka"):
        synthesize_track("polka", index=0, seed=1)
    with pytest.raises(ConfigError, match="tracks_per_genre"):
        synthesize_corpus(tmp_path, genres=("blues",), tracks_per_genre=0, seed=1)
    with pytest.raises(ConfigError, match="seed"):
        synthesize_track("blues", index=0, seed=-1)


# --- the classes are separable by a combination of features, but by no single statistic ---

TRACKS_PER_GENRE = 6
SECONDS = 8.0
# loudness, two "where is the energy" frequencies, noisiness, and librosa's tempo estimate
SINGLE_STATISTICS = ("rms", "centroid", "rolloff", "zcr", "tempo")


@pytest.fixture(scope="module")
def dataset() -> dict[str, np.ndarray]:
    """Per-track features of 6 eight-second tracks per genre: the single statistics and a richer set."""
    import librosa
    rows, labels, tracks = [], [], []
    mel_basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=2048, n_mels=64)
    for label, genre in enumerate(GTZAN_GENRES):
        for index in range(TRACKS_PER_GENRE):
            x = synthesize_track(genre, index=index, seed=SEED, duration_s=SECONDS)
            tracks.append(x)
            magnitude = np.abs(librosa.stft(x, n_fft=2048, hop_length=512))
            mel_db = librosa.power_to_db(mel_basis @ magnitude**2)
            onsets = librosa.onset.onset_strength(S=mel_db, sr=SAMPLE_RATE)
            # the tempo estimate of librosa.beat.beat_track, without its beat-tracking pass
            tempo = float(librosa.feature.tempo(onset_envelope=onsets, sr=SAMPLE_RATE)[0])
            centroid = float(librosa.feature.spectral_centroid(S=magnitude, sr=SAMPLE_RATE).mean())
            rolloff = float(librosa.feature.spectral_rolloff(S=magnitude, sr=SAMPLE_RATE).mean())
            zcr = float(librosa.feature.zero_crossing_rate(x).mean())
            rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
            mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=20)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                contrast = librosa.feature.spectral_contrast(S=magnitude, sr=SAMPLE_RATE)
            rhythm = [onsets.std() / max(onsets.mean(), 1e-9), onsets.mean() / max(onsets.max(), 1e-9)]
            change = librosa.feature.delta(mfcc).std(1)  # how fast the timbre changes: percussive or sustained
            rich = np.concatenate([mfcc.mean(1), mfcc.std(1), change, contrast.mean(1), contrast.std(1), rhythm,
                                   [rms, centroid, rolloff, zcr, tempo]])
            rows.append({"rms": rms, "centroid": centroid, "rolloff": rolloff, "zcr": zcr, "tempo": tempo,
                         "combined": rich})
            labels.append(label)
    return {
        **{name: np.array([np.atleast_1d(row[name]) for row in rows]) for name in (*SINGLE_STATISTICS, "combined")},
        "labels": np.array(labels),
        "tracks": np.stack(tracks),
    }


def test_every_genre_gives_finite_non_silent_audio_in_range(dataset: dict[str, np.ndarray]) -> None:
    tracks = dataset["tracks"]
    assert tracks.dtype == np.float32 and tracks.shape == (len(GTZAN_GENRES) * TRACKS_PER_GENRE, int(SECONDS * SAMPLE_RATE))
    assert np.isfinite(tracks).all()
    peaks = np.abs(tracks).max(axis=1)
    assert (peaks >= 0.3 - 1e-6).all() and (peaks <= 0.9 + 1e-6).all()  # peak-normalised to a per-track level
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(np.square(tracks, dtype=np.float64), axis=1)))
    assert (rms_dbfs > -40).all()  # far above the pipeline's silence threshold (-60 dBFS)
    # every second of every track has sound in it, not just a loud moment
    seconds = tracks[:, : int(SECONDS) * SAMPLE_RATE].reshape(len(tracks), int(SECONDS), SAMPLE_RATE)
    assert (np.sqrt(np.mean(np.square(seconds, dtype=np.float64), axis=2)) > 1e-3).all()


def _cv_accuracy(model, features: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score

    folds = RepeatedStratifiedKFold(n_splits=3, n_repeats=4, random_state=0)
    return float(cross_val_score(model, features, labels, cv=folds).mean())


def test_no_single_statistic_separates_the_genres_but_their_combination_does(dataset: dict[str, np.ndarray]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    labels = dataset["labels"]
    single = {
        name: max(
            _cv_accuracy(DecisionTreeClassifier(max_depth=4, random_state=0), dataset[name], labels),
            _cv_accuracy(make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=3)), dataset[name], labels),
        )
        for name in SINGLE_STATISTICS
    }
    combined = _cv_accuracy(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)), dataset["combined"], labels)
    report = f"single-feature accuracies {single}, combined {combined:.3f} (chance 0.1)"
    assert max(single.values()) < 0.6, report
    assert combined > 0.7, report
    assert combined > max(single.values()) + 0.25, report
