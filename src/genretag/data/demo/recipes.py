"""The demo corpus's genre recipes and the little music theory they need.

Chord qualities, scales and roman-numeral progressions (:class:`Chord`, :func:`parse_progression`),
the drum pattern of one bar (:class:`DrumPattern`), how one synthetic genre is made
(:class:`GenreRecipe`) and the table of the ten recipes, :data:`GENRE_RECIPES`. Plain data: nothing
here makes a sound (``genretag.data.demo.arrangement`` turns a recipe into a track).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from genretag.core.errors import ConfigError

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
