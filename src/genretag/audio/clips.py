"""The one way genretag cuts fixed-length clips out of a decoded track.

Policy (every path: training splits, parity and calibration clips, evaluation, the registry's gate, the
tagger's windows): clip ``i`` is ``waveform[starts[i] : starts[i] + clip_samples]``. A clip must lie inside
its track; it may lack at most :data:`END_SLACK_SAMPLES` samples at the track's end, which are
zero-padded, because clips.csv is cut at the ingest rate and a track resampled to a model's rate may
end up to one sample shorter than the rounded window needs. A clip that lacks more, or starts before
the track, is an :class:`~genretag.core.errors.AudioError`: clips.csv no longer matches the audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genretag.core.errors import AudioError

END_SLACK_SAMPLES = 1  # zero-padded at a track's end: the rounding of start_s * rate and of the resampled length


def start_samples(starts_s: Sequence[float] | np.ndarray, *, sample_rate: int) -> np.ndarray:
    """Clip starts in seconds -> int64 sample indices at ``sample_rate`` Hz: ``round(start_s * sample_rate)``
    (round half to even, as Python's ``round``)."""
    return np.rint(np.asarray(starts_s, dtype=np.float64) * sample_rate).astype(np.int64)


def cut_clips(waveform: np.ndarray, *, starts: Sequence[int] | np.ndarray, clip_samples: int, source: str | Path) -> np.ndarray:
    """Clips of one mono track: float32 [len(starts), clip_samples], clip i from sample ``starts[i]``.

    ``waveform``: float [n] at the rate ``starts`` count in; ``source`` names the track in errors.
    Raises AudioError naming ``source`` for a start below 0 or a clip that runs more than
    :data:`END_SLACK_SAMPLES` past the track's end (the module's policy).
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    out = np.zeros((len(starts), clip_samples), dtype=np.float32)
    for row, start in enumerate(starts):
        window = waveform[max(start, 0) : start + clip_samples]
        if start < 0 or len(window) < clip_samples - END_SLACK_SAMPLES:
            raise AudioError(source, f"{len(waveform)} samples, too short for a clip of {clip_samples} samples at sample {start}")
        out[row, : len(window)] = window
    return out
