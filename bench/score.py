"""Scoring benchmarks: end-to-end catalog tagging, onnxruntime vs Keras, GPU batch sizes, a short training run.

    python bench/score.py [e2e] [--folder DIR] [--tracks 20] [--seconds 30]   # this machine, CPU or GPU
    python bench/score.py export-model --out bench/results/bench-model.onnx  # needs TensorFlow
    python bench/score.py gpu --model FILE.onnx [--batch-sizes 64,128,...]    # exit 3 unless CUDA is active
    python bench/score.py train [--steps 30]                                  # Keras fit timing (any backend)

Every mode prints a table and writes its numbers as JSON under bench/results/ (gitignored),
or under $OUT when set (the device machine's output folder).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # run from a checkout, installed or not

import genretag  # noqa: E402,F401  - quiet, offline environment first

RESULTS = ROOT / "bench" / "results"


# --------------------------------------------------------------------------- shared


def machine() -> dict[str, object]:
    import onnxruntime as ort

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "onnxruntime": ort.__version__,
        "ort_available_providers": ort.get_available_providers(),
    }


def save(kind: str, payload: dict) -> Path:
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"score-{kind}-{stamp}.json"
    from genretag.atomic import write_json

    write_json(path, {"kind": kind, "at": stamp, "machine": machine(), **payload})
    return path


def table(rows: list[tuple], header: tuple) -> str:
    cells = [tuple(str(c) for c in header), *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def with_image_size(params, image_size: list[int] | None):
    """params.yaml with the spectrogram image size overridden (the paper's 128 128, say)."""
    if not image_size:
        return params
    return params.model_copy(update={"spectrogram": params.spectrogram.model_copy(update={"image_size": tuple(image_size)})})


def synth_tracks(folder: Path, *, count: int, seconds: float, sample_rate: int = 22050, seed: int = 2021) -> list[Path]:
    """Deterministic pseudo-music: a few harmonic notes, a beat and noise, different per track."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    files = []
    for index in range(count):
        notes = rng.uniform(80, 1200, size=4)
        signal = sum(np.sin(2 * np.pi * f * t * (1 + 0.002 * np.sin(2 * np.pi * 0.3 * t))) / (k + 1) for k, f in enumerate(notes))
        beat = (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > 0.95) * rng.standard_normal(t.size) * 0.5
        wave = 0.2 * signal / 2 + beat * 0.3 + 0.02 * rng.standard_normal(t.size)
        path = folder / f"synth.{index:05d}.wav"
        sf.write(path, np.clip(wave, -1, 1).astype(np.float32), sample_rate, subtype="PCM_16")
        files.append(path)
    return files


def build_keras(experiment: str, *, image_size: tuple[int, int], n_classes: int):
    """genretag.models' experiment when available, else a tiny CNN."""
    try:
        from genretag.models import build_model
    except ImportError:
        import keras

        model = keras.Sequential([
            keras.Input((*image_size, 3)),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(n_classes, activation="softmax"),
        ])
        return model, "tiny"
    return build_model(experiment, input_shape=(*image_size, 3), n_classes=n_classes), experiment


def export_onnx(model, out: Path, *, params, version: str) -> Path:
    """Keras -> ONNX with the genretag contract (genretag.export's converter when available)."""
    import onnx

    from genretag.config import preprocessing_spec
    from genretag.contract import ModelContract, write_contract

    spec = preprocessing_spec(params)
    try:
        from genretag.export import convert_to_onnx
    except ImportError:
        import tensorflow as tf
        import tf2onnx

        from genretag.contract import INPUT_NAME, OUTPUT_NAME

        def convert_to_onnx(model, *, image_size, opset):
            signature = [tf.TensorSpec([None, *image_size, 3], tf.float32, name=INPUT_NAME)]
            serve = tf.function(lambda x: {OUTPUT_NAME: model(x, training=False)}, input_signature=signature)
            return tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)[0]

    proto = convert_to_onnx(model, image_size=tuple(spec.image_size), opset=params.export.opset)
    contract = ModelContract(labels=tuple(params.genres), preprocessing=spec, model_name=params.registry.model_name, model_version=version)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(write_contract(proto, contract), str(out))
    return out


