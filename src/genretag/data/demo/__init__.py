"""A deterministic, SYNTHETIC demo corpus in GTZAN's layout: the pipeline's built-in smoke-test data.

None of this is real music and nothing here claims anything about real music or real genres.
GTZAN cannot be downloaded everywhere, so genretag synthesises stand-in audio with numpy: each
"genre" is a hand-written recipe (tempo range, a drum pattern of synthesised percussion, a bass
line, chords, a melody, additive/FM instrument timbres, distortion, swing, reverb) loosely
inspired by textbook descriptions of the style. The labels are the names of these recipes, and a
model that learns them has learnt the recipes, nothing about music. Use the corpus to check that
the pipeline runs end to end and that a model can learn *something*; never to report accuracy.

Design:

- Every track is drawn from a ``np.random.Generator`` seeded from ``(seed, genre, index)``, so any
  one track can be rebuilt on its own, and the same arguments give byte-identical files.
- Per-track variation (tempo, key, progression, drum pattern, instrument choice and timbre,
  mix levels, drive, brightness, reverb, loudness) overlaps between recipes on purpose: loudness,
  brightness and tempo ranges overlap, rock and metal share distortion to differing degrees, pop
  and disco share four-on-the-floor, so no single statistic separates the classes while the
  combination of timbre and rhythm does (``tests/data/test_demo.py`` checks both).
- Everything is vectorised per note or per drum hit (no per-sample Python loops): 60 tracks of
  30 s take well under 15 s on one core (about 8 s measured on a busy shared core).

Modules. A leading underscore marks a name private to this package, not to its module: the modules
import each other's ``_`` names, while code outside the package imports only names without one, from
the module that defines them (the corpus API from here, recipes from ``genretag.data.demo.recipes``).

- ``recipes``: chords, scales, roman-numeral progressions, ``DrumPattern``, ``GenreRecipe`` and ``GENRE_RECIPES``.
- ``instruments``: wavetable and FM oscillators, instrument timbres, formants, envelopes, one note.
- ``drums``: one track's synthesised drum kit and its noise, filter and decay helpers.
- ``arrangement``: one track's parts, mix and master (``_Track``).
- this package: the corpus API, ``CORPUS_VERSION``, ``track_rng``, ``synthesize_track``,
  ``track_path`` and ``synthesize_corpus``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genretag.audio.decoding import to_pcm16, write_wav
from genretag.core.errors import ConfigError
from genretag.data.demo.arrangement import _Track
from genretag.data.demo.recipes import GENRE_RECIPES

#: Bump when the synthesis changes, so that cached corpora can tell they are stale.
CORPUS_VERSION = 1


def track_rng(seed: int, genre: str, index: int) -> np.random.Generator:
    """The generator of one track: a stable function of (seed, genre, index) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(genre.encode("utf-8")), int(index)]))


def _check(genres: Sequence[str], *, seed: int, sample_rate: int, duration_s: float) -> None:
    unknown = [g for g in genres if g not in GENRE_RECIPES]
    if unknown:
        raise ConfigError(f"demo corpus: unknown genre(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(GENRE_RECIPES)}")
    if seed < 0:
        raise ConfigError(f"demo corpus: seed must be >= 0, got {seed}")
    if sample_rate < 4000:
        raise ConfigError(f"demo corpus: sample_rate must be >= 4000 Hz, got {sample_rate}")
    if not duration_s > 0:
        raise ConfigError(f"demo corpus: duration_s must be > 0, got {duration_s}")


def synthesize_track(genre: str, *, index: int, seed: int, sample_rate: int = 22050,
                     duration_s: float = 30.0) -> np.ndarray:
    """One synthetic track of ``genre``: float32 mono in [-1, 1], peak-normalised to a level in [0.3, 0.9].

    Deterministic in (genre, index, seed, sample_rate, duration_s). Raises ConfigError for an
    unknown genre or an unusable argument.
    """
    _check([genre], seed=seed, sample_rate=sample_rate, duration_s=duration_s)
    if index < 0:
        raise ConfigError(f"demo corpus: index must be >= 0, got {index}")
    track = _Track(GENRE_RECIPES[genre], track_rng(seed, genre, index), sample_rate, duration_s)
    return track.render()


def track_path(out_dir: str | Path, genre: str, index: int) -> Path:
    """``<out_dir>/<genre>/<genre>.<index:05d>.wav``, GTZAN's naming."""
    return Path(out_dir) / genre / f"{genre}.{index:05d}.wav"


def synthesize_corpus(out_dir: str | Path, *, genres: Sequence[str], tracks_per_genre: int, seed: int,
                      sample_rate: int = 22050, duration_s: float = 30.0) -> list[Path]:
    """Write ``tracks_per_genre`` synthetic tracks per genre as 16-bit mono WAVs in GTZAN's layout.

    Every file is (re)written atomically and deterministically; returns the paths in
    genre-then-index order. Raises ConfigError naming an unknown genre before writing anything.
    """
    genres = list(genres)
    _check(genres, seed=seed, sample_rate=sample_rate, duration_s=duration_s)
    if len(set(genres)) != len(genres):
        raise ConfigError(f"demo corpus: genres must be distinct, got {genres}")
    if tracks_per_genre < 1:
        raise ConfigError(f"demo corpus: tracks_per_genre must be >= 1, got {tracks_per_genre}")
    paths = []
    for genre in genres:
        for index in range(tracks_per_genre):
            waveform = synthesize_track(genre, index=index, seed=seed, sample_rate=sample_rate, duration_s=duration_s)
            path = track_path(out_dir, genre, index)
            write_wav(path, to_pcm16(waveform), sample_rate=sample_rate)
            paths.append(path)
    return paths
