"""Training throughput of the paper's CNNs on synthetic images: seconds per epoch, clips per second.

    python bench/train.py                       # exp7 and exp8 at params.yaml's image size, batch 64
    python bench/train.py --steps 20 --xla --mixed-precision exp8

Measures compiled train steps (forward + backward + Adam) on in-memory batches, after
warm-up steps that trace and compile; data loading is not included. Seconds per epoch are
extrapolated to ``--epoch-clips`` training clips (default 8,000: GTZAN's 80 % train split of
1,000 tracks x 10 clips). Prints a table and writes JSON to bench/results/ (gitignored).
Runs unchanged on a GPU (mixed precision and XLA with the flags).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import genretag  # noqa: F401  - quiet environment before TensorFlow loads
from genretag.core.config import load_params, project_root
from genretag.families.paper_models import build_model


def bench_experiment(name: str, *, image_size: tuple[int, int], batch_size: int, warmup: int, steps: int,
                     n_classes: int, mixed_precision: bool, xla: bool, seed: int = 0) -> dict:
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(name, input_shape=(*image_size, 3), n_classes=n_classes,
                        mixed_precision=mixed_precision, jit_compile=xla)
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.integers(0, 256, size=(batch_size, *image_size, 3), dtype=np.uint8).astype(np.float32) / 255.0)
    labels = tf.constant(np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, size=batch_size)])

    started = time.perf_counter()
    for _ in range(warmup):
        model.train_on_batch(images, labels)  # returns host values: each call waits for the device
    warmup_seconds = time.perf_counter() - started
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - started)
    step = float(np.median(times))
    return {
        "experiment": name,
        "params": int(model.count_params()),
        "image_size": list(image_size),
        "batch_size": batch_size,
        "warmup_steps": warmup,
        "measured_steps": steps,
        "warmup_seconds": round(warmup_seconds, 3),
        "seconds_per_step_median": round(step, 4),
        "seconds_per_step_all": [round(t, 4) for t in times],
        "clips_per_second": round(batch_size / step, 2),
        "jit_compile": bool(model.jit_compile),
    }


def main() -> None:
    params = load_params()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", default=["exp7", "exp8"])
    parser.add_argument("--image-size", type=int, nargs=2, default=list(params.spectrogram.image_size), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--epoch-clips", type=int, default=8000, help="training clips per epoch for seconds/epoch")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--out", type=Path, default=project_root() / "bench" / "results")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "devices": devices,
        "gpus": gpu_names,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    print(f"devices: {devices}  gpus: {gpu_names or 'none'}  cpus: {machine['cpu_affinity']}/{machine['cpu_count']}")
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}; mixed precision {args.mixed_precision}, XLA {args.xla}")

    results = []
    for name in args.experiments:
        result = bench_experiment(
            name, image_size=tuple(args.image_size), batch_size=args.batch_size, warmup=args.warmup,
            steps=args.steps, n_classes=len(params.genres), mixed_precision=args.mixed_precision, xla=args.xla,
        )
        result["seconds_per_epoch"] = round(args.epoch_clips / result["clips_per_second"], 2)
        result["epoch_clips"] = args.epoch_clips
        results.append(result)

    size = "x".join(str(v) for v in args.image_size)
    print(f"\n| experiment | params | image | batch | s/step (median of {args.steps}) | clips/s | s/epoch ({args.epoch_clips} clips) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['experiment']} | {r['params']:,} | {size} | {r['batch_size']} | {r['seconds_per_step_median']:.3f} "
              f"| {r['clips_per_second']:.1f} | {r['seconds_per_epoch']:.1f} |")

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"train-{stamp}.json"
    payload = {"created": stamp, "machine": machine, "mixed_precision": args.mixed_precision, "xla": args.xla,
               "results": results}
    from genretag.core.atomic import write_json

    write_json(target, payload)
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
