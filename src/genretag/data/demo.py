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
"""

from __future__ import annotations

import bisect
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from genretag.audio.decoding import to_pcm16, write_wav
from genretag.core.errors import ConfigError

#: Bump when the synthesis changes, so that cached corpora can tell they are stale.
CORPUS_VERSION = 1

Range = tuple[float, float]

# --------------------------------------------------------------------------------------------
# Music theory: chord qualities, scales, roman-numeral progressions
# --------------------------------------------------------------------------------------------

_QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10), "9": (0, 4, 7, 10, 14), "m9": (0, 3, 7, 10, 14), "6": (0, 4, 7, 9),
    "5": (0, 7, 12), "dim": (0, 3, 6), "m7b5": (0, 3, 6, 10), "sus4": (0, 5, 7),
}
_SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11), "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10), "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "blues": (0, 3, 5, 6, 7, 10), "pentatonic": (0, 2, 4, 7, 9), "minor_pentatonic": (0, 3, 5, 7, 10),
    "bebop": (0, 2, 4, 5, 7, 9, 10, 11),
}
_NUMERALS = {"i": 0, "ii": 2, "iii": 4, "iv": 5, "v": 7, "vi": 9, "vii": 11}
_ROMAN = re.compile(r"^(b|#)?(iii|ii|iv|vii|vi|v|i)(maj7|m7b5|sus4|dim|7|9|6|5)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Chord:
    root: int                    # semitones above the key's tonic
    intervals: tuple[int, ...]   # chord tones above the chord root


def parse_progression(text: str) -> tuple[Chord, ...]:
    """``"ii7 V7 Imaj7"`` -> chords. Upper case: major, lower case: minor; b/# alter the root."""
    chords = []
    for token in text.split():
        match = _ROMAN.match(token)
        if not match:
            raise ConfigError(f"demo recipe: cannot parse chord {token!r} in progression {text!r}")
        accidental, numeral, suffix = match.groups()
        root = _NUMERALS[numeral.lower()] + {"b": -1, "#": 1, None: 0}[accidental]
        minor = numeral.islower()
        suffix = suffix or ""
        quality = {
            "": "min" if minor else "maj", "7": "m7" if minor else "7", "9": "m9" if minor else "9",
        }.get(suffix, suffix)
        chords.append(Chord(root % 12, _QUALITIES[quality]))
    return tuple(chords)


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _place(pitch_class: int, low: int) -> int:
    """The MIDI note of ``pitch_class`` in the octave [low, low + 12)."""
    return low + (pitch_class - low) % 12


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrumPattern:
    """One bar of 16 sixteenth-note steps per voice: X accent, x hit, g ghost, r maybe-ghost, . rest."""

    kick: str = ""
    snare: str = ""
    hat: str = ""
    open_hat: str = ""
    ride: str = ""
    clap: str = ""
    rim: str = ""
    fill: str = "....x...x.x.xxxx"


@dataclass(frozen=True)
class GenreRecipe:
    """How one synthetic genre is made; every range is sampled uniformly per track."""

    description: str
    tempo_bpm: Range
    swing: Range                                     # 0: straight eighths, 1: triplet swing
    progressions: tuple[tuple[str, str], ...]        # (roman numerals, melody scale)
    drums: tuple[DrumPattern, ...]                   # empty: no drums
    kits: tuple[str, ...]
    bass: tuple[tuple[str, str], ...]                # (line style, instrument)
    comp: tuple[tuple[tuple[str, str], ...], ...]    # alternatives, each one or more (style, instrument) parts
    lead: tuple[str, ...]                            # melody instruments ("" = none)
    lead_density: Range                              # chance of a note per melody slot
    lead_grid: tuple[int, ...]                       # melody slot length in sixteenths
    mix_db: tuple[Range, Range, Range, Range]        # drums, bass, comp, lead levels
    drive: Range = (0.0, 0.0)                        # guitar distortion drive (0: clean)
    brightness_hz: Range = (3500.0, 9000.0)          # master low-pass cut-off
    reverb: Range = (0.05, 0.25)                     # wet level
    room_s: Range = (0.5, 1.5)                       # reverb time
    master_drive: Range = (0.5, 2.0)                 # soft-clip "bus compression"
    swell_db: Range = (0.0, 3.0)                     # slow level changes over the track
    humanise_ms: Range = (2.0, 8.0)
    beats_per_bar: tuple[int, ...] = (4,)
    crash_chance: float = 0.3
    fill_chance: float = 0.3
    bass_low: int = 36                               # lowest bass root (MIDI)
    extras: tuple[str, ...] = ()                     # "vinyl": hiss and crackle
    pump: Range = (0.0, 0.0)                         # side-chain "pumping" depth of sustained parts, per beat


_BLUES_12 = "I7 I7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7"
_STRAIGHT_8 = "x.x.x.x.x.x.x.x."

