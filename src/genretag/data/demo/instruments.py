"""Oscillators and instruments of the demo corpus: band-limited wavetables, two-operator FM, the
note-level :class:`Timbre` of every instrument a recipe names (:func:`_instrument`, with each track's
own variation), vowel formants, envelopes, and :func:`_render_note`, one note as float32 samples.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import signal

from genretag.core.errors import ConfigError
from genretag.data.demo.drums import _decay

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
