"""float32 vs int8 (genretag.training.int8.quantize_network) contract-v2 graphs on CPU: clips/s, same clips, one run.

    python bench/quantize.py [--families paper-exp8 musicnn-msd] [--size 128] [--clips 128] [--repeats 5]

For each family: a float32 graph (paper-exp8: the paper's exp8 at --size x --size, weights as
initialised, which do not change its cost; musicnn-msd: the pretrained network with a head fitted
on a few synthetic clips), then its int8 graph in both onnxruntime formats (QOperator, QDQ),
calibrated on 32 synthetic music clips. Every graph runs the same --clips synthetic clips
(waveforms, batch 64, onnxruntime CPU provider, its default threads), the models taking turns in
each of --repeats rounds so that other load on a shared machine hits them alike; the median round
gives clips/s. Also: top-1 agreement and max |probability difference| of int8 vs float32 on those
clips. Accuracy on real music: bench/accuracy.py --int8. Writes bench/results/quantize.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import genretag  # noqa: F401  - quiet environment before TensorFlow loads
from genretag.data.demo import synthesize_track
from genretag.onnx.session import cpu_session, predict_waveforms
from genretag.training.int8 import quantize_network
from genretag.families import ClipSet, create

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


def synthetic(n: int, *, sample_rate: int, clip_samples: int, seed: int) -> np.ndarray:
    """float32 [n, clip_samples]: genretag.data.demo's synthetic music, cycling through the genres."""
    seconds = clip_samples / sample_rate
    return np.stack([synthesize_track(GENRES[i % 10], index=i // 10, seed=seed, sample_rate=sample_rate, duration_s=seconds)[:clip_samples]
                     for i in range(n)]).astype(np.float32)


def float32_graph(candidate: str, *, size: int):
    """(family, contract-v2 float32 ModelProto) for ``candidate``."""
    if candidate.startswith("paper-"):
        family = create(candidate, image_size=(size, size))
        family.model, family.labels = family.build_network(n_classes=len(GENRES)), GENRES
        return family, family.to_onnx()
    family = create(candidate)
    waves = synthetic(40, sample_rate=family.sample_rate, clip_samples=family.clip_samples, seed=5)
    labels = np.arange(40) % 10
    empty = ClipSet(waves[:0], labels[:0], (), (), family.sample_rate)
    family.fit(ClipSet(waves, labels, tuple(map(str, range(40))), tuple(map(str, range(40))), family.sample_rate), empty,
               labels=GENRES, seed=0, log=lambda message: None)
    return family, family.to_onnx()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["paper-exp8", "musicnn-msd"])
    parser.add_argument("--size", type=int, default=128, help="image side of the paper family")
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rows = []
    for candidate in args.families:
        family, proto = float32_graph(candidate, size=args.size)
        calibration = synthetic(32, sample_rate=family.sample_rate, clip_samples=family.clip_samples, seed=11)
        clips = synthetic(args.clips, sample_rate=family.sample_rate, clip_samples=family.clip_samples, seed=23)
        graphs = {"float32": proto}
        for fmt in ("qoperator", "qdq"):
            started = time.perf_counter()
            graphs[f"int8 {fmt}"] = quantize_network(proto, calibration=calibration, quant_format=fmt)
            print(f"{candidate}: quantised ({fmt}) in {time.perf_counter() - started:.1f} s", flush=True)
        sessions = {name: cpu_session(g.SerializeToString()) for name, g in graphs.items()}
        outputs = {name: predict_waveforms(s, clips[:64]) for name, s in sessions.items()}  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.repeats):
            for name, session in sessions.items():
                started = time.perf_counter()
                outputs[name] = predict_waveforms(session, clips, batch_size=64)
                seconds[name].append(time.perf_counter() - started)
        base = args.clips / float(np.median(seconds["float32"]))
        for name, graph in graphs.items():
            rate = args.clips / float(np.median(seconds[name]))
            reference, mine = outputs["float32"].probabilities, outputs[name].probabilities
            rows.append({"family": candidate, "model": name, "clips": args.clips, "clips_per_s": round(rate, 1),
                         "vs_float32": round(rate / base, 2), "onnx_mb": round(len(graph.SerializeToString()) / 1e6, 2),
                         "top1_agreement": float(np.mean(reference.argmax(1) == mine.argmax(1))),
                         "max_abs_diff": float(np.abs(reference - mine).max())})

    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; onnxruntime CPU provider, batch 64, median of {args.repeats} interleaved rounds")
    print("| family | model | clips/s | vs float32 | ONNX MB | top-1 agreement | max abs diff |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['family']} | {r['model']} | {r['clips_per_s']:.1f} | {r['vs_float32']:.2f}x | {r['onnx_mb']:.2f} | "
              f"{100 * r['top1_agreement']:.1f} % | {r['max_abs_diff']:.3g} |")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "quantize.json").write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "size": args.size,
                                                   "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