GENRE_RECIPES: Mapping[str, GenreRecipe] = MappingProxyType({
    "blues": GenreRecipe(
        description="swung shuffle, 12-bar dominant-seventh changes, boogie or walking bass, harmonica or bent guitar",
        tempo_bpm=(60, 124), swing=(0.75, 1.0),
        progressions=((_BLUES_12, "blues"), ("I7 IV7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7", "blues"),
                      ("I7 V7 IV7 IV7 I7 V7 I7 V7", "blues"), ("i7 i7 i7 i7 iv7 iv7 i7 i7 bVI7 V7 i7 V7", "minor_pentatonic")),
        drums=(DrumPattern(kick="X.....x.X.....x.", snare="....X.......X...", hat=_STRAIGHT_8),
               DrumPattern(kick="X.......X.......", snare="....X..g....X..g", ride=_STRAIGHT_8),
               DrumPattern(kick="X...X...X...X...", snare="....X.......X...", hat="x.x.x.x.x.x.x.x.")),
        kits=("jazz", "jazz", "acoustic"),
        bass=(("boogie", "electric"), ("walking", "upright"), ("boogie", "upright")),
        comp=((("shuffle", "clean_guitar"), ("pad", "organ")), (("pad", "organ"), ("shuffle", "clean_guitar"))),
        lead=("harmonica", "blues_guitar"), lead_density=(0.35, 0.6), lead_grid=(2, 2, 4),
        mix_db=((-9, -5), (-7, -3), (-5, -2), (-4, 0)), drive=(1.0, 3.5),
        brightness_hz=(2800, 5500), reverb=(0.05, 0.25), master_drive=(0.5, 2.0), swell_db=(0, 4),
    ),
    "classical": GenreRecipe(
        description="no drums; bowed strings with vibrato, broken-chord piano, functional harmony, slow swells",
        tempo_bpm=(54, 132), swing=(0.0, 0.0),
        progressions=(("I IV V I", "major"), ("I vi ii V", "major"), ("I V vi iii IV I IV V", "major"),
                      ("i iv V i", "harmonic_minor"), ("i VI iv V", "harmonic_minor"), ("I ii7 V7 I", "major"),
                      ("i iv bVII bIII bVI iim7b5 V i", "harmonic_minor")),
        drums=(), kits=(),
        bass=(("whole", "cello"), ("whole", "cello"), ("broken", "piano")),
        comp=((("pad", "strings"),), (("pad", "strings"), ("arpeggio", "piano")), (("pad", "strings"), ("alberti", "piano"))),
        lead=("violin", "flute", "violin"), lead_density=(0.4, 0.8), lead_grid=(2, 4, 4),
        mix_db=((0, 0), (-9, -3), (-4, 0), (-5, 0)),  # (no drums: their level is unused)
        brightness_hz=(2500, 7500), reverb=(0.25, 0.5), room_s=(1.2, 2.6), master_drive=(0.3, 1.2),
        swell_db=(5, 14), humanise_ms=(6, 15), beats_per_bar=(3, 4, 4),
    ),
    "country": GenreRecipe(
        description="boom-chick bass, bright strummed acoustic guitar, banjo rolls, train-beat or brushes, fiddle or steel",
        tempo_bpm=(88, 160), swing=(0.0, 0.15),
        progressions=(("I IV V I", "pentatonic"), ("I I IV IV I I V V", "pentatonic"), ("I V IV I", "major"),
                      ("I IV I V", "pentatonic"), ("I vi IV V", "major")),
        drums=(DrumPattern(kick="X.......X.......", snare="....X.......X...", hat=_STRAIGHT_8),
               DrumPattern(kick="X.......X.......", snare="gxgXgxgxgxgXgxgx"),
               DrumPattern(kick="X.......X.x.....", snare="....X.......X...", rim="..x.......x.....", hat=_STRAIGHT_8)),
        kits=("acoustic", "brushes"),
        bass=(("boom_chick", "electric"), ("boom_chick", "upright"), ("walking", "electric")),
        comp=((("strum", "acoustic_guitar"), ("roll", "banjo")), (("strum", "acoustic_guitar"),),
              (("roll", "banjo"), ("strum", "acoustic_guitar"))),
        lead=("fiddle", "twang", "steel"), lead_density=(0.5, 0.8), lead_grid=(2,),
        mix_db=((-10, -6), (-8, -4), (-3, 0), (-5, -1)),
        brightness_hz=(5000, 9500), reverb=(0.05, 0.25),
    ),
    "disco": GenreRecipe(
        description="four-on-the-floor kick, open hi-hats on the off-beats, octave bass, string stabs and funk chops",
        tempo_bpm=(106, 134), swing=(0.0, 0.1),
        progressions=(("i7 iv7", "dorian"), ("i7 i7 iv7 v7", "dorian"), ("Imaj7 vi7 ii7 V7", "major"),
                      ("ii7 V7", "dorian"), ("i7 bVII bVI V7", "minor")),
        drums=(DrumPattern(kick="X...X...X...X...", snare="....X.......X...", hat="xx.xxx.xxx.xxx.x", open_hat="..x...x...x...x."),
               DrumPattern(kick="X...X...X...X...", clap="....X.......X...", open_hat="..x...x...x...x.", hat="x...x...x...x..."),
               DrumPattern(kick="X...X...X...X...", snare="....X.......X...", hat="xxxxxxxxxxxxxxxx", open_hat="..x.......x.....")),
        kits=("electronic", "acoustic"),
        bass=(("octave", "electric"), ("octave", "synth")),
        comp=((("stabs", "strings"), ("chops", "muted_guitar")), (("pad", "strings"), ("chops", "muted_guitar")),
              (("chops", "muted_guitar"), ("stabs", "strings"))),
        lead=("string_line", "synth_lead"), lead_density=(0.3, 0.6), lead_grid=(2, 4),
        mix_db=((-4, 0), (-6, -2), (-7, -3), (-8, -3)),
        brightness_hz=(5500, 11000), reverb=(0.05, 0.2), master_drive=(1.0, 3.0), humanise_ms=(0.5, 3),
        crash_chance=0.4,
    ),
    "hiphop": GenreRecipe(
        description="slow heavy 808 kick, sparse snare, sub bass following the kick, lo-fi keys loop, rap-like voice",
        tempo_bpm=(66, 102), swing=(0.0, 0.55),
        progressions=(("i7 iv7", "minor_pentatonic"), ("i7 i7 bVI7 V7", "minor"), ("i9 iv9", "dorian"),
                      ("i bVI i bVII", "minor"), ("ii7 V7 i7 i7", "minor")),
        drums=(DrumPattern(kick="X......X..X.....", snare="....X.......X...", hat=_STRAIGHT_8),
               DrumPattern(kick="X.........X.....", snare="........X.......", hat="xxxxxxxxxxxxxxxx"),
               DrumPattern(kick="X..X......X..x..", clap="....X.......X...", hat="x.x.x.x.x.x.x.xx")),
        kits=("808", "lofi"),
        bass=(("follow_kick", "sub"), ("follow_kick", "sub"), ("whole", "sub")),
        comp=((("loop", "epiano"),), (("loop", "piano"),), (("pad", "pad"),), (("loop", "bell"),)),
        lead=("rap",), lead_density=(0.45, 0.8), lead_grid=(1, 2),
        mix_db=((-2, 0), (-4, 0), (-11, -5), (-7, -2)),
        brightness_hz=(2500, 8000), reverb=(0.0, 0.12), master_drive=(0.8, 2.0), humanise_ms=(0.5, 4),
        crash_chance=0.05, fill_chance=0.1, bass_low=31, extras=("vinyl",),
    ),
    "jazz": GenreRecipe(
        description="swung ride cymbal, walking upright bass, ii-V-I seventh/ninth chords comped on electric piano, sax or trumpet",
        tempo_bpm=(88, 210), swing=(0.7, 1.0),
        progressions=(("ii7 V7 Imaj7 Imaj7", "bebop"), ("Imaj7 vi7 ii7 V7", "bebop"), ("iim7b5 V7 i7 i7", "dorian"),
                      ("ii7 V7 iii7 VI7", "bebop"), ("Imaj7 IV7 iii7 VI7 ii7 V7 Imaj7 V7", "bebop")),
        drums=(DrumPattern(ride="X...x.x.X...x.x.", hat="....x.......x...", kick="g...g...g...g...", snare="r.r.r.r.r.r.r.r."),
               DrumPattern(ride="X...x.x.X...x.x.", hat="....x.......x...", snare="x.g.x.g.x.g.x.g.")),
        kits=("jazz", "brushes"),
        bass=(("walking", "upright"),),
        comp=((("charleston", "epiano"),), (("charleston", "piano"),), (("charleston", "clean_guitar"),)),
        lead=("sax", "trumpet", "sax", "vibes"), lead_density=(0.45, 0.8), lead_grid=(2,),
        mix_db=((-10, -5), (-6, -2), (-8, -3), (-4, 0)),
        brightness_hz=(3000, 8000), reverb=(0.1, 0.35), room_s=(0.8, 1.8), master_drive=(0.3, 1.2),
        swell_db=(2, 7), humanise_ms=(4, 12), crash_chance=0.1, fill_chance=0.1,
    ),
    "metal": GenreRecipe(
        description="heavily distorted low power chords, palm-muted chugs, double kick or gallop, crash cymbals",
        tempo_bpm=(88, 196), swing=(0.0, 0.0),
        progressions=(("i bVI bVII i", "minor"), ("i bII i bII", "phrygian"), ("i i bVII bVI", "minor"),
                      ("i iv bVI V", "harmonic_minor"), ("i5 bIII5 iv5 bII5", "phrygian")),
        drums=(DrumPattern(kick="xxxxxxxxxxxxxxxx", snare="....X.......X...", hat=_STRAIGHT_8),
               DrumPattern(kick="X.xxX.xxX.xxX.xx", snare="....X.......X...", ride=_STRAIGHT_8),
               DrumPattern(kick="X..X..X.X..X....", snare="........X.......", hat="x...x...x...x..."),
               DrumPattern(kick="x.x.x.x.x.x.x.x.", snare=".x.x.x.x.x.x.x.x", hat="x...x...x...x...")),
        kits=("metal",),
        bass=(("eighths", "pick"), ("sixteenths", "pick")),
        comp=((("chug", "power_guitar"),), (("chug", "power_guitar"), ("power_sustain", "power_guitar")),
              (("power_sustain", "power_guitar"), ("chug", "power_guitar"))),
        lead=("lead_guitar", "", ""), lead_density=(0.4, 0.8), lead_grid=(1, 2),
        mix_db=((-4, -1), (-8, -3), (-2, 0), (-8, -3)), drive=(7.0, 22.0),
        brightness_hz=(3500, 9000), reverb=(0.03, 0.18), master_drive=(1.0, 3.0), humanise_ms=(1, 4),
        crash_chance=0.7, fill_chance=0.4, bass_low=28,
    ),
    "pop": GenreRecipe(
        description="four-on-the-floor or backbeat, I-V-vi-IV, supersaw pads and synth arpeggios, sung formant melody",
        tempo_bpm=(88, 132), swing=(0.0, 0.15),
        progressions=(("I V vi IV", "pentatonic"), ("vi IV I V", "pentatonic"), ("I vi IV V", "major"),
                      ("IV V iii vi", "major"), ("I IV vi V", "pentatonic")),
        drums=(DrumPattern(kick="X...X...X...X...", clap="....X.......X...", hat="..x...x...x...x."),
               DrumPattern(kick="X.....x.X.......", snare="....X.......X...", hat=_STRAIGHT_8),
               DrumPattern(kick="X.....x...X.....", clap="....X.......X...", hat="xxxxxxxxxxxxxxxx")),
        kits=("electronic",),
        bass=(("eighths", "synth"), ("follow_kick", "synth"), ("eighths", "electric")),
        comp=((("arpeggio", "pluck_synth"), ("pad", "pad")), (("pad", "pad"), ("arpeggio", "pluck_synth")),
              (("pad", "pad"), ("block", "piano"))),
        lead=("voice",), lead_density=(0.55, 0.8), lead_grid=(2, 4),
        mix_db=((-6, -3), (-7, -4), (-6, -3), (-3, 0)),
        brightness_hz=(5000, 10000), reverb=(0.1, 0.3), master_drive=(1.0, 2.8), humanise_ms=(0.5, 3),
        pump=(0.4, 0.85),
    ),
    "reggae": GenreRecipe(
        description="one-drop or steppers drums, heavy round bass, off-beat guitar skank and organ bubble",
        tempo_bpm=(60, 100), swing=(0.0, 0.4),
        progressions=(("I IV", "major"), ("i iv", "minor"), ("I V", "pentatonic"), ("i bVII", "dorian"),
                      ("I IV V IV", "major")),
        drums=(DrumPattern(kick="........X.......", rim="........X.......", hat=_STRAIGHT_8),
               DrumPattern(kick="X.......X.......", rim="....X.......X...", hat=_STRAIGHT_8),
               DrumPattern(kick="X...X...X...X...", rim="........X.......", hat="..x...x...x...x.")),
        kits=("reggae",),
        bass=(("reggae", "dub"),),
        comp=((("skank", "clean_guitar"), ("bubble", "organ")), (("skank", "clean_guitar"),), (("skank", "organ"),)),
        lead=("melodica", "voice"), lead_density=(0.3, 0.6), lead_grid=(2, 4),
        mix_db=((-6, -2), (-3, 0), (-7, -3), (-7, -2)),
        brightness_hz=(3000, 8500), reverb=(0.1, 0.35), room_s=(0.6, 1.6), crash_chance=0.1, bass_low=33,
    ),
    "rock": GenreRecipe(
        description="backbeat drums, eighth-note bass, moderately distorted power or open chords, crash on phrases",
        tempo_bpm=(92, 168), swing=(0.0, 0.1),
        progressions=(("I IV V IV", "minor_pentatonic"), ("I bVII IV I", "mixolydian"), ("I V vi IV", "pentatonic"),
                      ("i bVI bVII i", "minor_pentatonic"), ("I IV I V", "minor_pentatonic")),
        drums=(DrumPattern(kick="X.......X.x.....", snare="....X.......X...", hat=_STRAIGHT_8),
               DrumPattern(kick="X.x.....X.x.....", snare="....X.......X...", ride=_STRAIGHT_8),
               DrumPattern(kick="X.......X.......", snare="....X.......X...", hat="xxxxxxxxxxxxxxxx")),
        kits=("acoustic",),
        bass=(("eighths", "pick"), ("follow_kick", "pick"), ("eighths", "electric")),
        comp=((("open8", "power_guitar"),), (("strum", "power_guitar"),),
              (("power8", "power_guitar"), ("strum", "clean_guitar"))),
        lead=("lead_guitar",), lead_density=(0.35, 0.7), lead_grid=(2, 4),
        mix_db=((-5, -1), (-7, -3), (-3, 0), (-7, -2)), drive=(3.0, 10.0),
        brightness_hz=(3000, 6500), reverb=(0.05, 0.2), master_drive=(1.0, 2.6), humanise_ms=(1, 6),
        crash_chance=0.6, fill_chance=0.4, bass_low=33,
    ),
})

