"""A track's scored windows: cut (or decoded) at the model's rate into 3-s windows, silent ones dropped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from genretag.audio.clips import cut_clips
from genretag.audio.decoding import is_silent
from genretag.audio.seeking import decode_windows
from genretag.core.errors import AudioError
from genretag.core.processes import captured_stderr
from genretag.dsp.spectrogram import window_starts
from genretag.evaluation.drift import InputStats, window_loudness
from genretag.tagging.early_exit import spread_order


@dataclass(frozen=True)
class TrackWindows:
    """The windows of one track that the model scores: float32 [n, S], how many were silent, where
    the scored ones start, and the track's input statistics for drift (None when cut from a
    waveform, not decoded from a file). Decoded round by round (:func:`track_windows` with
    ``first``), the windows are in scoring order and ``pending`` lists those not decoded yet."""

    waveforms: np.ndarray
    silent: int = 0
    starts: np.ndarray | None = None  # int64 [n]: each scored window's first sample in the track (None: unknown)
    audio: InputStats | None = None
    decoder_messages: tuple[str, ...] = ()  # what the C decoders wrote to stderr while reading the file
    pending: np.ndarray | None = None  # int64: the track's window indices still to decode, in scoring order (None: none)

    @property
    def available(self) -> int:
        """The windows this track can score: those decoded and not silent, plus those not decoded yet."""
        return len(self.waveforms) + (0 if self.pending is None else len(self.pending))


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
    first: int = 0,
) -> TrackWindows:
    """Decode the windows of any audio file at ``sample_rate`` Hz (the model's); drop the silent ones.

    Only the windows are decoded (``genretag.audio.seeking.decode_windows``: seeks, so the cost follows
    ``max_windows``, not the track's length); they equal :func:`cut_windows` of the whole decoded
    track. With ``first`` > 0 only the first ``first`` windows in :func:`genretag.tagging.early_exit.spread_order`
    are decoded (more rounds of ``first`` while all of them are silent), in that order; the rest are
    ``pending`` for :func:`more_windows`, and the input statistics are those of the windows decoded.
    Raises AudioError naming the file when it is unreadable, empty, holds non-finite samples
    in the frames read, is shorter than one window, or every window is silent.
    """
    order = None if first <= 0 else spread_order
    decoded = decode_windows(path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows,
                             pick=None if order is None else lambda count: order(count)[:first])
    _check_finite(path, decoded.nonfinite_samples)
    if decoded.track_samples < clip_samples:
        raise AudioError(path, f"too short: {decoded.duration_s:.2f} s is less than one {clip_samples / sample_rate:g}-s window")
    windows = drop_silent(decoded.windows, starts=decoded.starts, silence_rms_dbfs=silence_rms_dbfs)
    if order is not None:
        windows = dataclasses.replace(windows, pending=spread_order(decoded.window_count)[len(decoded.starts):])
        while len(windows.waveforms) == 0 and len(windows.pending):
            windows = more_windows(path, windows, count=first, sample_rate=sample_rate, clip_samples=clip_samples,
                                   max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs)
    if len(windows.waveforms) == 0:
        raise AudioError(path, f"silent: all {windows.silent} windows are all-zero or below {silence_rms_dbfs:.1f} dBFS RMS")
    audio = InputStats(source_sample_rate=decoded.original_sample_rate, duration_s=round(decoded.duration_s, 3),
                       loudness_dbfs=window_loudness(windows.waveforms))
    return dataclasses.replace(windows, audio=audio)


def _check_finite(path: str | Path, nonfinite: int) -> None:
    if nonfinite > 0:
        raise AudioError(path, f"{nonfinite} non-finite samples (NaN or infinity)")


def _take(indices: np.ndarray, count: int) -> np.ndarray:
    return indices


def more_windows(
    path: str | Path, windows: TrackWindows, *, count: int, sample_rate: int, clip_samples: int, max_windows: int = 0,
    silence_rms_dbfs: float = -60.0,
) -> TrackWindows:
    """``windows`` (from :func:`track_windows` with ``first``) with the next ``count`` of its ``pending`` windows
    decoded (seeking to them) and appended, the silent ones dropped and counted. AudioError as :func:`track_windows`,
    or when the file no longer has the windows it had."""
    pending = np.zeros(0, np.int64) if windows.pending is None else windows.pending
    if not len(pending):
        return windows
    try:
        decoded = decode_windows(path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows,
                                 pick=partial(_take, pending[:count]))
    except ValueError as exc:  # the pick is out of range: the file changed since its first round
        raise AudioError(path, f"changed while it was scored: {exc}") from exc
    _check_finite(path, decoded.nonfinite_samples)
    more = drop_silent(decoded.windows, starts=decoded.starts, silence_rms_dbfs=silence_rms_dbfs)
    starts = None if windows.starts is None else np.concatenate([windows.starts, more.starts])
    return dataclasses.replace(windows, waveforms=np.concatenate([windows.waveforms, more.waveforms]), starts=starts,
                               silent=windows.silent + more.silent, pending=pending[count:])


def windows_or_reason(
    *, path: str, sample_rate: int, clip_samples: int, max_windows: int, silence_rms_dbfs: float, first: int = 0,
) -> tuple[TrackWindows | None, str]:
    """Worker entry (a process or a Dask task): the track's windows (``first``: the first round, see
    :func:`track_windows`), or why it cannot be scored (never raises).

    What the C decoders print on stderr meanwhile (libmpg123's "Giving up searching valid MPEG header")
    is captured (genretag.core.processes.captured_stderr): appended to the reason of a failure as
    ``(decoder said: ...)``, kept in ``TrackWindows.decoder_messages`` of a success.
    """
    windows, reason = None, ""
    with captured_stderr() as said:
        try:
            windows = track_windows(
                path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows, silence_rms_dbfs=silence_rms_dbfs,
                first=first,
            )
        except AudioError as exc:
            reason = exc.reason
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop a catalog run
            reason = f"cannot process: {type(exc).__name__}: {exc}"
    if windows is None:
        return None, f"{reason} (decoder said: {'; '.join(said)})" if said else reason
    return (dataclasses.replace(windows, decoder_messages=tuple(said)) if said else windows), ""
