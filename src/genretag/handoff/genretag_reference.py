"""Reference client for a genretag contract-v2 ONNX model: audio file -> top genres.

Shipped in every handoff bundle next to ``model.onnx``. Needs only numpy, soundfile (decoder),
python-soxr (resampler) and onnxruntime; it never imports genretag, TensorFlow or librosa. The
model holds the whole preprocessing: it takes waveforms, so this file computes no spectrogram.

    python genretag_reference.py track.wav [more.flac ...] [--top 3] [--max-windows 20] [--json]

Steps, each as genretag's own tagger does them (``genretag.audio.decode``, ``genretag.scoring``):

1. decode with soundfile -> float32 [frames, channels]; downmix to mono (mean of the channels);
2. refuse non-finite samples; when the file's rate differs from the model's (``genretag.sample_rate``
   in the metadata): ``soxr.resample(..., quality="HQ")``, genretag's own resampler;
3. cut whole, non-overlapping windows of ``genretag.clip_samples`` samples (3 s), evenly spaced
   when there are more than ``max_windows`` (``scoring.json``; 0: all);
4. skip silent windows: all zero, or RMS below ``silence_rms_dbfs`` (``scoring.json``);
5. ``session.run`` on the windows (at most ``max_clips_per_run`` per run on a GPU), mean of the
   windows' ``probabilities``;
6. the calibrated track confidence: ``softmax(log(max(mean, 1e-12)) / T)``, T the track temperature of
   ``genretag.track_calibration`` in the metadata (absent: 1). genretag's ``track_probabilities``
   (genretag.onnx.contract), mirrored here;
7. when the model has an out-of-taxonomy score (``genretag.open_set`` in the metadata): the track embedding is
   the mean of the windows' ``embedding`` output, its score ``1 - cos`` to the k-th nearest row of the record's
   bank (base64 float32 [bank_tracks, dimension], L2-normalised train-track embeddings); above the threshold the
   track is ``unknown``. genretag's ``OpenSet.track_score`` (genretag.onnx.contract), mirrored here.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr

HERE = Path(__file__).resolve().parent
INPUT_NAME = "waveform"
OUTPUT_NAME = "probabilities"
EMBEDDING_NAME = "embedding"
UNKNOWN = "unknown"  # the genre of a track past the model's out-of-taxonomy threshold


@dataclass
class Model:
    session: ort.InferenceSession
    labels: list[str]
    sample_rate: int  # Hz of the waveform input
    clip_samples: int  # samples per window
    max_windows: int = 0
    silence_rms_dbfs: float = -60.0
    max_clips_per_run: int = 0  # cuDNN's tensor limit on a GPU; 0: no limit
    track_temperature: float = 1.0  # genretag.track_calibration's temperature (step 6)
    unknown_bank: np.ndarray | None = None  # float64 [m, D] unit rows: the train tracks' embeddings (None: cannot say unknown)
    unknown_neighbours: int = 1  # k: the score is 1 - cos to the k-th nearest bank row
    unknown_threshold: float | None = None  # a track whose score is above it is unknown


@dataclass
class Scored:
    """A track: its calibrated track probabilities (len(labels),), and its out-of-taxonomy score (None: the model has none)."""

    probabilities: np.ndarray
    unknown_score: float | None
    unknown: bool


def load_model(folder: str | Path = HERE, *, providers: list[str] | None = None) -> Model:
    """Open ``folder/model.onnx``; labels, rate and window length come from the model's own metadata."""
    folder = Path(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=providers or ["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("genretag.contract_version") != "2":
        raise ValueError(f"{folder / 'model.onnx'}: not a genretag contract-v2 model (waveform input)")
    scoring = json.loads((folder / "scoring.json").read_text()) if (folder / "scoring.json").is_file() else {}
    open_set = json.loads(meta.get("genretag.open_set") or "{}")
    bank = None
    if open_set.get("bank") and open_set.get("threshold") is not None:
        raw = np.frombuffer(base64.b64decode(open_set["bank"]), dtype="<f4")
        bank = raw.reshape(int(open_set["bank_tracks"]), int(open_set["dimension"])).astype(np.float64)
    return Model(
        session=session,
        labels=json.loads(meta["genretag.labels"]),
        sample_rate=int(meta["genretag.sample_rate"]),
        clip_samples=int(meta["genretag.clip_samples"]),
        max_windows=int(scoring.get("max_windows", 0)),
        silence_rms_dbfs=float(scoring.get("silence_rms_dbfs", -60.0)),
        max_clips_per_run=int(scoring.get("max_clips_per_run", 0)),
        track_temperature=float(json.loads(meta.get("genretag.track_calibration") or "{}").get("temperature", 1.0)),
        unknown_bank=bank,
        unknown_neighbours=int(open_set.get("neighbours", 1)),
        unknown_threshold=open_set.get("threshold"),
    )


def decode(path: str | Path, *, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate`` Hz (steps 1-2)."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if samples.size == 0:
        raise ValueError(f"{path}: no audio samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise ValueError(f"{path}: non-finite samples (NaN or infinity)")
    if int(rate) == sample_rate:
        return mono
    return np.asarray(soxr.resample(mono, int(rate), sample_rate, quality="HQ"), dtype=np.float32)


def windows(model: Model, waveform: np.ndarray, *, max_windows: int | None = None) -> np.ndarray:
    """The non-silent windows float32 [n, clip_samples] of a mono waveform at the model's rate (steps 3-4)."""
    limit = model.max_windows if max_windows is None else max_windows
    count = len(waveform) // model.clip_samples
    starts = np.arange(count, dtype=np.int64) * model.clip_samples
    if limit and count > limit:
        starts = starts[np.linspace(0, count - 1, limit).round().astype(np.int64)]
    kept = []
    for start in starts:
        window = waveform[start : start + model.clip_samples]
        rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64))))
        if np.abs(window).max() > 0 and 20.0 * np.log10(max(rms, 1e-10)) >= model.silence_rms_dbfs:
            kept.append(window)
    if not kept:
        reason = "silent" if count else f"shorter than one {model.clip_samples / model.sample_rate:g}-s window"
        raise ValueError(f"audio {reason}")
    return np.stack(kept).astype(np.float32, copy=False)


