"""A track's scored windows: cut (or decoded) at the model's rate into 3-s windows, silent ones dropped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genretag.audio.clips import cut_clips
from genretag.audio.decoding import decode_windows, is_silent
from genretag.core.errors import AudioError
from genretag.core.processes import captured_stderr
from genretag.dsp.spectrogram import window_starts
from genretag.evaluation.drift import InputStats, window_loudness


@dataclass(frozen=True)
class TrackWindows:
    """The windows of one track that the model scores: float32 [n, S], how many were silent, where
    the scored ones start, and the track's input statistics for drift (None when cut from a
    waveform, not decoded from a file)."""

    waveforms: np.ndarray
    silent: int = 0
    starts: np.ndarray | None = None  # int64 [n]: each scored window's first sample in the track (None: unknown)
    audio: InputStats | None = None
    decoder_messages: tuple[str, ...] = ()  # what the C decoders wrote to stderr while reading the file


def drop_silent(windows: np.ndarray, *, starts: np.ndarray | None = None, silence_rms_dbfs: float = -60.0) -> TrackWindows:
    """Windows float32 [n, S] without the silent ones (:func:`is_silent`), which are counted;
    ``starts`` (int64 [n] first samples) keeps those of the windows kept."""
    keep = [not is_silent(window, silence_rms_dbfs=silence_rms_dbfs) for window in windows]
    kept = [window for window, wanted in zip(windows, keep, strict=True) if wanted]
    stacked = np.stack(kept) if kept else np.empty((0, windows.shape[1]), dtype=np.float32)
    kept_starts = None if starts is None else np.asarray(starts, dtype=np.int64)[np.asarray(keep, dtype=bool)]
    return TrackWindows(waveforms=stacked, silent=len(windows) - len(kept), starts=kept_starts)


def window_seconds(windows: TrackWindows, *, sample_rate: int) -> tuple[float, ...]:
    """The scored windows' starts in seconds (``starts`` / ``sample_rate`` Hz, 3 decimals); () when unknown."""
    return () if windows.starts is None else tuple(round(int(s) / sample_rate, 3) for s in windows.starts)


def cut_windows(waveform: np.ndarray, *, clip_samples: int, max_windows: int = 0, silence_rms_dbfs: float = -60.0) -> TrackWindows:
    """Cut a mono waveform into whole, non-overlapping windows of ``clip_samples``; drop the silent ones.

    The windows are ``genretag.spectrogram.window_starts`` with ``evenly_spaced=True`` (at most
    ``max_windows``, spread over the track; 0: all); silent ones (:func:`is_silent`) are then
    skipped and counted, so a track may score fewer than ``max_windows``. The windows are cut by
    :func:`genretag.audio.clips.cut_clips` (every start lies a whole window inside the track).
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    starts = window_starts(len(waveform), clip_samples=clip_samples, max_windows=max_windows, evenly_spaced=True)
    windows = cut_clips(waveform, starts=starts, clip_samples=clip_samples, source="waveform")
    return drop_silent(windows, starts=starts, silence_rms_dbfs=silence_rms_dbfs)


def track_windows(
    path: str | Path,
    *,
    sample_rate: int,
    clip_samples: int,
    max_windows: int = 0,
    silence_rms_dbfs: float = -60.0,
) -> TrackWindows:
    """Decode the windows of any audio file at ``sample_rate`` Hz (the model's); drop the silent ones.

    Only the windows are decoded (``genretag.audio.decode_windows``: seeks, so the cost follows
    ``max_windows``, not the track's length); they equal :func:`cut_windows` of the whole decoded
    track. Raises AudioError naming the file when it is unreadable, empty, holds non-finite samples
    in the frames read, is shorter than one window, or every window is silent.
    """
    decoded = decode_windows(path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows)
    if decoded.nonfinite_samples > 0:
        raise AudioError(path, f"{decoded.nonfinite_samples} non-finite samples (NaN or infinity)")
    if decoded.track_samples < clip_samples:
        raise AudioError(path, f"too short: {decoded.duration_s:.2f} s is less than one {clip_samples / sample_rate:g}-s window")
    windows = drop_silent(decoded.windows, starts=decoded.starts, silence_rms_dbfs=silence_rms_dbfs)
    if len(windows.waveforms) == 0:
        raise AudioError(path, f"silent: all {windows.silent} windows are all-zero or below {silence_rms_dbfs:.1f} dBFS RMS")
    audio = InputStats(source_sample_rate=decoded.original_sample_rate, duration_s=round(decoded.duration_s, 3),
                       loudness_dbfs=window_loudness(windows.waveforms))
    return dataclasses.replace(windows, audio=audio)


def windows_or_reason(
    *, path: str, sample_rate: int, clip_samples: int, max_windows: int, silence_rms_dbfs: float
) -> tuple[TrackWindows | None, str]:
    """Worker entry (a process or a Dask task): the track's windows, or why it cannot be scored (never raises).

    What the C decoders print on stderr meanwhile (libmpg123's "Giving up searching valid MPEG header")
    is captured (genretag.core.processes.captured_stderr): appended to the reason of a failure as
    ``(decoder said: ...)``, kept in ``TrackWindows.decoder_messages`` of a success.
    """
    windows, reason = None, ""
    with captured_stderr() as said:
        try:
            windows = track_windows(
                path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs
            )
        except AudioError as exc:
            reason = exc.reason
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop a catalog run
            reason = f"cannot process: {type(exc).__name__}: {exc}"
    if windows is None:
        return None, f"{reason} (decoder said: {'; '.join(said)})" if said else reason
    return (dataclasses.replace(windows, decoder_messages=tuple(said)) if said else windows), ""
