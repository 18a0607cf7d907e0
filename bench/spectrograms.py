"""The paper's mel images vs genretag's numpy reference, on the same clips, in one run.

The paper's method: librosa mel spectrogram -> `librosa.display.specshow` -> matplotlib
`savefig` at 432x288 px -> crop the white border -> PIL resize to 128x128 -> PNG.
Ours: `genretag.spectrogram.waveform_to_images` in memory: what the paper-expN and compact
families compute for every random crop at every epoch (and what their ONNX graphs compute at
scoring time, checked by the parity gate). No PNG is written: nothing reads one. It runs in one
process, then on every core (one track per task, a process pool): training renders in its own
process because the CNN, not the spectrogram, bounds an epoch; the pool row shows that the
reference scales to the machine when a job needs it (e.g. rendering a whole corpus).

    python bench/spectrograms.py [--tracks 60] [--paper-clips 100] [--size 128] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

import genretag  # noqa: F401
from genretag.audio import decoding as audio
from genretag.data.demo import synthesize_corpus
from genretag.dsp.spectrogram import PreprocessingSpec, waveform_to_images


def paper_method(clip: np.ndarray, spec: PreprocessingSpec, out: Path) -> None:
    import librosa
    import librosa.display
    import matplotlib.pyplot as plt
    from PIL import Image

    mel = librosa.feature.melspectrogram(y=clip, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length, n_mels=spec.n_mels)
    db = librosa.power_to_db(mel, ref=np.max, top_db=spec.top_db)
    fig = plt.figure(figsize=(4.32, 2.88), dpi=100)  # 432 x 288 px
    librosa.display.specshow(db, sr=spec.sample_rate, hop_length=spec.hop_length, cmap=spec.colormap)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    rgb = np.asarray(Image.open(buffer).convert("RGB"))
    inside = np.argwhere(rgb.min(axis=2) < 250)  # crop the white border
    (top, left), (bottom, right) = inside.min(axis=0), inside.max(axis=0) + 1
    Image.fromarray(rgb[top:bottom, left:right]).resize(spec.image_size[::-1]).save(out)


def render_track(path: Path, spec: PreprocessingSpec) -> int:
    """Images rendered from one track's clips (the reference, in memory): a pool task."""
    return len(waveform_to_images(audio.load_wav(path, sample_rate=spec.sample_rate), spec))


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=60, help="30-s synthetic tracks (10 clips each) for ours")
    parser.add_argument("--paper-clips", type=int, default=100, help="clips rendered with the paper's (slow) method")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (the paper: 128)")
    parser.add_argument("--workers", type=int, default=0, help="processes for the every-core row; 0: every core")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    spec = PreprocessingSpec(image_size=(args.size, args.size))
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or cores
    load_before = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        genres = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
        files = synthesize_corpus(root / "audio", genres=genres, tracks_per_genre=max(1, args.tracks // 10), seed=7)
        n_paper_tracks = max(1, args.paper_clips // 10)
        rows = []

        warm = audio.load_wav(files[0], sample_rate=spec.sample_rate)[: spec.clip_samples]
        paper_method(warm, spec, root / "paper-warm-up.png")  # librosa/matplotlib imports are not the method's cost
        start, cpu = time.perf_counter(), cpu_seconds()
        for f in files[:n_paper_tracks]:
            y = audio.load_wav(f, sample_rate=spec.sample_rate)
            for i in range(10):
                paper_method(y[i * spec.clip_samples:(i + 1) * spec.clip_samples], spec, root / f"paper-{f.stem}.{i}.png")
        paper_seconds, paper_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        paper_rate = n_paper_tracks * 10 / paper_seconds
        rows.append(("paper (specshow + savefig + crop + resize)", 1, n_paper_tracks * 10, paper_seconds, paper_rate,
                     n_paper_tracks * 10 / paper_cpu))

        for label, subset in (("same clips", files[:n_paper_tracks]), ("all clips", files)):
            start, cpu = time.perf_counter(), cpu_seconds()
            rendered = sum(render_track(f, spec) for f in subset)
            seconds, used = time.perf_counter() - start, cpu_seconds() - cpu
            rows.append((f"genretag numpy reference ({label})", 1, rendered, seconds, rendered / seconds, rendered / used))
        start, cpu = time.perf_counter(), cpu_seconds()
        with ProcessPoolExecutor(max_workers=workers) as pool:  # start-up and imports are part of the cost
            rendered = sum(pool.map(partial(render_track, spec=spec), files))
        seconds, used = time.perf_counter() - start, cpu_seconds() - cpu
        rows.append(("genretag numpy reference (all clips, pool)", workers, rendered, seconds, rendered / seconds,
                     rendered / used))

    print(f"\nmachine: {platform.node()} {platform.machine()}, {cores} cores; image {args.size}x{args.size}; synthetic demo audio")
    print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.2f} (other work on the machine slows every row)")
    paper_per_cpu = rows[0][5]
    print(f"{'method':46} {'workers':>7} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'vs paper':>8} {'clips/CPU-s':>11} {'vs paper':>8}")
    for name, workers, clips, seconds, rate, per_cpu in rows:
        print(f"{name:46} {workers:>7} {clips:>6} {seconds:>8.2f} {rate:>8.1f} {rate / paper_rate:>7.1f}x"
              f" {per_cpu:>11.1f} {per_cpu / paper_per_cpu:>7.1f}x")
    best = rows[-1][4]
    print(f"\nGTZAN's 10,000 clips at {best:.0f} clips/s: {10_000 / best:.0f} s (the paper's method: {10_000 / paper_rate / 3600:.1f} h)")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "spectrograms.json").write_text(json.dumps(
        [dict(zip(("method", "workers", "clips", "seconds", "clips_per_s", "clips_per_cpu_s"), r)) for r in rows], indent=2))


if __name__ == "__main__":
    main()