def clips_per_second(run, batches: list[np.ndarray], *, repeats: int) -> float:
    run(batches[0])  # warm-up (allocations, kernels, graph tracing)
    started = time.perf_counter()
    clips = 0
    for _ in range(repeats):
        for batch in batches:
            run(batch)
            clips += len(batch)
    return clips / (time.perf_counter() - started)


# --------------------------------------------------------------------------- modes


def run_e2e(args: argparse.Namespace) -> int:
    from genretag.catalog import tag_catalog
    from genretag.config import load_params
    from genretag.scoring import open_model, track_images
    from genretag.spectrogram import to_model_input

    params = load_params(ROOT / "params.yaml")
    work = Path(tempfile.mkdtemp(prefix="genretag-bench-"))
    if args.folder:
        folder = Path(args.folder)
    else:
        folder = work / "tracks"
        synth_tracks(folder, count=args.tracks, seconds=args.seconds, sample_rate=params.audio.sample_rate)
    if args.model:  # Keras, for the engine comparison, at the given model's image size
        model = open_model(args.model)
        image_size = tuple(model.spec.image_size)
        keras_model, architecture = build_keras(args.experiment, image_size=image_size, n_classes=len(model.labels))
    else:
        image_size = tuple(params.spectrogram.image_size)
        keras_model, architecture = build_keras(args.experiment, image_size=image_size, n_classes=len(params.genres))
        model = open_model(export_onnx(keras_model, work / "model.onnx", params=params, version="bench"))
    windows = params.score.max_windows if args.max_windows is None else args.max_windows
    batch_size = args.batch_size or params.score.batch_size

    runs = []
    for label in ("cold", "warm"):  # cold: the decoding workers' start-up included
        summary = tag_catalog(
            folder, model=model, database_url=f"sqlite:///{work / f'catalog-{label}.db'}", max_windows=windows,
            batch_size=batch_size, commit_every=params.score.commit_every, workers=args.workers,
            silence_rms_dbfs=params.validation.silence_rms_dbfs,
        )
        runs.append((label, summary))

    files = sorted(p for p in folder.rglob("*") if p.is_file())[: max(1, args.clip_batches * args.compare_batch // max(windows, 1) + 1)]
    images = np.concatenate([track_images(p, model.spec, max_windows=windows) for p in files])
    inputs = to_model_input(images)
    need = args.clip_batches * args.compare_batch
    inputs = np.concatenate([inputs] * (need // len(inputs) + 1))[:need]
    batches = [inputs[i : i + args.compare_batch] for i in range(0, need, args.compare_batch)]
    ort_cps = clips_per_second(lambda b: model.predict(b, batch_size=len(b)), batches, repeats=args.repeats)
    keras_cps = clips_per_second(lambda b: keras_model.predict(b, batch_size=len(b), verbose=0), batches, repeats=args.repeats)
    diff = float(np.abs(model.predict(batches[0]) - keras_model.predict(batches[0], verbose=0)).max()) if not args.model else None

    rows = [(f"end to end ({label})", s.tagged, s.windows_scored, f"{s.seconds:.1f}", f"{s.tracks_per_second:.2f}",
             f"{s.windows_scored / s.seconds:.1f}") for label, s in runs]
    print(f"\nmodel {architecture} {image_size[0]}x{image_size[1]} on {model.provider}; {len(runs[0][1].failures)} failures; "
          f"workers={args.workers or 'all'} batch={batch_size} max_windows={windows}")
    print(table(rows, ("run", "tracks", "windows", "seconds", "tracks/s", "windows/s")))
    print()
    print(table([
        ("onnxruntime " + model.provider, args.compare_batch, f"{ort_cps:.1f}", f"{ort_cps / keras_cps:.2f}x"),
        ("keras model.predict", args.compare_batch, f"{keras_cps:.1f}", "1.00x"),
    ], ("engine", "batch", "clips/s", "vs keras")))
    if diff is not None:
        print(f"max |onnx - keras| = {diff:.2e}")
    path = save("e2e", {
        "architecture": architecture, "image_size": list(image_size), "provider": model.provider,
        "tracks": len(list(folder.rglob("*.wav"))), "track_seconds": args.seconds if not args.folder else None,
        "max_windows": windows, "batch_size": batch_size, "workers": args.workers,
        "end_to_end": {label: {"tracks": s.tagged, "windows": s.windows_scored, "seconds": s.seconds,
                               "tracks_per_second": s.tracks_per_second, "failed": s.failed} for label, s in runs},
        "compare": {"batch": args.compare_batch, "batches": args.clip_batches, "repeats": args.repeats,
                    "onnxruntime_clips_per_second": ort_cps, "keras_clips_per_second": keras_cps,
                    "ratio": ort_cps / keras_cps, "max_abs_diff": diff},
    })
    print(f"\nwrote {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from genretag.config import load_params

    params = with_image_size(load_params(ROOT / "params.yaml"), args.image_size)
    keras_model, architecture = build_keras(args.experiment, image_size=tuple(params.spectrogram.image_size), n_classes=len(params.genres))
    out = export_onnx(keras_model, Path(args.out), params=params, version=f"bench-{architecture}")
    print(f"wrote {out} ({architecture}, {out.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_gpu(args: argparse.Namespace) -> int:
    """onnxruntime clips/s per batch size, against the CPU provider on the same machine and batches.

    Exit 3 unless CUDA really runs (``--allow-cpu``: dry run on a CPU machine).
    """
    from genretag.errors import ScoringError
    from genretag.scoring import CUDA, open_model

    try:
        model = open_model(args.model, require_gpu=not args.allow_cpu)
    except ScoringError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 3
    height, width = model.spec.image_size
    rng = np.random.default_rng(0)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    batches = {size: rng.random((size, height, width, 3), dtype=np.float32) for size in sizes}
    fast = {size: clips_per_second(lambda b: model.predict(b, batch_size=len(b)), [batches[size]],
                                   repeats=max(2, args.clips // size)) for size in sizes}
    fast_out = {size: model.predict(batches[size]) for size in sizes}
    # The CPU session is opened only after every CUDA run: with a CPU session beside it, the CUDA
    # session of the 128x128 model failed in cuDNN (MaxPool, CUDNN_STATUS_NOT_SUPPORTED) on an H100.
    baseline = open_model(args.model, prefer_gpu=False)
    print(f"provider {model.provider} (session providers {model.session.get_providers()}); baseline {baseline.provider}")
    rows, numbers = [], {}
    for size in sizes:
        cpu_cps = clips_per_second(lambda b: baseline.predict(b, batch_size=len(b)), [batches[size]], repeats=1)
        diff = float(np.abs(fast_out[size] - baseline.predict(batches[size])).max())
        rows.append((size, f"{fast[size]:.0f}", f"{cpu_cps:.0f}", f"{fast[size] / cpu_cps:.1f}x", f"{diff:.1e}"))
        numbers[str(size)] = {"clips_per_second": fast[size], "cpu_clips_per_second": cpu_cps, "max_abs_diff_vs_cpu": diff}
    print(table(rows, ("batch", f"{model.provider} clips/s", "CPU clips/s", "ratio", "max |diff|")))
    path = save("gpu", {"provider": model.provider, "image_size": [height, width], "model": str(args.model), "batches": numbers})
    print(f"wrote {path}")
    return 0 if model.provider == CUDA or args.allow_cpu else 3


def run_train(args: argparse.Namespace) -> int:
    """Seconds per step of a short Keras fit of the configured experiment on random images (last epoch)."""
    import keras

    from genretag.config import load_params

    params = with_image_size(load_params(ROOT / "params.yaml"), args.image_size)
    image_size = tuple(params.spectrogram.image_size)
    model, architecture = build_keras(args.experiment, image_size=image_size, n_classes=len(params.genres))
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.random((n, *image_size, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, len(params.genres), n), len(params.genres))
    devices = _keras_devices()
    epoch_seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.started)

    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=[EpochTimer()])
    seconds = epoch_seconds[-1]  # the first epoch includes tracing and compilation
    print(table([(architecture, f"{image_size[0]}x{image_size[1]}", keras.backend.backend(), ",".join(devices) or "?",
                  args.batch_size, args.steps, f"{epoch_seconds[0]:.2f}", f"{seconds:.2f}", f"{seconds / args.steps * 1000:.1f}",
                  f"{n / seconds:.0f}")],
                ("model", "image", "backend", "devices", "batch", "steps/epoch", "epoch 1 s", f"epoch {args.epochs} s", "ms/step", "clips/s")))
    path = save("train", {"architecture": architecture, "image_size": list(image_size), "backend": keras.backend.backend(),
                          "devices": devices, "batch_size": args.batch_size, "steps": args.steps, "epoch_seconds": epoch_seconds,
                          "seconds_per_step": seconds / args.steps})
    print(f"wrote {path}")
    if args.require_gpu and not any("gpu" in d.lower() or "cuda" in d.lower() for d in devices):
        print("FAIL: Keras did not train on a GPU", file=sys.stderr)
        return 4
    return 0


def _keras_devices() -> list[str]:
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU"]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "torch":
        import torch

        return [f"cuda:{torch.cuda.get_device_name(0)}"] if torch.cuda.is_available() else ["cpu"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    e2e = sub.add_parser("e2e", help="end-to-end tracks/s, and onnxruntime vs Keras clips/s (the default)")
    for p in (parser, e2e):
        p.add_argument("--folder", help="tag this folder instead of synthetic tracks")
        p.add_argument("--tracks", type=int, default=20)
        p.add_argument("--seconds", type=float, default=30.0)
        p.add_argument("--model", help="an .onnx file (default: export the Keras model built here)")
        p.add_argument("--experiment", default="exp8")
        p.add_argument("--max-windows", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=0, help="scoring batch (default: params score.batch_size)")
        p.add_argument("--workers", type=int, default=0)
        p.add_argument("--compare-batch", type=int, default=64)
        p.add_argument("--clip-batches", type=int, default=3)
        p.add_argument("--repeats", type=int, default=1)
    export = sub.add_parser("export-model", help="write the benchmark model as ONNX (needs TensorFlow)")
    export.add_argument("--out", required=True)
    export.add_argument("--experiment", default="exp8")
    export.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="default: params.yaml")
    gpu = sub.add_parser("gpu", help="onnxruntime clips/s per batch size on CUDA")
    gpu.add_argument("--model", required=True)
    gpu.add_argument("--batch-sizes", default="64,128,256,512,1024")
    gpu.add_argument("--clips", type=int, default=8192, help="clips per batch size on the GPU (at least two runs); the CPU baseline runs each batch once")
    gpu.add_argument("--allow-cpu", action="store_true", help="dry run: time on the CPU instead of failing")
    train = sub.add_parser("train", help="seconds per step of a short Keras training run")
    train.add_argument("--experiment", default="exp8")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--steps", type=int, default=30, help="steps per epoch")
    train.add_argument("--epochs", type=int, default=3, help="the last one is timed (the first compiles)")
    train.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="default: params.yaml")
    train.add_argument("--require-gpu", action="store_true")
    args = parser.parse_args()
    mode = args.mode or "e2e"
    return {"e2e": run_e2e, "export-model": run_export, "gpu": run_gpu, "train": run_train}[mode](args)


if __name__ == "__main__":
    sys.exit(main())