# --------------------------------------------------------------------------------------------
# Oscillators and instruments
# --------------------------------------------------------------------------------------------

_TABLE_BITS = 12
_TABLE = 1 << _TABLE_BITS
_CYCLE = float(2**32)
_HARMONIC_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


@lru_cache(maxsize=1024)
def _wavetable(amps: tuple[float, ...]) -> np.ndarray:
    """One period of sum(a_k sin(2 pi k x)), peak-normalised, float32."""
    spectrum = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    spectrum[1 : len(amps) + 1] = -0.5j * _TABLE * np.asarray(amps)  # sine phase
    table = np.fft.irfft(spectrum, _TABLE)
    table = (table / max(np.abs(table).max(), 1e-9)).astype(np.float32)
    table.flags.writeable = False
    return table


def _band_limited(amps: tuple[float, ...], top_hz: float, sample_rate: int, max_hz: float = 0.0) -> np.ndarray:
    """The wavetable of ``amps`` without harmonics above ``max_hz`` or that would alias at ``top_hz``."""
    ceiling = min(0.45 * sample_rate, max_hz) if max_hz > 0 else 0.45 * sample_rate
    limit = min(int(ceiling / max(top_hz, 1.0)), len(amps))
    count = _HARMONIC_BUCKETS[max(bisect.bisect_right(_HARMONIC_BUCKETS, limit) - 1, 0)]
    return _wavetable(amps[:count])


