"""Percussion of the demo corpus: one track's synthesised drum kit (:func:`_kit`: kick, snare, hats,
ride, crash, clap, rim, brush) and the noise, filter and decay helpers it is made of.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal

#: The gain of each :class:`~genretag.data.demo.recipes.DrumPattern` mark (X accent, x hit, g ghost, r maybe-ghost).
_HIT = {"X": 1.0, "x": 0.75, "g": 0.3, "r": 0.3}


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