def score_waveform(model: Model, waveform: np.ndarray, *, max_windows: int | None = None) -> Scored:
    """Track probabilities (len(labels),) of a mono waveform at the model's rate (steps 5-6) and the
    track's out-of-taxonomy score (step 7)."""
    batch = windows(model, waveform, max_windows=max_windows)
    step = model.max_clips_per_run or len(batch)
    runs = [model.session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: batch[start : start + step]})
            for start in range(0, len(batch), step)]
    probabilities = track_probabilities(np.concatenate([run[0] for run in runs]), temperature=model.track_temperature)
    if model.unknown_bank is None:
        return Scored(probabilities, None, False)
    embedding = np.concatenate([run[1] for run in runs]).mean(axis=0, dtype=np.float64)
    unit = embedding / max(float(np.linalg.norm(embedding)), 1e-12)
    similarity = np.sort(model.unknown_bank @ unit)
    unknown_score = float(1.0 - similarity[-min(model.unknown_neighbours, len(similarity))])
    return Scored(probabilities, unknown_score, unknown_score > model.unknown_threshold)


def track_probabilities(window_probabilities: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """float64 [K] = softmax(log(max(mean of the [n, K] windows, 1e-12)) / temperature) (step 6)."""
    scaled = np.log(np.maximum(np.asarray(window_probabilities, dtype=np.float64).mean(axis=0), 1e-12)) / temperature
    exp = np.exp(scaled - scaled.max())
    return exp / exp.sum()


def score_file(model: Model, path: str | Path, *, max_windows: int | None = None) -> Scored:
    return score_waveform(model, decode(path, sample_rate=model.sample_rate), max_windows=max_windows)


def top(model: Model, probabilities: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(model.labels[index], float(probabilities[index])) for index in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tag audio files with a genretag ONNX model.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--model-dir", type=Path, default=HERE, help="folder with model.onnx (default: this file's)")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--max-windows", type=int, default=None, help="0: every window (default: scoring.json)")
    parser.add_argument("--json", action="store_true",
                        help='one JSON object per file: {"file", "windows", "genre", "unknown", "unknown_score", "top": [{"genre", "probability"}], "probabilities": {label: p}}')
    args = parser.parse_args(argv)
    model = load_model(args.model_dir)
    failed = 0
    for path in args.files:
        try:
            waveform = decode(path, sample_rate=model.sample_rate)
            count = len(windows(model, waveform, max_windows=args.max_windows))
            scored = score_waveform(model, waveform, max_windows=args.max_windows)
            ranked = top(model, scored.probabilities, args.top)
        except (OSError, RuntimeError, ValueError, sf.LibsndfileError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        genre = UNKNOWN if scored.unknown else ranked[0][0]
        if args.json:  # the same fields as genretag_reference.mjs --json
            print(json.dumps({"file": str(path), "windows": count, "genre": genre, "unknown": scored.unknown,
                              "unknown_score": scored.unknown_score, "top": [{"genre": g, "probability": p} for g, p in ranked],
                              "probabilities": dict(zip(model.labels, map(float, scored.probabilities), strict=True))}))
        else:
            prefix = f"{UNKNOWN} (none of these genres; score {scored.unknown_score:.4g}), " if scored.unknown else ""
            print(f"{path}: {prefix}" + ", ".join(f"{genre} {probability:.3f}" for genre, probability in ranked))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
