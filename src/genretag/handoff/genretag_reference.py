"""Reference client for a genretag ONNX model: audio file -> top genres.

Shipped by ``genretag registry fetch`` next to ``model.onnx`` and ``genretag_spectrogram.py``
(a verbatim copy of genretag's own preprocessing module). Needs only numpy, soundfile, Pillow
and onnxruntime; it never imports genretag, TensorFlow or librosa.

    python genretag_reference.py track.wav [more.flac ...] [--top 3] [--max-windows 20] [--json]

Steps: decode with soundfile -> downmix to mono (mean of channels) -> resample to the model's
rate when the file's differs -> cut whole, non-overlapping windows (evenly spaced, at most
``max_windows``; ``scoring.json`` holds the catalog's setting) -> mel images with the shipped
spectrogram module -> onnxruntime -> average the window probabilities.

Resampling: genretag's pipeline resamples with soxr ("soxr_hq", via librosa). This file uses
an FFT (band-limited) resampler in plain numpy instead, so for files whose rate differs from
the model's the probabilities can differ slightly from the pipeline's; files already at the
model's rate (22,050 Hz by default) give the pipeline's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf

HERE = Path(__file__).resolve().parent


def _load_spectrogram():
    """The bundle's own genretag_spectrogram.py (even under ``python -I``), else an importable one."""
    if "genretag_spectrogram" in sys.modules:
        return sys.modules["genretag_spectrogram"]
    sibling = HERE / "genretag_spectrogram.py"
    if not sibling.is_file():
        import genretag_spectrogram

        return genretag_spectrogram
    spec = importlib.util.spec_from_file_location("genretag_spectrogram", sibling)
    module = importlib.util.module_from_spec(spec)
    sys.modules["genretag_spectrogram"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


spectrogram = _load_spectrogram()
INPUT_NAME = "mel_image"
OUTPUT_NAME = "probabilities"


@dataclass
class Model:
    session: ort.InferenceSession
    labels: list[str]
    spec: spectrogram.PreprocessingSpec
    max_windows: int = 0
    max_clips_per_run: int = 0  # cuDNN's tensor limit on a GPU (scoring.json); 0: no limit


def load_model(folder: str | Path = HERE, *, providers: list[str] | None = None) -> Model:
    """Open ``folder/model.onnx``; labels and preprocessing come from the model's own metadata."""
    folder = Path(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=providers or ["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    labels = json.loads(meta["genretag.labels"])
    spec = spectrogram.PreprocessingSpec.from_json(meta["genretag.preprocessing"])
    scoring = json.loads((folder / "scoring.json").read_text()) if (folder / "scoring.json").is_file() else {}
    return Model(session=session, labels=labels, spec=spec, max_windows=int(scoring.get("max_windows", 0)),
                 max_clips_per_run=int(scoring.get("max_clips_per_run", 0)))


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited FFT resampling (keep or zero-pad the spectrum below the lower Nyquist)."""
    if orig_rate == target_rate or samples.size == 0:
        return samples.astype(np.float32)
    n_out = int(round(samples.size * target_rate / orig_rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = min(spectrum.size, n_out // 2 + 1)
    resized = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    resized[:keep] = spectrum[:keep]
    return (np.fft.irfft(resized, n=n_out) * (n_out / samples.size)).astype(np.float32)


def decode(path: str | Path, *, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate`` (non-finite samples become silence)."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if samples.size == 0:
        raise ValueError(f"{path}: no audio samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    return resample(mono, int(rate), sample_rate)


def score_waveform(model: Model, waveform: np.ndarray, *, max_windows: int | None = None) -> np.ndarray:
    """Mean window probabilities (len(labels),) of a mono waveform at the model's rate."""
    windows = model.max_windows if max_windows is None else max_windows
    images = spectrogram.waveform_to_images(waveform, model.spec, max_windows=windows, evenly_spaced=True)
    if len(images) == 0:
        raise ValueError(f"audio shorter than one {model.spec.clip_seconds:g}-s window")
    batch = spectrogram.to_model_input(images)
    step = model.max_clips_per_run or len(batch)
    probabilities = np.concatenate(
        [model.session.run([OUTPUT_NAME], {INPUT_NAME: batch[start : start + step]})[0] for start in range(0, len(batch), step)]
    )
    return probabilities.mean(axis=0)


def score_file(model: Model, path: str | Path, *, max_windows: int | None = None) -> np.ndarray:
    return score_waveform(model, decode(path, sample_rate=model.spec.sample_rate), max_windows=max_windows)


def top(model: Model, probabilities: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
    order = np.argsort(probabilities, kind="stable")[::-1][:k]
    return [(model.labels[index], float(probabilities[index])) for index in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tag audio files with a genretag ONNX model.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--model-dir", type=Path, default=HERE, help="folder with model.onnx (default: this file's)")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--max-windows", type=int, default=None, help="0: every window (default: scoring.json)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file")
    args = parser.parse_args(argv)
    model = load_model(args.model_dir)
    failed = 0
    for path in args.files:
        try:
            ranked = top(model, score_file(model, path, max_windows=args.max_windows), args.top)
        except (OSError, RuntimeError, ValueError, sf.LibsndfileError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"file": str(path), "top": [{"genre": g, "probability": p} for g, p in ranked]}))
        else:
            print(f"{path}: " + ", ".join(f"{genre} {probability:.3f}" for genre, probability in ranked))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