def _lookup(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Table value at each phase (int64, a full cycle is 2**32, any integer wraps)."""
    index = phase >> (32 - _TABLE_BITS)
    index &= _TABLE - 1
    return table.take(index)


def _phase(freq: float, n: int, sample_rate: int, ratio: np.ndarray | None = None, start: float = 0.0) -> np.ndarray:
    """An int64 phase accumulator at ``freq`` (times ``ratio`` per sample, when given)."""
    step = freq / sample_rate * _CYCLE
    if ratio is None:
        phase = np.arange(n, dtype=np.int64)
        phase *= int(round(step))
    else:
        phase = np.cumsum((ratio * np.float32(step)).astype(np.int64))
    phase += int(start * _CYCLE)
    return phase


def _spectrum(count: int, tilt: float, *, odd: float = 1.0, even: float = 1.0) -> tuple[float, ...]:
    """Harmonic amplitudes k**-tilt (tilt and weights rounded so that tracks share wavetables)."""
    tilt, odd, even = round(tilt * 20) / 20, round(odd, 1), round(even, 1)
    return tuple(round(float(k ** -tilt) * (odd if k % 2 else even), 4) for k in range(1, count + 1))


@dataclass(frozen=True)
class Timbre:
    """A note-level instrument: wavetable (or FM) oscillator, envelope, vibrato, pluck brightness."""

    harmonics: tuple[float, ...] = (1.0,)
    attack: float = 0.005
    decay: float = 0.5            # time constant of the fall from peak towards ``sustain``
    sustain: float = 0.7
    release: float = 0.08
    bright: tuple[float, ...] = ()   # attack spectrum that fades into ``harmonics`` (plucks)
    bright_decay: float = 0.05
    vibrato_hz: float = 0.0
    vibrato_semitones: float = 0.0
    vibrato_delay: float = 0.0
    detune_cents: float = 0.0     # a second, detuned oscillator (ensemble, supersaw)
    fm_ratio: float = 0.0         # > 0: two-operator FM instead of the wavetable
    fm_index: float = 0.0
    fm_decay: float = 0.3
    breath: float = 0.0           # noise in the note, following its envelope
    bend_time: float = 0.08       # glide time of a bend from below
    formants: bool = False        # vowel formant filter (voice)
    max_hz: float = 0.0           # > 0: no harmonics above this frequency (a darker tone)


def _instrument(name: str, rng: np.random.Generator) -> Timbre:
    """A timbre for ``name`` with this track's own variation of its parameters."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if name == "strings":
        return Timbre(_spectrum(16, u(0.9, 1.4)), attack=u(0.12, 0.35), decay=1.0, sustain=0.9, release=u(0.25, 0.6),
                      vibrato_hz=u(4.8, 6.2), vibrato_semitones=u(0.08, 0.18), detune_cents=u(6, 14))
    if name == "cello":
        return Timbre(_spectrum(16, u(1.0, 1.5)), attack=u(0.08, 0.2), decay=1.0, sustain=0.9, release=u(0.2, 0.4),
                      vibrato_hz=u(4.5, 5.8), vibrato_semitones=u(0.1, 0.2), vibrato_delay=0.15)
    if name in ("violin", "fiddle", "string_line"):
        fiddle = name == "fiddle"
        return Timbre(_spectrum(24, u(0.75, 1.1)), attack=u(0.02, 0.05) if fiddle else u(0.05, 0.12), decay=0.6,
                      sustain=0.85, release=u(0.08, 0.2) if fiddle else u(0.15, 0.35), vibrato_hz=u(5.0, 6.5),
                      vibrato_semitones=u(0.15, 0.35), vibrato_delay=u(0.05, 0.2),
                      detune_cents=u(8, 14) if name == "string_line" else 0.0)
    if name == "flute":
        return Timbre((1.0, u(0.15, 0.4), u(0.05, 0.2), 0.04), attack=u(0.04, 0.1), decay=1.0, sustain=0.9,
                      release=0.1, vibrato_hz=u(4.5, 5.5), vibrato_semitones=u(0.08, 0.2), breath=u(0.03, 0.08))
    if name == "piano":
        return Timbre(_spectrum(12, u(1.4, 1.9)), bright=_spectrum(24, u(0.6, 0.9)), bright_decay=u(0.06, 0.14),
                      attack=0.003, decay=u(0.7, 1.4), sustain=0.0, release=u(0.1, 0.25))
    if name == "epiano":
        return Timbre(attack=0.003, decay=u(0.6, 1.2), sustain=0.15, release=0.15, fm_ratio=1.0,
                      fm_index=u(1.2, 2.5), fm_decay=u(0.15, 0.4))
    if name == "vibes":
        return Timbre(attack=0.002, decay=u(0.8, 1.4), sustain=0.0, release=0.2, fm_ratio=4.0,
                      fm_index=u(0.8, 1.6), fm_decay=u(0.05, 0.12), vibrato_hz=u(4, 6), vibrato_semitones=0.03)
    if name == "bell":
        return Timbre(attack=0.002, decay=u(0.5, 1.0), sustain=0.0, release=0.2, fm_ratio=u(3.4, 3.6),
                      fm_index=u(1.5, 3.0), fm_decay=u(0.2, 0.5))
    if name == "organ":
        bars = (1.0, u(0.4, 0.9), u(0.3, 0.8), u(0.2, 0.6), 0.0, u(0.0, 0.4), 0.0, u(0.0, 0.4))
        return Timbre(bars, attack=0.006, decay=1.0, sustain=1.0, release=0.04, vibrato_hz=u(5.5, 7.0),
                      vibrato_semitones=u(0.02, 0.06))
    if name in ("clean_guitar", "acoustic_guitar", "twang", "blues_guitar"):
        acoustic = name == "acoustic_guitar"
        return Timbre(_spectrum(12, u(1.1, 1.5)), bright=_spectrum(32 if acoustic else 24, u(0.4, 0.7)),
                      bright_decay=u(0.03, 0.07) if not acoustic else u(0.05, 0.1), attack=0.002,
                      decay=u(0.4, 0.9), sustain=0.1 if name != "blues_guitar" else 0.35, release=0.06,
                      bend_time=u(0.06, 0.12), vibrato_hz=u(4.5, 6) if name == "blues_guitar" else 0.0,
                      vibrato_semitones=u(0.1, 0.25) if name == "blues_guitar" else 0.0, vibrato_delay=0.15)
    if name == "banjo":
        return Timbre(_spectrum(12, u(1.2, 1.6)), bright=_spectrum(32, u(0.3, 0.5)), bright_decay=u(0.01, 0.025),
                      attack=0.001, decay=u(0.12, 0.25), sustain=0.0, release=0.04)
    if name == "muted_guitar":
        return Timbre(_spectrum(12, u(1.0, 1.4)), bright=_spectrum(24, 0.6), bright_decay=0.02, attack=0.002,
                      decay=u(0.04, 0.09), sustain=0.0, release=0.03)
    if name == "power_guitar":
        return Timbre(_spectrum(16, u(0.9, 1.3)), attack=0.003, decay=u(0.8, 2.0), sustain=0.6, release=0.05,
                      detune_cents=u(3, 9))
    if name == "lead_guitar":
        return Timbre(_spectrum(16, u(0.9, 1.2)), attack=0.004, decay=1.5, sustain=0.7, release=0.06,
                      vibrato_hz=u(5.0, 6.5), vibrato_semitones=u(0.15, 0.35), vibrato_delay=0.12, bend_time=u(0.05, 0.1))
    if name == "pad":
        return Timbre(_spectrum(24, u(1.0, 1.4)), attack=u(0.15, 0.5), decay=1.0, sustain=0.9, release=u(0.3, 0.7),
                      detune_cents=u(10, 22))
    if name == "pluck_synth":
        return Timbre(_spectrum(16, u(1.2, 1.7)), bright=_spectrum(24, 0.9), bright_decay=u(0.02, 0.05),
                      attack=0.002, decay=u(0.12, 0.3), sustain=0.0, release=0.05, detune_cents=u(5, 12))
    if name == "synth_lead":
        return Timbre(_spectrum(15, u(0.9, 1.2), even=u(0.0, 0.4)), attack=0.01, decay=0.5, sustain=0.8,
                      release=0.08, vibrato_hz=u(5, 6.5), vibrato_semitones=u(0.08, 0.2), vibrato_delay=0.2,
                      detune_cents=u(4, 10))
    if name in ("harmonica", "melodica"):
        reed = tuple(round(a, 3) for a in (1.0, u(0.2, 0.5), u(0.4, 0.8), u(0.1, 0.3), u(0.2, 0.5), 0.1, u(0.1, 0.3), 0.05))
        return Timbre(reed, attack=u(0.02, 0.05), decay=0.8, sustain=0.8, release=0.06,
                      vibrato_hz=u(4.5, 6.0), vibrato_semitones=u(0.12, 0.3) if name == "harmonica" else 0.04,
                      breath=u(0.02, 0.06), bend_time=0.1)
    if name in ("sax", "trumpet"):
        trumpet = name == "trumpet"
        return Timbre(_spectrum(16, u(0.45, 0.7) if trumpet else u(0.7, 1.0)), attack=u(0.02, 0.05), decay=0.6,
                      sustain=0.8, release=0.07, vibrato_hz=u(4.5, 5.5), vibrato_semitones=u(0.06, 0.15),
                      vibrato_delay=0.15, breath=u(0.02, 0.05) if trumpet else u(0.04, 0.1))
    if name == "steel":
        return Timbre((1.0, u(0.3, 0.5), u(0.1, 0.3), 0.08, 0.04), attack=0.02, decay=1.2, sustain=0.5, release=0.2,
                      vibrato_hz=u(3.5, 5), vibrato_semitones=u(0.08, 0.15), bend_time=u(0.12, 0.25))
    if name in ("voice", "rap"):
        return Timbre(_spectrum(32, u(1.6, 2.1)), attack=0.02 if name == "voice" else 0.008, decay=0.5,
                      sustain=0.85 if name == "voice" else 0.6, release=0.06, vibrato_hz=u(4.5, 6.0),
                      vibrato_semitones=u(0.1, 0.3) if name == "voice" else 0.0, vibrato_delay=0.2,
                      breath=u(0.01, 0.04), formants=True, bend_time=0.05)
    # bass instruments
    if name == "electric":
        return Timbre(_spectrum(8, u(1.3, 1.8)), bright=_spectrum(16, u(0.8, 1.1)), bright_decay=u(0.03, 0.06),
                      attack=0.003, decay=u(0.4, 0.8), sustain=0.35, release=0.05)
    if name == "upright":
        return Timbre(_spectrum(6, u(1.8, 2.4)), bright=_spectrum(12, 1.2), bright_decay=u(0.02, 0.04),
                      attack=0.004, decay=u(0.25, 0.45), sustain=0.15, release=0.06)
    if name == "synth":
        return Timbre(_spectrum(24, u(0.9, 1.3)), attack=0.003, decay=u(0.15, 0.4), sustain=u(0.4, 0.8),
                      release=0.04, detune_cents=u(0, 8))
    if name == "sub":
        return Timbre((1.0, u(0.05, 0.3), u(0.0, 0.1)), attack=0.003, decay=u(0.5, 1.2), sustain=0.3, release=0.08,
                      bend_time=u(0.03, 0.06))
    if name == "dub":
        return Timbre((1.0, u(0.2, 0.45), u(0.05, 0.15)), attack=0.008, decay=u(0.4, 0.8), sustain=0.6, release=0.07)
    if name == "pick":
        return Timbre(_spectrum(12, u(1.0, 1.4)), bright=_spectrum(20, 0.8), bright_decay=0.03, attack=0.002,
                      decay=u(0.25, 0.5), sustain=0.5, release=0.04)
    raise ConfigError(f"demo recipe: unknown instrument {name!r}")


_VOWELS: dict[str, tuple[tuple[float, float, float], ...]] = {  # (frequency Hz, bandwidth Hz, gain)
    "a": ((800, 80, 1.0), (1150, 90, 0.5), (2900, 120, 0.25)),
    "e": ((400, 70, 1.0), (1700, 100, 0.4), (2600, 120, 0.25)),
    "i": ((280, 60, 1.0), (2250, 100, 0.3), (2900, 120, 0.25)),
    "o": ((450, 70, 1.0), (800, 80, 0.6), (2830, 120, 0.15)),
    "u": ((325, 60, 1.0), (700, 80, 0.4), (2530, 120, 0.1)),
}


def _formant_filter(x: np.ndarray, vowel: str, sample_rate: int) -> np.ndarray:
    out = np.zeros_like(x)
    for freq, bandwidth, gain in _VOWELS[vowel]:
        if freq >= 0.45 * sample_rate:
            continue
        r = math.exp(-math.pi * bandwidth / sample_rate)
        a = [1.0, -2.0 * r * math.cos(2.0 * math.pi * freq / sample_rate), r * r]
        out += signal.lfilter([gain * (1.0 - r)], a, x).astype(np.float32)
    return out


def _envelope(timbre: Timbre, n: int, sample_rate: int, cache: dict | None) -> np.ndarray:
    """Attack ramp, exponential decay towards the sustain level, linear release over the last ``release`` s."""
    key = ("env", timbre.attack, timbre.decay, timbre.sustain, timbre.release, n)
    if cache is not None and key in cache:
        return cache[key]
    t = np.arange(n, dtype=np.float32) / np.float32(sample_rate)
    env = np.minimum(t / np.float32(max(timbre.attack, 0.002)), np.float32(1.0))
    if timbre.sustain < 1.0:
        fall = np.exp(-np.maximum(t - np.float32(timbre.attack), np.float32(0.0)) / np.float32(timbre.decay))
        env *= np.float32(timbre.sustain) + np.float32(1.0 - timbre.sustain) * fall
    env *= np.clip((np.float32(n / sample_rate) - t) / np.float32(max(timbre.release, 0.01)), 0.0, 1.0)
    if cache is not None:
        cache[key] = env
    return env


def _fade(seconds: float, n: int, sample_rate: int, cache: dict | None) -> np.ndarray:
    key = ("fade", seconds, n)
    if cache is not None and key in cache:
        return cache[key]
    fade = _decay(n, seconds, sample_rate)
    if cache is not None:
        cache[key] = fade
    return fade


def _render_note(timbre: Timbre, freq: float, duration_s: float, velocity: float, *, sample_rate: int,
                 rng: np.random.Generator, bend: float = 0.0, vowel: str = "a", cache: dict | None = None) -> np.ndarray:
    """One note (with its release tail) as float32: oscillator x envelope x velocity.

    ``cache`` (one dict per part) shares envelopes between notes of equal length.
    """
    sr = sample_rate
    total = duration_s + timbre.release
    n = max(int(total * sr), 16)
    top = freq * (2.0 ** (timbre.vibrato_semitones / 12.0)) * (1.0 + timbre.detune_cents / 1200.0)
    ratio = None
    if timbre.vibrato_semitones or bend:
        t = np.arange(n, dtype=np.float32) / np.float32(sr)
        exponent = np.zeros(n, dtype=np.float32)
        if timbre.vibrato_semitones:
            wobble = np.sin(np.float32(2.0 * np.pi * timbre.vibrato_hz) * t + np.float32(rng.uniform(0, 2 * np.pi)))
            if timbre.vibrato_delay > 0:
                wobble *= np.minimum(t / np.float32(timbre.vibrato_delay), np.float32(1.0))
            exponent += np.float32(timbre.vibrato_semitones / 12.0) * wobble
        if bend:
            exponent -= np.float32(bend / 12.0) * _decay(n, timbre.bend_time, sr)
        ratio = np.exp2(exponent)
    start = float(rng.random())
    phase = _phase(freq, n, sr, ratio, start)
    if timbre.fm_ratio:
        sine = _wavetable((1.0,))
        modulator = _lookup(sine, _phase(freq * timbre.fm_ratio, n, sr, ratio))
        depth = np.float32(timbre.fm_index) * (_fade(timbre.fm_decay, n, sr, cache) + np.float32(0.1))
        shift = (modulator * depth * np.float32(_CYCLE / (2.0 * np.pi))).astype(np.int64)
        y = _lookup(sine, phase + shift)
    else:
        y = _lookup(_band_limited(timbre.harmonics, top, sr, timbre.max_hz), phase)
        if timbre.detune_cents:
            other = _phase(freq * (1.0 + timbre.detune_cents / 1200.0), n, sr, ratio, start + 0.37)
            y = np.float32(0.5) * (y + _lookup(_band_limited(timbre.harmonics, top, sr, timbre.max_hz), other))
        if timbre.bright:
            bright = _lookup(_band_limited(timbre.bright, top, sr, timbre.max_hz), phase)
            y = y + (bright - y) * _fade(timbre.bright_decay, n, sr, cache)
    if timbre.breath:
        y = y + np.float32(timbre.breath) * rng.standard_normal(n, dtype=np.float32)
    y = y * _envelope(timbre, n, sr, cache)
    if timbre.formants:
        y = _formant_filter(y, vowel, sr) * np.float32(4.0)
    y *= np.float32(velocity)
    return y


# --------------------------------------------------------------------------------------------
# Percussion
# --------------------------------------------------------------------------------------------


def _decay(n: int, seconds: float, sample_rate: int) -> np.ndarray:
    return np.exp(-np.arange(n, dtype=np.float32) / (seconds * sample_rate))


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n, dtype=np.float32)


