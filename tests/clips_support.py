"""Real-looking test clips for the front-end and export parity tests: music, noise, silence, clipping."""

from __future__ import annotations

import numpy as np

from genretag.data.demo import synthesize_track

KINDS = ("music-rock", "music-jazz", "noise", "silence", "clipping")


def real_looking_clips(*, sample_rate: int, samples: int) -> np.ndarray:
    """float32 (5, samples): two synthetic music clips, white noise, silence, a hard-clipped loud sine."""
    t = np.arange(samples) / sample_rate
    music = [synthesize_track(g, index=0, seed=3, sample_rate=sample_rate, duration_s=samples / sample_rate) for g in ("rock", "jazz")]
    noise = np.random.default_rng(5).standard_normal(samples) * 0.3
    clipping = np.clip(3.0 * np.sin(2 * np.pi * 110.0 * t), -1.0, 1.0)
    return np.stack([*[m[:samples] for m in music], noise, np.zeros(samples), clipping]).astype(np.float32)
