"""Decode only the windows scoring needs by seeking: the windows of one file as mono float32 at the
pipeline's sample rate, with the cost following the windows rather than the track's length (soundfile
``seek``/``read``, PyAV ``container.seek``), or the whole file through :mod:`genretag.audio.decoding`
when a seek saves nothing or cannot be exact."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from genretag.audio.decoding import check_rate, decode, regular_file, resample, to_finite, to_mono
from genretag.core.errors import AudioError
from genretag.dsp.spectrogram import window_starts

log = logging.getLogger(__name__)

# Frames read on each side of a window, per unit of down-sampling ratio (ceil(original / target
# rate), at least 1), so that soxr's HQ filter sees the same neighbours as when the whole file is
# resampled. Measured here (44.1/48/96/8 kHz into 22.05/16 kHz, white noise): 1,024 frames give
# the whole-file samples to float rounding (<= 4e-7), 256 do not at 96 kHz (2e-4); twice 1,024 is used.
RESAMPLER_MARGIN_FRAMES = 2048
# FFmpeg seeks: decoding starts this long before a range, so that codecs with overlapped transforms
# (AAC, Vorbis) or a pre-roll (Opus: 80 ms, RFC 7845 section 4.6) have rebuilt their state by then.
FFMPEG_PREROLL_S = 0.5
# When the windows' ranges would cover this share of a file or more, one pass over the whole file
# is read instead of seeking (seeks then save nothing).
WHOLE_FILE_SHARE = 0.5


@dataclass(frozen=True)
class DecodedWindows:
    """The windows of one file that scoring needs: mono float32 [n, clip_samples] at ``sample_rate``.

    ``starts`` int64 [n] are the windows' first samples in the whole track at ``sample_rate``, the
    offsets :func:`decode` then ``genretag.dsp.spectrogram.window_starts`` give (those picked, in the
    pick's order); ``window_count`` is how many windows the track has in all (n without a pick). ``frames_read`` counts
    the frames (at ``original_sample_rate``) that were decoded: the windows plus resampler margins
    when ``seeked``, the whole file otherwise. ``nonfinite_samples`` counts NaN/inf among those.
    """

    path: Path
    windows: np.ndarray
    starts: np.ndarray
    sample_rate: int
    original_sample_rate: int
    channels: int
    track_samples: int  # the whole track's length at sample_rate (from the header when seeked)
    frames_read: int
    track_frames: int  # the whole track's length at original_sample_rate
    nonfinite_samples: int
    seeked: bool
    window_count: int = 0  # the track's windows in all, picked or not

    @property
    def duration_s(self) -> float:
        return self.track_samples / self.sample_rate


class _CannotSeek(Exception):
    """This file's windows cannot be read exactly by seeking: read the whole file instead."""


@dataclass(frozen=True)
class _Seekable:
    """An open file that reads any frame range: float32 (frames, channels), fewer at its end."""

    rate: int
    channels: int
    frames: int  # from the header (soundfile) or the stream's duration (FFmpeg)
    read: Callable[[int, int], np.ndarray]


def _soundfile_range(handle: sf.SoundFile, start: int, stop: int) -> np.ndarray:
    handle.seek(start)
    return handle.read(stop - start, dtype="float32", always_2d=True)


def _ffmpeg_range(container: Any, stream: Any, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of ``stream``, decoded from a seek ``FFMPEG_PREROLL_S`` earlier.

    A frame's position is (pts - the stream's start time) x time base x rate, which is how the
    whole-file decode numbers its samples; _CannotSeek when it is not a whole sample or lands
    after ``start``.
    """
    import av

    rate, origin, time_base = stream.rate, stream.start_time or 0, stream.time_base
    seek_frame = max(0, start - int(FFMPEG_PREROLL_S * rate))
    container.seek(origin + int(Fraction(seek_frame, rate) / time_base), stream=stream, backward=True)
    resampler = av.AudioResampler(format="fltp", rate=rate)
    blocks: list[np.ndarray] = []
    first = position = -1
    for frame in container.decode(stream):
        if frame.pts is None:
            raise _CannotSeek("a frame without a timestamp")
        at = (frame.pts - origin) * time_base * rate
        if at.denominator != 1:
            raise _CannotSeek("a timestamp between samples")
        if first < 0:
            first = position = int(at)
            if first > start:
                raise _CannotSeek("the seek landed after the range")
        for out in resampler.resample(frame):
            blocks.append(out.to_ndarray())
            position += blocks[-1].shape[1]
        if position >= stop:
            break
    if first < 0:
        return np.zeros((0, stream.channels), dtype=np.float32)
    data = np.concatenate(blocks, axis=1).T
    return np.ascontiguousarray(data[start - first : stop - first], dtype=np.float32)


@contextmanager
def _ffmpeg_seekable(path: Path) -> Iterator[_Seekable | None]:
    """PyAV when every timestamp of the first audio stream is a whole sample and its duration is known; else None."""
    import av

    try:
        container = av.open(str(path), mode="r")
    except Exception:  # noqa: BLE001 - the whole-file read reports why, in its one line
        yield None
        return
    with container:
        stream = container.streams.audio[0] if container.streams.audio else None
        if stream is None or not stream.rate or stream.time_base is None:
            yield None
            return
        rate = check_rate(path, stream.rate)
        exact = stream.time_base.numerator == 1 and stream.time_base.denominator % rate == 0
        if stream.duration:
            frames = int(stream.duration * stream.time_base * rate)
        else:
            frames = int((container.duration or 0) * rate // 1_000_000)
        if not exact or frames <= 0:
            yield None
            return
        yield _Seekable(rate, stream.channels, frames, partial(_ffmpeg_range, container, stream))


@contextmanager
def _seekable(path: Path) -> Iterator[_Seekable | None]:
    """soundfile when it opens the file and knows its frames, else FFmpeg (see _ffmpeg_seekable)."""
    try:
        handle = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        handle = None
    if handle is not None:
        with handle:
            rate = check_rate(path, handle.samplerate)
            if handle.frames > 0 and handle.seekable():
                yield _Seekable(rate, handle.channels, handle.frames, partial(_soundfile_range, handle))
                return
    with _ffmpeg_seekable(path) as source:
        yield source


def _frame_ranges(starts: np.ndarray, *, clip_samples: int, sample_rate: int, original_rate: int, frames: int) -> list[tuple[int, int]]:
    """Input frame ranges [a, b) covering each window at ``sample_rate`` plus the resampler's margins.

    Every ``a`` is a multiple of original_rate / gcd, the input frames that map onto a whole output
    sample, so a range resampled alone lands on the whole file's output grid. Overlapping ranges merge.
    """
    step = original_rate // math.gcd(original_rate, sample_rate)
    margin = 0 if original_rate == sample_rate else RESAMPLER_MARGIN_FRAMES * max(1, -(-original_rate // sample_rate))
    ranges: list[tuple[int, int]] = []
    for start in starts.tolist():
        low = max(0, start * original_rate // sample_rate - margin) // step * step
        high = min(frames, -(-(start + clip_samples) * original_rate // sample_rate) + margin)
        if ranges and low <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], high)
        else:
            ranges.append((low, high))
    return ranges


def _picked(starts: np.ndarray, pick: Callable[[int], np.ndarray] | None) -> np.ndarray:
    """The indices into ``starts`` that ``pick`` chooses (all, in order, without one); ValueError when one is out of range or repeated."""
    if pick is None:
        return np.arange(len(starts), dtype=np.int64)
    chosen = np.asarray(pick(len(starts)), dtype=np.int64)
    if len(np.unique(chosen)) != len(chosen) or (len(chosen) and (chosen.min() < 0 or chosen.max() >= len(starts))):
        raise ValueError(f"pick chose {chosen.tolist()} of {len(starts)} windows")
    return chosen


def _seek_windows(
    path: Path, source: _Seekable, *, sample_rate: int, clip_samples: int, max_windows: int, pick: Callable[[int], np.ndarray] | None,
) -> DecodedWindows:
    """Decode and resample only the picked windows' ranges (_frame_ranges); _CannotSeek when that is not worth it or not exact."""
    original_rate = source.rate
    track_samples = -(-source.frames * sample_rate // original_rate)  # resample()'s length for the whole file
    every = window_starts(track_samples, clip_samples=clip_samples, max_windows=max_windows, evenly_spaced=True)
    chosen = _picked(every, pick)
    starts = np.sort(every[chosen])  # in time order for the ranges; back in the pick's order at the end
    ranges = _frame_ranges(starts, clip_samples=clip_samples, sample_rate=sample_rate, original_rate=original_rate, frames=source.frames)
    if not len(every) or sum(b - a for a, b in ranges) >= WHOLE_FILE_SHARE * source.frames:
        raise _CannotSeek("the windows cover most of the file")
    gcd = math.gcd(original_rate, sample_rate)
    windows, nonfinite, frames_read, pending = [], 0, 0, starts.tolist()
    for low, high in ranges:
        data = source.read(low, high)
        frames_read += len(data)
        if len(data) < high - low and high < source.frames:
            raise _CannotSeek("a range came back short")
        mono = to_mono(data)
        nonfinite += int(np.count_nonzero(~np.isfinite(mono)))
        resampled = mono if original_rate == sample_rate else resample(to_finite(mono), orig_sr=original_rate, target_sr=sample_rate)
        offset = low // (original_rate // gcd) * (sample_rate // gcd)  # this range's first output sample
        while pending and pending[0] + clip_samples <= offset + len(resampled):
            at = pending.pop(0) - offset
            windows.append(resampled[at : at + clip_samples])
    if pending:
        raise _CannotSeek("the file ended before its last window")
    in_pick_order = np.argsort(np.argsort(every[chosen], kind="stable"), kind="stable")  # time rank of each picked window
    stacked = np.stack(windows).astype(np.float32, copy=False) if windows else np.empty((0, clip_samples), np.float32)
    return DecodedWindows(
        path=path, windows=stacked[in_pick_order], starts=starts[in_pick_order], sample_rate=sample_rate,
        original_sample_rate=original_rate, channels=source.channels, track_samples=track_samples, frames_read=frames_read,
        track_frames=source.frames, nonfinite_samples=nonfinite, seeked=True, window_count=len(every),
    )


def decode_windows(
    path: str | Path, *, sample_rate: int, clip_samples: int, max_windows: int = 0, pick: Callable[[int], np.ndarray] | None = None,
) -> DecodedWindows:
    """Decode only the windows scoring needs: mono float32 [n, clip_samples] at ``sample_rate`` Hz.

    The windows are ``window_starts(..., max_windows=max_windows, evenly_spaced=True)`` of the whole
    track; with ``pick`` (the track's window count -> int64 indices, e.g. the next round of early
    exit) only those are decoded, in that order (``window_count`` says how many there are in all). When they cover less than WHOLE_FILE_SHARE of the file, the decoder seeks to each one
    (soundfile ``seek``/``read``; PyAV ``container.seek`` + decode for what libsndfile does not read,
    when its timestamps are sample-exact) and resamples it with RESAMPLER_MARGIN_FRAMES on each side:
    the cost follows the windows, not the track's length, and the samples equal :func:`decode` then
    cutting to float rounding (tests/data/test_seek_decoding.py states the tolerance). Otherwise,
    or when a seek cannot be exact (coarse timestamps, a header whose length is wrong), the whole
    file is decoded with :func:`decode`. A track shorter than one window gives n = 0.
    Raises AudioError as :func:`decode` does.
    """
    path = regular_file(path)
    with _seekable(path) as source:
        if source is not None:
            try:
                decoded = _seek_windows(path, source, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows, pick=pick)
                _log_windows(decoded)
                return decoded
            except AudioError:
                raise
            except Exception:  # noqa: BLE001 - _CannotSeek, or a fault mid-file (libsndfile's or FFmpeg's many
                pass  # error types): the whole-file read below decodes it or names the fault in one line
    whole = decode(path, sample_rate=sample_rate)
    every = window_starts(len(whole.waveform), clip_samples=clip_samples, max_windows=max_windows, evenly_spaced=True)
    starts = every[_picked(every, pick)]
    windows = np.stack([whole.waveform[s : s + clip_samples] for s in starts]) if len(starts) else np.empty((0, clip_samples), np.float32)
    frames = round(whole.stats.duration_s * whole.original_sample_rate)
    decoded = DecodedWindows(
        path=path, windows=windows, starts=starts, sample_rate=sample_rate, original_sample_rate=whole.original_sample_rate,
        channels=whole.channels, track_samples=len(whole.waveform), frames_read=frames, track_frames=frames,
        nonfinite_samples=whole.stats.nonfinite_samples, seeked=False, window_count=len(every),
    )
    _log_windows(decoded)
    return decoded


def _log_windows(decoded: DecodedWindows) -> None:
    log.debug("decoded %d of %d windows of %s (%d of %d frames, %s)", len(decoded.starts), decoded.window_count, decoded.path,
              decoded.frames_read, decoded.track_frames, "seeked" if decoded.seeked else "whole file")