def _filtered(x: np.ndarray, kind: str, cutoff: float | tuple[float, float], sample_rate: int, order: int = 2) -> np.ndarray:
    nyquist = sample_rate / 2.0
    if isinstance(cutoff, tuple):
        cutoff = (min(round(cutoff[0], -1), 0.9 * nyquist), min(round(cutoff[1], -1), 0.95 * nyquist))
        if cutoff[0] >= cutoff[1]:
            return x
    else:
        cutoff = min(round(cutoff, -1), 0.95 * nyquist)
    return signal.sosfilt(_butter(order, cutoff, kind, sample_rate), x).astype(np.float32)


@lru_cache(maxsize=512)
def _butter(order: int, cutoff: float | tuple[float, float], kind: str, sample_rate: int) -> np.ndarray:
    return signal.butter(order, cutoff, btype=kind, fs=sample_rate, output="sos")


def _metallic(rng: np.random.Generator, n: int, base_hz: float, sample_rate: int) -> np.ndarray:
    """Six detuned square waves at inharmonic ratios (the classic drum-machine cymbal)."""
    t = np.arange(n, dtype=np.float32) / sample_rate
    ratios = (1.0, 1.48, 1.8, 2.55, 2.63, 3.9)
    out = np.zeros(n, dtype=np.float32)
    for ratio in ratios:
        out += np.sign(np.sin(2.0 * np.pi * base_hz * ratio * rng.uniform(0.98, 1.02) * t)).astype(np.float32)
    return out / len(ratios)


def _kit(kind: str, rng: np.random.Generator, sample_rate: int) -> dict[str, np.ndarray]:
    """Synthesise one track's drum kit: kick, snare, hats, ride, crash, clap, rim, brush."""
    sr = sample_rate
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    kick_end, kick_start, kick_decay, click = {
        "acoustic": ((50, 62), (110, 160), (0.12, 0.25), (0.2, 0.5)),
        "jazz": ((62, 80), (100, 140), (0.1, 0.2), (0.05, 0.2)),
        "brushes": ((58, 75), (100, 140), (0.1, 0.2), (0.05, 0.2)),
        "metal": ((52, 65), (140, 200), (0.06, 0.12), (0.6, 1.0)),
        "electronic": ((46, 56), (120, 170), (0.18, 0.35), (0.1, 0.4)),
        "808": ((38, 48), (80, 120), (0.35, 0.8), (0.05, 0.25)),
        "lofi": ((45, 55), (90, 130), (0.2, 0.4), (0.1, 0.3)),
        "reggae": ((45, 58), (90, 130), (0.2, 0.35), (0.05, 0.2)),
    }[kind]
    n = int(sr * 1.2)
    t = np.arange(n, dtype=np.float64) / sr
    end, start = u(*kick_end), u(*kick_start)
    sweep = end + (start - end) * np.exp(-t / u(0.02, 0.05))
    kick = np.sin(2.0 * np.pi * np.cumsum(sweep) / sr).astype(np.float32) * _decay(n, u(*kick_decay), sr)
    kick += u(*click) * _filtered(_noise(rng, n), "highpass", 1500.0, sr) * _decay(n, 0.004, sr)
    if kind == "808":
        kick = np.tanh(u(1.0, 2.5) * kick) / np.tanh(1.0)
    n = int(sr * 0.5)
    tone = u(170, 240) if kind != "reggae" else u(300, 420)
    body = np.sin(2.0 * np.pi * tone * np.arange(n) / sr).astype(np.float32) * _decay(n, 0.04, sr)
    rattle = _filtered(_noise(rng, n), "bandpass", (u(1500, 3000), u(6000, 9000)), sr) * _decay(n, u(0.08, 0.18), sr)
    snare = u(0.3, 0.7) * body + rattle * u(0.8, 1.3)
    n = int(sr * 0.5)
    hat_base = u(320, 480)
    closed = (0.6 * _metallic(rng, n, hat_base, sr) + 0.6 * _noise(rng, n))
    closed = _filtered(closed, "highpass", u(6000, 9000), sr) * _decay(n, u(0.02, 0.05), sr)
    n_open = int(sr * 0.9)
    opened = 0.6 * _metallic(rng, n_open, hat_base, sr) + 0.6 * _noise(rng, n_open)
    opened = _filtered(opened, "highpass", u(5000, 8000), sr) * _decay(n_open, u(0.15, 0.3), sr)
    n = int(sr * 1.6)
    ride = _metallic(rng, n, u(400, 600), sr) + 0.3 * _noise(rng, n)
    ride = _filtered(ride, "highpass", u(2500, 4500), sr) * _decay(n, u(0.3, 0.6), sr)
    ride += 0.4 * _filtered(_noise(rng, n), "highpass", 7000.0, sr) * _decay(n, 0.01, sr)
    n = int(sr * 2.5)
    crash = _filtered(_noise(rng, n) + 0.5 * _metallic(rng, n, u(300, 500), sr), "highpass", u(3000, 5000), sr)
    crash *= _decay(n, u(0.6, 1.2), sr)
    n = int(sr * 0.3)
    burst = np.zeros(n, dtype=np.float32)
    for offset in (0.0, 0.011, 0.022):
        start_i = int(offset * sr)
        burst[start_i:] += _decay(n - start_i, 0.008 if offset < 0.02 else 0.06, sr)
    clap = _filtered(_noise(rng, n), "bandpass", (900.0, 3500.0), sr) * burst
    n = int(sr * 0.12)
    rim = (_filtered(_noise(rng, n), "bandpass", (1500.0, 4500.0), sr)
           + np.sin(2.0 * np.pi * u(700, 1000) * np.arange(n) / sr).astype(np.float32)) * _decay(n, 0.015, sr)
    n = int(sr * 0.3)
    swish = np.minimum(np.arange(n, dtype=np.float32) / (0.012 * sr), 1.0) * _decay(n, u(0.06, 0.12), sr)
    brush = _filtered(_noise(rng, n), "bandpass", (2000.0, 7000.0), sr) * swish
    kit = {"kick": kick, "snare": snare, "hat": closed, "open_hat": opened, "ride": ride, "crash": crash,
           "clap": clap, "rim": rim}
    if kind == "brushes":
        kit["snare"] = brush * 1.2
    peaks = {"kick": 1.0, "snare": 0.8, "hat": 0.25, "open_hat": 0.3, "ride": 0.3, "crash": 0.4, "clap": 0.7, "rim": 0.5}
    if kind == "brushes":
        peaks["snare"] = 0.45
    return {name: _trim(sample * np.float32(peaks[name] / max(float(np.abs(sample).max()), 1e-9)))
            for name, sample in kit.items()}


def _trim(sample: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Cut a percussion sample where it has decayed below ``floor`` of its peak for good, with a short fade."""
    loud = np.flatnonzero(np.abs(sample) > floor * float(np.abs(sample).max()))
    end = int(loud[-1]) + 1 if loud.size else len(sample)
    out = sample[:end].astype(np.float32)
    fade = min(64, end)
    out[end - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


# --------------------------------------------------------------------------------------------
# Arrangement: one track = drums + bass + comping parts + melody, mixed and mastered
# --------------------------------------------------------------------------------------------

_HIT = {"X": 1.0, "x": 0.75, "g": 0.3, "r": 0.3}


@dataclass
class _Note:
    start: float       # seconds
    duration: float    # seconds
    midi: float
    velocity: float
    bend: float = 0.0
    vowel: str = "a"


def _add(buffer: np.ndarray, start: int, x: np.ndarray) -> None:
    if start >= len(buffer) or start + len(x) <= 0:
        return
    if start < 0:
        x, start = x[-start:], 0
    end = min(len(buffer), start + len(x))
    buffer[start:end] += x[: end - start]


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.dot(x, x)) / x.size) if x.size else 0.0


def _drive(x: np.ndarray, amount: float) -> np.ndarray:
    """Soft clipping (tanh) of ``x`` scaled to unit peak; 0 leaves it clean."""
    if amount <= 0:
        return x
    x = x / max(float(np.abs(x).max()), 1e-9)
    return (np.tanh(amount * x) / math.tanh(amount)).astype(np.float32)


class _Track:
    """One track being made: its plan (tempo, key, chords, where the excerpt starts) and its parts."""

    def __init__(self, recipe: GenreRecipe, rng: np.random.Generator, sample_rate: int, duration_s: float):
        self.recipe, self.rng, self.sr = recipe, rng, sample_rate
        u = lambda r: float(rng.uniform(*r))  # noqa: E731
        self.bpm = u(recipe.tempo_bpm)
        self.swing = u(recipe.swing)
        self.beats = int(rng.choice(recipe.beats_per_bar))
        self.key = int(rng.integers(12))
        progression, scale = recipe.progressions[int(rng.integers(len(recipe.progressions)))]
        self.chords = parse_progression(progression)
        self.scale = _SCALES[scale]
        self.humanise = u(recipe.humanise_ms) / 1000.0
        self.phrase = int(rng.choice((4, 8)))
        self.beat_s = 60.0 / self.bpm
        self.bar_s = self.beat_s * self.beats
        self.steps = 4 * self.beats
        self.bar0 = int(rng.integers(self.phrase * len(self.chords)))  # where in the song the excerpt starts
        self.offset = u((0.0, self.bar_s))
        self.n_out = int(round(duration_s * sample_rate))
        self.n_bars = int(math.ceil((duration_s + self.offset) / self.bar_s)) + 1
        self.length = int((self.n_bars * self.bar_s + 3.0) * sample_rate)

    # timing -------------------------------------------------------------------------------
    def time(self, bar: int, step: float) -> float:
        """Seconds at sixteenth ``step`` of ``bar``: swing on the off-beat eighths, humanised timing."""
        beat, sub = divmod(step, 4.0)
        swung = 0.5 + self.swing / 6.0
        position = sub / 2.0 * swung if sub < 2.0 else swung + (sub - 2.0) / 2.0 * (1.0 - swung)
        t = (bar * self.beats + beat + position) * self.beat_s
        return t + float(self.rng.normal(0.0, self.humanise))

    def chord(self, bar: int) -> Chord:
        return self.chords[(bar + self.bar0) % len(self.chords)]

    def phrase_position(self, bar: int) -> int:
        return (bar + self.bar0) % self.phrase

    def pitch_classes(self, chord: Chord) -> list[int]:
        return [(self.key + chord.root + i) % 12 for i in chord.intervals]

    def voicing(self, chord: Chord, center: int = 60, size: int = 4) -> list[int]:
        notes = sorted({_place(pc, center - 6) for pc in self.pitch_classes(chord)})
        return notes[:size]

    # parts --------------------------------------------------------------------------------
    def render_notes(self, notes: Sequence[_Note], timbre: Timbre) -> np.ndarray:
        out = np.zeros(self.length, dtype=np.float32)
        cache: dict = {}
        for note in notes:
            y = _render_note(timbre, _midi_hz(note.midi), note.duration, note.velocity, sample_rate=self.sr,
                             rng=self.rng, bend=note.bend, vowel=note.vowel, cache=cache)
            _add(out, int(note.start * self.sr), y)
        return out

    def drums(self, pattern: DrumPattern) -> np.ndarray:
        rng, r = self.rng, self.recipe
        kit = _kit(str(rng.choice(r.kits)), rng, self.sr)
        out = np.zeros(self.length, dtype=np.float32)
        voices = [(name, getattr(pattern, name)) for name in ("kick", "snare", "hat", "open_hat", "ride", "clap", "rim")]
        for bar in range(self.n_bars):
            fill = self.phrase_position(bar) == self.phrase - 1 and rng.random() < r.fill_chance
            for name, steps in voices:
                if not steps:
                    continue
                if fill and name == "snare":
                    steps = pattern.fill
                for step, mark in enumerate(steps[: self.steps]):
                    if mark == "." or (mark == "r" and rng.random() > 0.3):
                        continue
                    gain = _HIT[mark] * float(rng.uniform(0.85, 1.1))
                    _add(out, int(self.time(bar, step) * self.sr), kit[name] * gain)
            if self.phrase_position(bar) == 0 and rng.random() < r.crash_chance:
                _add(out, int(self.time(bar, 0) * self.sr), kit["crash"])
        return out

    def bass_line(self, style: str, pattern: DrumPattern | None) -> list[_Note]:
        rng, notes, step_s = self.rng, [], self.beat_s / 4.0
        low = self.recipe.bass_low
        for bar in range(self.n_bars):
            chord, following = self.chord(bar), self.chord(bar + 1)
            root = _place((self.key + chord.root) % 12, low)
            fifth = root + 7 if chord.intervals[:3] != (0, 3, 6) else root + 6
            third = root + chord.intervals[1]
            next_root = _place((self.key + following.root) % 12, low)
            hits: list[tuple[float, float, float]] = []  # (step, length in steps, midi)
            if style == "whole":
                hits = [(0, self.steps, root)]
            elif style == "broken":
                hits = [(s, 2, (root, fifth, root + 12, fifth)[(s // 2) % 4]) for s in range(0, self.steps, 2)]
            elif style == "boom_chick":
                hits = [(0, 3, root), (8, 3, fifth - 12 if fifth - 12 >= low - 5 else fifth)] if self.steps == 16 else [(0, 3, root)]
            elif style == "walking":
                tones = [root, int(rng.choice([third, fifth, root + 12])), int(rng.choice([fifth, third, root + 10])),
                         next_root + int(rng.choice([-1, 1, -2]))]
                hits = [(4 * b, 3.6, tones[b % 4]) for b in range(self.beats)]
            elif style == "boogie":
                line = (0, 0, 4, 4, 7, 7, 9, 10) if chord.intervals[1] == 4 else (0, 0, 3, 3, 7, 7, 8, 10)
                hits = [(2 * i, 1.8, root + line[i % 8]) for i in range(self.steps // 2)]
            elif style == "octave":
                hits = [(2 * i, 1.4, root + (12 if i % 2 else 0)) for i in range(self.steps // 2)]
            elif style == "eighths":
                hits = [(2 * i, 1.7, root) for i in range(self.steps // 2)]
                if rng.random() < 0.3:
                    hits[-1] = (self.steps - 2, 1.7, fifth)
            elif style == "sixteenths":
                hits = [(i, 0.8, root) for i in range(self.steps) if i % 4 != 1 or rng.random() < 0.7]
            elif style == "follow_kick":
                marks = [i for i, m in enumerate((pattern.kick if pattern else "x")[: self.steps]) if m != "."] or [0]
                bounds = marks[1:] + [self.steps]
                hits = [(m, max(b - m, 1) * 0.95, root + (12 if rng.random() < 0.1 else 0)) for m, b in zip(marks, bounds)]
            elif style == "reggae":
                figure = [(0, 3, root), (3, 1, root), (6, 2, fifth), (10, 2, root + 12 if rng.random() < 0.3 else root),
                          (12, 2, third), (14, 2, fifth)]
                if rng.random() < 0.5:  # the dub drop: rest on the one
                    figure = figure[1:]
                hits = [h for h in figure if h[0] < self.steps]
            else:
                raise ConfigError(f"demo recipe: unknown bass style {style!r}")
            for step, length, midi in hits:
                notes.append(_Note(self.time(bar, step), length * step_s, midi, float(rng.uniform(0.75, 1.0))))
        return notes

    def comp_part(self, style: str) -> list[_Note]:
        rng, notes, step_s = self.rng, [], self.beat_s / 4.0
        center = int(rng.integers(55, 66))
        arp_grid = int(rng.choice([2, 2, 1]))
        skank = (2, 6, 10, 14) if rng.random() < 0.5 else (4, 12)  # every off-beat, or beats two and four
        for bar in range(self.n_bars):
            chord = self.chord(bar)
            voicing = self.voicing(chord, center)
            root = _place((self.key + chord.root) % 12, self.recipe.bass_low + 9)
            power = [root, root + 7, root + 12]

            def chord_at(step: float, length: float, tones: Sequence[int], velocity: float, strum: float = 0.0) -> None:
                start = self.time(bar, step)
                for k, midi in enumerate(tones):
                    notes.append(_Note(start + k * strum, length * step_s, midi, velocity * float(rng.uniform(0.85, 1.0))))

            if style == "pad":
                chord_at(0, self.steps, voicing, 0.7)
            elif style == "block":
                for beat in range(self.beats):
                    chord_at(4 * beat, 3.0, voicing, 0.8 if beat % 2 == 0 else 0.65)
            elif style == "arpeggio":
                grid = arp_grid
                tones = voicing + [voicing[0] + 12]
                for i, step in enumerate(range(0, self.steps, grid)):
                    notes.append(_Note(self.time(bar, step), grid * step_s * 1.8, tones[i % len(tones)], 0.6))
            elif style == "roll":  # banjo forward roll: sixteenths over the chord, an octave up
                tones = [v + 12 for v in voicing[:3]]
                for i in range(self.steps):
                    notes.append(_Note(self.time(bar, i), 1.5 * step_s, tones[(i % 8) % 3], 0.8 if i % 4 == 0 else 0.6))
            elif style == "alberti":
                tones = voicing[:3]
                order = (0, 2, 1, 2)
                for i, step in enumerate(range(0, self.steps, 2)):
                    notes.append(_Note(self.time(bar, step), 2.2 * step_s, tones[order[i % 4]], 0.55))
            elif style == "shuffle":
                for i in range(self.steps // 2):
                    sixth = 9 if i % 4 in (1, 2) else 7
                    chord_at(2 * i, 1.7, [root, root + sixth], 0.8 if i % 2 == 0 else 0.6, strum=0.004)
            elif style == "strum":
                for i, d in enumerate("D.DU.UDU"[: self.steps // 2]):
                    if d != ".":
                        tones = voicing if d == "D" else voicing[::-1]
                        chord_at(2 * i, 2.5, [voicing[0] - 12] + tones if d == "D" else tones, 0.8 if d == "D" else 0.55,
                                 strum=float(rng.uniform(0.006, 0.014)))
            elif style == "open8":  # full chords, third included
                third = 3 if chord.intervals[1] == 3 else 4
                for i in range(self.steps // 2):
                    chord_at(2 * i, 1.8, [root, root + 7, root + 12, root + 12 + third, root + 19], 0.85 if i % 2 == 0 else 0.7,
                             strum=0.004)
            elif style == "power8":
                for i in range(self.steps // 2):
                    chord_at(2 * i, 1.8, power, 0.85 if i % 2 == 0 else 0.75)
            elif style == "power_sustain":
                half = self.steps // 2
                chord_at(0, half * 0.98, power, 0.9)
                chord_at(half, half * 0.98, power, 0.85)
            elif style == "chug":
                for i in range(self.steps):
                    if i % 4 == 1 and rng.random() < 0.4:
                        continue
                    chord_at(i, 0.5, power[:2], 0.8)
            elif style == "skank":
                for step in skank:
                    if step < self.steps:
                        chord_at(step, 0.7, [v + 12 for v in voicing], 0.8, strum=0.003)
            elif style == "bubble":
                for i in range(self.steps // 2):
                    tones = voicing if i % 2 else voicing[:1]
                    chord_at(2 * i, 1.2, tones, 0.55 if i % 2 else 0.35)
            elif style == "charleston":
                rhythm = [(0, 3), (6, 2)] if rng.random() < 0.5 else [(float(rng.choice([2, 4, 6])), 2), (float(rng.choice([10, 12, 14])), 2)]
                ninth = [v for v in voicing] + ([voicing[0] + 14] if rng.random() < 0.5 else [])
                for step, length in rhythm:
                    if step < self.steps:
                        chord_at(step, length, ninth, float(rng.uniform(0.55, 0.85)))
            elif style == "stabs":
                chord_at(0, 1.5, [v + 12 for v in voicing], 0.8)
                chord_at(6, 1.0, [v + 12 for v in voicing], 0.65)
                chord_at(10, 4.0, [v + 12 for v in voicing], 0.7)
            elif style == "chops":
                for i in range(self.steps):
                    if i % 2 == 1 or rng.random() < 0.3:
                        chord_at(i, 0.4, [v + 12 for v in voicing[1:]], 0.5 + 0.3 * (i % 4 == 2))
            elif style == "loop":
                for step, length in ((0, 6), (6, 2), (8, 6), (14, 2))[: 4 if self.steps == 16 else 2]:
                    chord_at(step, length, voicing, 0.7)
            else:
                raise ConfigError(f"demo recipe: unknown comping style {style!r}")
        return notes

    def melody(self, instrument: str) -> list[_Note]:
        rng, r, notes = self.rng, self.recipe, []
        step_s = self.beat_s / 4.0
        grid = int(rng.choice(r.lead_grid))
        density = float(rng.uniform(*r.lead_density))
        rap = instrument == "rap"
        center = {"violin": 74, "fiddle": 72, "string_line": 76, "flute": 79, "harmonica": 70, "blues_guitar": 67,
                  "steel": 69, "twang": 67, "sax": 64, "trumpet": 70, "vibes": 72, "synth_lead": 72, "lead_guitar": 69,
                  "melodica": 72, "bell": 79, "voice": 64, "rap": 50}[instrument]
        pitches = [m for m in range(center - 12, center + 13) if (m - self.key) % 12 in self.scale]
        position = len(pitches) // 2
        bend_chance = {"blues_guitar": 0.35, "harmonica": 0.3, "steel": 0.5, "lead_guitar": 0.25, "twang": 0.2}.get(instrument, 0.0)
        legato = instrument in ("violin", "flute", "string_line", "voice", "sax", "steel", "melodica", "synth_lead")
        for bar in range(self.n_bars):
            if bar == 0 or self.phrase_position(bar) == 0:
                active = rng.random() < 0.85
            if not active:
                continue
            chord_pcs = self.pitch_classes(self.chord(bar))
            slots = list(range(0, self.steps, grid))
            for step in slots:
                if rng.random() > density:
                    continue
                if rap:
                    midi = center + float(rng.normal(0, 1.5)) - 2.0 * (step / self.steps)
                    length = grid * float(rng.uniform(0.6, 1.0))
                    notes.append(_Note(self.time(bar, step), max(length * step_s, 0.07), midi, float(rng.uniform(0.6, 1.0)),
                                       bend=float(rng.uniform(-1.5, 1.5)), vowel=str(rng.choice(list(_VOWELS)))))
                    continue
                position = int(np.clip(position + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, len(pitches) - 1))
                if step % 4 == 0 and rng.random() < 0.6:  # strong beats lean on chord tones
                    near = [i for i, m in enumerate(pitches) if m % 12 in chord_pcs]
                    if near:
                        position = min(near, key=lambda i: abs(i - position))
                length = grid * (float(rng.choice([1, 1, 2])) if legato else float(rng.uniform(0.5, 1.0)))
                bend = float(rng.choice([1.0, 2.0])) if rng.random() < bend_chance else 0.0
                notes.append(_Note(self.time(bar, step), length * step_s * (1.05 if legato else 1.0), pitches[position],
                                   float(rng.uniform(0.6, 1.0)), bend=bend, vowel=str(rng.choice(list(_VOWELS)))))
        return notes

    # mix ----------------------------------------------------------------------------------
    def render(self) -> np.ndarray:
        """Drums, bass, comping and melody, each balanced by RMS at its level, then mastered."""
        rng, r = self.rng, self.recipe
        u = lambda x: float(rng.uniform(*x))  # noqa: E731
        levels = [10.0 ** (u(x) / 20.0) for x in r.mix_db]
        drive = u(r.drive)
        pattern = r.drums[int(rng.integers(len(r.drums)))] if r.drums else None
        buses: list[tuple[np.ndarray, float]] = []

        if pattern is not None:
            buses.append((self.drums(pattern), levels[0]))

        bass_style, bass_instrument = r.bass[int(rng.integers(len(r.bass)))]
        bass_timbre = replace(_instrument(bass_instrument, rng), max_hz=u((400.0, 2000.0)))
        bass = self.render_notes(self.bass_line(bass_style, pattern), bass_timbre)
        if drive > 4.0:
            bass = _drive(bass, drive / 6.0)
        buses.append((bass, levels[1]))

        comp = np.zeros(self.length, dtype=np.float32)
        for style, instrument in r.comp[int(rng.integers(len(r.comp)))]:
            part = self.render_notes(self.comp_part(style), _instrument(instrument, rng))
            part = self._process(part, instrument, drive)
            if style == "pad" and r.pump[1] > 0:
                part = part * self._pump(u(r.pump))
            comp += part * np.float32(u((0.6, 1.0)) / max(_rms(part), 1e-9))
        buses.append((comp, levels[2]))

        lead_instrument = str(rng.choice(r.lead))
        if lead_instrument:
            lead = self.render_notes(self.melody(lead_instrument), _instrument(lead_instrument, rng))
            lead = self._process(lead, lead_instrument, drive)
            if _rms(lead) > 0:
                buses.append((lead, levels[3]))

        mix = np.zeros(self.length, dtype=np.float32)
        for bus, level in buses:
            mix += bus * np.float32(level / max(_rms(bus), 1e-9))
        return self._master(mix)

    def _pump(self, depth: float) -> np.ndarray:
        """Side-chain ducking: the level dips on every beat and recovers within it."""
        t = np.arange(self.length, dtype=np.float32) / np.float32(self.sr)
        since_beat = np.mod(t, np.float32(self.beat_s))
        return np.float32(1.0) - np.float32(depth) * np.exp(-since_beat / np.float32(0.25 * self.beat_s))

    def _process(self, part: np.ndarray, instrument: str, drive: float) -> np.ndarray:
        """Guitars through a soft-clipping amp and a cabinet low-pass."""
        if instrument in ("power_guitar", "lead_guitar"):
            amount = drive
        elif instrument in ("blues_guitar", "twang", "clean_guitar"):
            amount = min(drive, 4.0) * 0.5
        else:
            return part
        if amount <= 0:
            return part
        return _filtered(_drive(part, amount), "lowpass", float(self.rng.uniform(3500, 6500)), self.sr)

    def _master(self, mix: np.ndarray) -> np.ndarray:
        """Reverb + tone (one FFT), slow level swells, soft-clip "bus compression", excerpt, peak level."""
        rng, r, sr = self.rng, self.recipe, self.sr
        u = lambda x: float(rng.uniform(*x))  # noqa: E731
        wet, room = u(r.reverb), u(r.room_s)
        room_n = int(room * sr)
        start = int(self.offset * sr)
        first = max(0, start - room_n)  # the reverb needs the music just before the excerpt
        excerpt = mix[first : start + self.n_out].copy()
        if "vinyl" in r.extras and rng.random() < 0.5:
            excerpt += self._vinyl(len(excerpt), u((0.01, 0.04)))
        size = sp_fft.next_fast_len(len(excerpt) + room_n, real=True)
        freqs = np.fft.rfftfreq(size, 1.0 / sr).astype(np.float32)
        cutoff = np.float32(u(r.brightness_hz))
        response = (1.0 / np.sqrt(1.0 + (freqs / cutoff) ** 4)) * (1.0 / np.sqrt(1.0 + (30.0 / np.maximum(freqs, 1.0)) ** 4))
        response = response.astype(np.complex64)
        if wet > 0:
            tail = _filtered(_noise(rng, room_n), "lowpass", u((3000.0, 7000.0)), sr) * _decay(room_n, room / 6.9, sr)
            tail *= np.float32(wet / max(math.sqrt(float(np.dot(tail, tail))), 1e-9))
            tail[0] += 1.0  # the dry signal
            response *= sp_fft.rfft(tail, size)
        out = sp_fft.irfft(sp_fft.rfft(excerpt, size) * response, size)[start - first : start - first + self.n_out]
        out = out.astype(np.float32)
        swell_db = u(r.swell_db)
        if swell_db > 0:
            t = (np.arange(len(out), dtype=np.float32) + np.float32(start)) / np.float32(sr)
            swing = np.sin(np.float32(2 * np.pi / u((8.0, 24.0))) * t + np.float32(u((0, 2 * np.pi))))
            out *= np.power(np.float32(10.0), np.float32(swell_db / 40.0) * swing)
        # "bus compression": soft clip relative to the excerpt's own RMS, so that crest factors vary
        out = np.tanh(out * np.float32(u(r.master_drive) * 0.25 / max(_rms(out), 1e-9)))
        return (out * np.float32(u((0.3, 0.9)) / max(float(np.abs(out).max()), 1e-9))).astype(np.float32)

    def _vinyl(self, n: int, level: float) -> np.ndarray:
        """Hiss and crackle (the master's low-pass shapes the hiss)."""
        rng = self.rng
        noise = _noise(rng, n) * np.float32(0.15)
        positions = rng.integers(0, n, size=int(n / self.sr * 8))
        noise[positions] += rng.uniform(-1, 1, size=len(positions)).astype(np.float32)
        return noise * np.float32(level)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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
