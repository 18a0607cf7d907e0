"""Scoring benchmarks on contract v2: preprocessing in the graph vs numpy, tagging's three rates, GPU batch sizes, training.

    python bench/score.py contract [--sizes 64 128] [--batch 64] [--batches 4] [--repeats 3]  # (a) numpy + image-in vs (b) waveform-in, CPU
    python bench/score.py [e2e] [--minutes 1 4 10 60] [--no-memory]  # cost vs length; decode/model/e2e tracks/s; peak RSS
    python bench/score.py e2e --tracks 120 [--seconds 30] | --folder DIR  # the three rates only, on other tracks
    python bench/score.py export-model --out bench/results/bench-model.onnx    # the paper CNN as a contract-v2 graph (TensorFlow)
    python bench/score.py gpu --model FILE.onnx [--batch-sizes 64,128,...]      # exit 3 unless CUDA is active
    python bench/score.py train [--steps 30]                                    # Keras fit timing (any backend)

The paper CNN (``--experiment``, random weights: speed does not depend on them) is built with Keras,
converted image-in by ``genretag.families.keras_images.network_to_onnx``, and joined to the in-graph front end
``genretag.graph.paper_image_frontend`` by ``genretag.graph.compose``; the bench's network has no
embedding head, so its ``embedding`` output repeats the probabilities (timing only).

Every mode prints a table and writes its numbers as JSON under bench/results/ (gitignored),
or under $OUT when set (the device machine's output folder).
"""

from __future__ import annotations

import argparse
import json
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
# ... in its worker processes too: the decoding pool's forkserver imports genretag before it applies
# this sys.path, so without this an installed copy (another checkout's) would decode.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))

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
    from genretag.core.atomic import write_json

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


def build_keras(experiment: str, *, image_size: tuple[int, int], n_classes: int):
    """genretag.models' experiment when available, else a tiny CNN."""
    try:
        from genretag.families.paper_models import build_model
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


def image_onnx(model, *, params):
    """Keras -> the image-in ONNX network (input ``mel_image`` [N, H, W, 3], output ``probabilities``)."""
    from genretag.dsp.spectrogram import preprocessing_spec
    from genretag.families.keras_images import network_to_onnx

    return network_to_onnx(model, image_size=tuple(preprocessing_spec(params).image_size), opset=params.export.opset)


def waveform_onnx(network, *, params, version: str):
    """The image-in network behind the in-graph paper front end: a contract-v2 graph with its contract."""
    from genretag.dsp.spectrogram import preprocessing_spec
    from genretag.onnx.contract import ModelContract, write_contract
    from genretag.onnx.graph import compose, paper_image_frontend

    spec = preprocessing_spec(params)
    proto = compose(paper_image_frontend(spec), network)
    contract = ModelContract(
        labels=tuple(params.genres), model_name=params.registry.model_name, model_version=version, sample_rate=spec.sample_rate,
        clip_samples=spec.clip_samples, family="paper", preprocessing=json.loads(spec.to_json()),
    )
    return write_contract(proto, contract)


def paper_models(params, *, experiment: str, work: Path, version: str) -> tuple[Path, Path, str]:
    """(image-in .onnx, waveform-in .onnx, architecture) of the paper CNN at params' image size."""
    import onnx

    height, width = params.spectrogram.image_size
    keras_model, architecture = build_keras(experiment, image_size=(height, width), n_classes=len(params.genres))
    network = image_onnx(keras_model, params=params)
    image_path, wave_path = work / f"image-{height}x{width}.onnx", work / f"waveform-{height}x{width}.onnx"
    work.mkdir(parents=True, exist_ok=True)
    onnx.save(network, str(image_path))
    onnx.save(waveform_onnx(network, params=params, version=version), str(wave_path))
    return image_path, wave_path, architecture


def cpu_session(path: Path):
    """CPU-provider session with the settings both sides of the contract bench share (printed with it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # onnxruntime's default, stated
    options.intra_op_num_threads = 0  # onnxruntime's default: one per physical core
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_clips(params, *, count: int, work: Path) -> np.ndarray:
    """``count`` 3-s windows float32 [count, S] of synthetic tracks, decoded and cut as the tagger does."""
    from genretag.tagging.windows import track_windows

    rate, clip = params.audio.sample_rate, params.audio.clip_samples
    files = [write_track(work / "clips" / f"synth.{i:05d}.wav", seconds=30.0, seed=2021 + i, sample_rate=rate, channels=1)
             for i in range(max(1, -(-count // 10)))]
    windows = np.concatenate([track_windows(p, sample_rate=rate, clip_samples=clip).waveforms for p in files])
    return windows[:count]


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


def run_contract(args: argparse.Namespace) -> int:
    """Issue 10: clips/s of (a) numpy preprocessing + image-in ONNX and (b) waveform-in ONNX, CPU, same clips, same batches."""
    from genretag.core.config import load_params
    from genretag.dsp.spectrogram import preprocessing_spec
    from genretag.dsp.spectrogram import db_to_image, mel_db, to_model_input

    base = load_params(ROOT / "params.yaml")
    work = Path(tempfile.mkdtemp(prefix="genretag-bench-contract-"))
    clips = bench_clips(base, count=args.batch * args.batches, work=work)
    batches = [clips[i : i + args.batch] for i in range(0, len(clips), args.batch)]
    rows, numbers = [], {}
    for size in args.sizes:
        params = with_image_size(base, [size, size])
        spec = preprocessing_spec(params)
        image_path, wave_path, architecture = paper_models(params, experiment=args.experiment, work=work, version="bench")
        image_session, wave_session = cpu_session(image_path), cpu_session(wave_path)

        def numpy_then_image(batch: np.ndarray, spec=spec, session=image_session) -> np.ndarray:
            images = to_model_input(db_to_image(mel_db(batch, spec), spec))
            return session.run(None, {session.get_inputs()[0].name: images})[0]

        def waveform_in(batch: np.ndarray, session=wave_session) -> np.ndarray:
            return session.run(["probabilities"], {"waveform": batch})[0]

        # (a) and (b) take turns, round by round, so a change in the machine's load hits both; median of the rounds
        rounds = [(clips_per_second(numpy_then_image, batches, repeats=1), clips_per_second(waveform_in, batches, repeats=1))
                  for _ in range(args.repeats)]
        a, b = (float(np.median([r[side] for r in rounds])) for side in (0, 1))
        agree = float(np.mean([(numpy_then_image(x).argmax(1) == waveform_in(x).argmax(1)).mean() for x in batches]))
        gap = float(max(np.abs(numpy_then_image(x) - waveform_in(x)).max() for x in batches))
        rows.append((f"{architecture} {size}x{size}", f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}x", f"{agree:.3f}", f"{gap:.1e}"))
        numbers[f"{size}x{size}"] = {"numpy_image_in_clips_per_second": a, "waveform_in_clips_per_second": b, "ratio": b / a,
                                     "rounds": rounds,
                                     "top1_agreement": agree, "max_abs_diff": gap}
    load = os.getloadavg()
    print(f"\nCPU provider, batch {args.batch}, {len(clips)} clips, median of {args.repeats} rounds of (a) then (b), same clips; "
          f"both sessions ORT_ENABLE_ALL, default intra-op threads; load average {load[0]:.1f} (1 min)")
    print(table(rows, ("model", "(a) numpy + image-in clips/s", "(b) waveform-in clips/s", "(b)/(a)", "top-1 agree", "max |diff|")))
    path = save("contract", {"experiment": args.experiment, "batch": args.batch, "clips": len(clips), "repeats": args.repeats,
                             "load_average": list(load), "sizes": numbers})
    print(f"\nwrote {path}")
    return 0


CATALOG_RATE = 44100  # real-looking catalog audio: 44.1 kHz stereo
CATALOG_FORMATS = ("mp3", "flac", "ogg")
# Real recordings, when present: ../shared beside the checkout (or beside a worktrees' folder).
CATALOG_SAMPLE = next((p for p in (ROOT.parent / "shared" / "catalog-sample", ROOT.parents[1] / "shared" / "catalog-sample")
                       if p.is_dir()), ROOT.parent / "shared" / "catalog-sample")


def music_block(seconds: float, *, sample_rate: int, seed: int) -> np.ndarray:
    """float32 [frames, 2] of pseudo-music: gliding harmonic notes, a noisy beat, hiss; different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    notes = rng.uniform(80, 1200, size=4)
    glide = 1 + 0.002 * np.sin(2 * np.pi * 0.3 * t)
    tones = sum(np.sin(2 * np.pi * f * t * glide) / (k + 1) for k, f in enumerate(notes))
    beat = (np.sin(2 * np.pi * rng.uniform(1, 3) * t) > 0.95) * rng.standard_normal(t.size) * 0.3
    left = 0.1 * tones + beat + 0.02 * rng.standard_normal(t.size)
    right = 0.8 * np.roll(left, 41) + 0.02 * rng.standard_normal(t.size)
    return np.clip(np.stack([left, right], axis=1), -1, 1).astype(np.float32)


def write_track(path: Path, *, seconds: float, seed: int, sample_rate: int = CATALOG_RATE, channels: int = 2) -> Path:
    """Encode ``seconds`` of music_block (a 30-s block repeated, one gain per block) with libsndfile, the
    format chosen by the suffix; written under a temporary name, so an interrupted bench leaves no half file."""
    import soundfile as sf

    if path.exists():
        return path
    block = music_block(min(seconds, 30.0), sample_rate=sample_rate, seed=seed)[:, :channels]
    frames, second = int(seconds * sample_rate), sample_rate
    partial = path.with_name(f".partial-{path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(partial, "w", sample_rate, channels, format=path.suffix[1:].upper()) as handle:
        for start in range(0, frames, second):  # one second per write: libsndfile's Vorbis encoder crashes on long ones
            at = start % len(block)
            gain = 1.0 - 0.3 * ((start // len(block)) % 3) / 2
            handle.write(block[at : at + min(second, frames - start)] * gain)
    partial.replace(path)
    return path


def catalog_files(cache: Path, *, minutes: list[float], formats: list[str], sample: Path | None) -> list[Path]:
    """The bench's catalog: one file per format and length (made once, kept in ``cache``), then ``sample``'s audio."""
    from genretag.audio.folders import scan_folder

    files = []
    for index, (length, fmt) in enumerate((m, f) for m in minutes for f in formats):
        path = cache / f"catalog-{length:g}min.{fmt}"
        if not path.exists():
            print(f"encoding {path.name} ...", flush=True)
        files.append(write_track(path, seconds=length * 60, seed=100 + index))
    if sample is not None and sample.is_dir():
        files += scan_folder(sample).audio
    return files


def seconds_per_track(paths: list[Path], *, sample_rate: int, clip_samples: int, max_windows: int, whole: bool) -> dict:
    """One process, one file at a time: decode seconds (best of two; one run for ``whole``) and frames read, windows
    only or whole file then cut."""
    from genretag.audio.decoding import decode
    from genretag.audio.seeking import decode_windows
    from genretag.tagging.windows import cut_windows

    out = {}
    for path in paths:
        best, frames, seeked = float("inf"), 0, False
        for _ in range(1 if whole else 2):
            started = time.perf_counter()
            if whole:
                decoded = decode(path, sample_rate=sample_rate)
                cut_windows(decoded.waveform, clip_samples=clip_samples, max_windows=max_windows)
                frames = round(decoded.stats.duration_s * decoded.original_sample_rate)
            else:
                windows = decode_windows(path, sample_rate=sample_rate, clip_samples=clip_samples, max_windows=max_windows)
                frames, seeked = windows.frames_read, windows.seeked
            best = min(best, time.perf_counter() - started)
        out[path] = {"seconds": best, "frames_read": frames, "seeked": seeked}
    return out


def cost_table(files: list[Path], *, minutes: list[float], formats: list[str], model, windows: int, whole_minutes: list[float]) -> dict:
    """Cost per track against length, per format: windows only (and whole file then cut, for ``whole_minutes``)."""
    import soundfile as sf

    synthetic = {(length, fmt): files[i] for i, (length, fmt) in enumerate((m, f) for m in minutes for f in formats)}
    kw = {"sample_rate": model.sample_rate, "clip_samples": model.clip_samples, "max_windows": windows}
    seek = seconds_per_track(list(synthetic.values()), whole=False, **kw)
    whole = seconds_per_track([p for (m, _), p in synthetic.items() if m in whole_minutes], whole=True, **kw)
    rows, numbers = [], {}
    for (length, fmt), path in synthetic.items():
        s = seek[path]
        w = whole.get(path)
        rows.append((fmt, f"{length:g}", f"{s['seconds'] * 1000:.0f}", f"{s['frames_read'] / sf.info(path).frames:.3f}",
                     "yes" if s["seeked"] else "no (all of it)", f"{w['seconds'] * 1000:.0f}" if w else "-"))
        numbers[f"{fmt} {length:g} min"] = {"windows_ms": s["seconds"] * 1000, "frames_read": s["frames_read"], "seeked": s["seeked"],
                                            "whole_file_ms": w["seconds"] * 1000 if w else None}
    print(f"\ncost per track against length: one process, {windows} windows of {model.clip_samples} samples at {model.sample_rate} Hz "
          "(windows only: best of 2; whole file: one run)")
    print(table(rows, ("format", "minutes", "windows only ms", "share of file read", "seeked", "whole file then cut ms")))
    ratios = {}
    if 4 in minutes and 60 in minutes:
        for fmt in formats:
            ratios[fmt] = seek[synthetic[(60, fmt)]]["seconds"] / seek[synthetic[(4, fmt)]]["seconds"]
        print("60-min / 4-min cost: " + ", ".join(f"{fmt} {r:.2f}x" for fmt, r in ratios.items()) + " (must be < 3x)")
    return {"per_file": numbers, "ratio_60_vs_4_min": ratios}


def three_rates(files: list[Path], *, model, windows: int, batch_size: int, workers: int, silence: float, commit_every: int,
                work: Path) -> dict:
    """Decode-only, model-only and end-to-end tracks/s on the same files."""
    from genretag.tagging.run import tag_catalog
    from genretag.tagging.decode_pool import decode_files

    def decode_all(paths: list[Path]) -> list:
        return [w for _, _, w, _ in decode_files(((p, p) for p in paths), sample_rate=model.sample_rate,
                                                  clip_samples=model.clip_samples, max_windows=windows, workers=workers,
                                                  silence_rms_dbfs=silence)]

    decode_all(files[:1])  # warm-up: the forkserver imports the decoding code once per process
    started = time.perf_counter()
    decoded = decode_all(files)
    decode_seconds = time.perf_counter() - started
    scored = [w.waveforms for w in decoded if w is not None]
    all_windows = np.concatenate(scored)
    per_track = len(all_windows) / len(scored)
    model.predict(all_windows[:batch_size], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    model.predict(all_windows, batch_size=batch_size)
    model_seconds = time.perf_counter() - started
    windows_per_second = len(all_windows) / model_seconds
    del decoded, scored, all_windows

    listing = work / "tracks.csv"
    listing.write_text("track_id,path\n" + "".join(f"t{i:05d},{p}\n" for i, p in enumerate(files)))
    summary = tag_catalog(
        listing, model=model, database_url=f"sqlite:///{work / 'catalog.db'}", max_windows=windows, batch_size=batch_size,
        commit_every=commit_every, workers=workers, silence_rms_dbfs=silence,
    )
    decode_rate = len(files) / decode_seconds
    model_rate = windows_per_second / per_track
    e2e_rate = summary.tracks_per_second
    floor = min(decode_rate, model_rate)
    print(f"\n{len(files)} tracks, {per_track:.1f} windows/track, {summary.failed} failures; workers={workers} batch={batch_size} "
          f"max_windows={windows}; model on {model.provider}")
    print(table([
        ("decode only (decode_files, worker processes)", f"{decode_rate:.2f}", ""),
        ("model only (windows/s / windows per track)", f"{model_rate:.2f}", f"{windows_per_second:.1f} windows/s"),
        ("end to end (tag_catalog: hash, decode, score, write)", f"{e2e_rate:.2f}", f"{e2e_rate / floor:.2f} x the lower floor (target >= 0.8)"),
    ], ("rate", "tracks/s", "")))
    return {"tracks": len(files), "windows_per_track": per_track, "decode_tracks_per_second": decode_rate,
            "model_windows_per_second": windows_per_second, "model_tracks_per_second": model_rate,
            "end_to_end_tracks_per_second": e2e_rate, "end_to_end_vs_floor": e2e_rate / floor, "failed": summary.failed}


def peak_rss(command: list[str], *, env: dict[str, str], interval_s: float = 0.05) -> dict:
    """Run ``command``; sample the RSS of it and its descendants every ``interval_s``: peaks in MB."""
    import subprocess

    import psutil

    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(process.pid)
    main_peak = tree_peak = child_peak = 0
    while process.poll() is None:
        try:
            children = root.children(recursive=True)
            main = root.memory_info().rss
        except psutil.NoSuchProcess:
            break
        sizes = []
        for child in children:
            try:
                sizes.append(child.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        main_peak, child_peak = max(main_peak, main), max([child_peak, *sizes])
        tree_peak = max(tree_peak, main + sum(sizes))
        time.sleep(interval_s)
    output = process.communicate()[0]
    mb = 1024 * 1024
    return {"returncode": process.returncode, "main_mb": main_peak / mb, "largest_child_mb": child_peak / mb,
            "tree_mb": tree_peak / mb, "last_line": (output.strip().splitlines() or [""])[-1][:300]}


def memory_runs(*, model_path: Path, cache: Path, work: Path, hours: float, tracks: int, windows: int) -> dict:
    """Peak RSS of ``genretag tag-catalog`` (this checkout, a new SQLite catalog) over one long file, then many short tracks."""
    long_file = write_track(cache / "memory" / f"long-{hours:g}h.ogg", seconds=hours * 3600, seed=7)
    many = cache / "memory" / f"short-{tracks}"
    for index in range(tracks):  # 4-s mono FLAC at 22.05 kHz, each different (the catalog skips equal content)
        write_track(many / f"{index // 100:02d}" / f"track{index:05d}.flac", seconds=4.0, seed=10_000 + index, sample_rate=22050, channels=1)
    env = {**os.environ, "GENRETAG_ROOT": str(ROOT)}
    rows, numbers = [], {}
    for name, source in ((f"one {hours:g}-hour file (44.1 kHz stereo Ogg)", long_file.parent / "long"), (f"{tracks} tracks of 4 s", many)):
        if source.name == "long":  # a folder holding only the long file
            source.mkdir(exist_ok=True)
            link = source / long_file.name
            if not link.exists():
                link.symlink_to(long_file)
        database = f"sqlite:///{work / (source.name + '.db')}"
        started = time.perf_counter()
        measured = peak_rss([sys.executable, "-m", "genretag.cli", "tag-catalog", str(source), "--model", str(model_path),
                             "--database", database, "--max-windows", str(windows)], env=env)
        measured["seconds"] = time.perf_counter() - started
        rows.append((name, f"{measured['main_mb']:.0f}", f"{measured['largest_child_mb']:.0f}", f"{measured['tree_mb']:.0f}",
                     f"{measured['seconds']:.0f}", measured["returncode"]))
        numbers[name] = measured
        if measured["returncode"]:
            print(f"tag-catalog failed on {name}: {measured['last_line']}", file=sys.stderr)
    print(f"\npeak RSS of `genretag tag-catalog` (sampled every 50 ms), max_windows={windows}")
    print(table(rows, ("source", "tagging process MB", "largest child MB", "whole tree MB", "seconds", "exit")))
    return numbers


def run_e2e(args: argparse.Namespace) -> int:
    """Issue 14: cost per track against length; decode-only, model-only and end-to-end tracks/s on the same files; peak RSS."""
    from genretag.core.config import load_params, worker_count
    from genretag.onnx.session import open_model

    params = with_image_size(load_params(ROOT / "params.yaml"), args.image_size)
    work = Path(tempfile.mkdtemp(prefix="genretag-bench-"))
    cache = Path(args.cache)
    height, width = params.spectrogram.image_size
    kept = cache / f"paper-{args.experiment}-{height}x{width}.onnx"  # built once (TensorFlow is slow to start)
    if args.model:
        model_path, architecture = Path(args.model), Path(args.model).name
    elif kept.exists():
        model_path, architecture = kept, f"{args.experiment} {height}x{width} (untrained, {kept})"
    else:
        _, built, architecture = paper_models(params, experiment=args.experiment, work=work, version="bench")
        kept.parent.mkdir(parents=True, exist_ok=True)
        model_path = built.replace(kept)
        architecture = f"{architecture} {height}x{width} (untrained)"
    model = open_model(model_path)
    windows = params.score.max_windows if args.max_windows is None else args.max_windows
    batch_size = args.batch_size or params.score.batch_size
    workers = worker_count(args.workers)
    print(f"model {architecture} ({model_path.name}), {model.sample_rate} Hz, on {model.provider}; cpus usable: {machine()['cpus_usable']}")

    results: dict = {"architecture": architecture, "provider": model.provider, "max_windows": windows, "batch_size": batch_size,
                     "workers": workers}
    if args.folder:
        files = sorted(p for p in Path(args.folder).rglob("*") if p.is_file())
    elif args.tracks:  # a quick catalog of equal tracks (FLAC encodes fastest)
        files = [write_track(cache / f"tracks-{args.seconds:g}s" / f"track{i:05d}.flac", seconds=args.seconds, seed=1000 + i)
                 for i in range(args.tracks)]
    else:
        sample = Path(args.catalog_sample) if args.catalog_sample else CATALOG_SAMPLE
        files = catalog_files(cache, minutes=args.minutes, formats=args.formats, sample=sample if sample.is_dir() else None)
        results["catalog_sample"] = str(sample) if sample.is_dir() else None
        results["cost"] = cost_table(files, minutes=args.minutes, formats=args.formats, model=model, windows=windows,
                                     whole_minutes=args.whole_file_minutes)
    results["rates"] = three_rates(files, model=model, windows=windows, batch_size=batch_size, workers=workers,
                                   silence=params.validation.silence_rms_dbfs, commit_every=params.score.commit_every, work=work)
    if args.memory if args.memory is not None else not (args.folder or args.tracks):
        results["peak_rss"] = memory_runs(model_path=model_path, cache=cache, work=work, hours=args.memory_hours,
                                          tracks=args.memory_tracks, windows=windows)
    path = save("e2e", results)
    print(f"\nwrote {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from genretag.core.config import load_params

    params = with_image_size(load_params(ROOT / "params.yaml"), args.image_size)
    out = Path(args.out)
    _, wave_path, architecture = paper_models(params, experiment=args.experiment, work=out.parent / f".{out.stem}-parts", version="bench")
    wave_path.replace(out)
    print(f"wrote {out} ({architecture}, contract v2, {out.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_gpu(args: argparse.Namespace) -> int:
    """onnxruntime clips/s per batch size, against the CPU provider on the same machine and batches.

    Exit 3 unless CUDA really runs (``--allow-cpu``: dry run on a CPU machine).
    """
    from genretag.core.errors import ScoringError
    from genretag.onnx.session import CUDA, open_model

    try:
        model = open_model(args.model, require_gpu=not args.allow_cpu)
    except ScoringError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 3
    rng = np.random.default_rng(0)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    batches = {size: rng.normal(0.0, 0.1, (size, model.clip_samples)).astype(np.float32) for size in sizes}
    fast = {size: clips_per_second(lambda b: model.predict(b, batch_size=len(b)), [batches[size]],
                                   repeats=max(2, args.clips // size)) for size in sizes}
    fast_out = {size: model.predict(batches[size]).probabilities for size in sizes}
    # The CPU session is opened only after every CUDA run: with a CPU session beside it, the CUDA
    # session of the 128x128 model failed in cuDNN (MaxPool, CUDNN_STATUS_NOT_SUPPORTED) on an H100.
    baseline = open_model(args.model, prefer_gpu=False)
    print(f"provider {model.provider} (session providers {model.session.get_providers()}); baseline {baseline.provider}")
    rows, numbers = [], {}
    for size in sizes:
        cpu_cps = clips_per_second(lambda b: baseline.predict(b, batch_size=len(b)), [batches[size]], repeats=1)
        diff = float(np.abs(fast_out[size] - baseline.predict(batches[size]).probabilities).max())
        rows.append((size, f"{fast[size]:.0f}", f"{cpu_cps:.0f}", f"{fast[size] / cpu_cps:.1f}x", f"{diff:.1e}"))
        numbers[str(size)] = {"clips_per_second": fast[size], "cpu_clips_per_second": cpu_cps, "max_abs_diff_vs_cpu": diff}
    print(table(rows, ("batch", f"{model.provider} clips/s", "CPU clips/s", "ratio", "max |diff|")))
    path = save("gpu", {"provider": model.provider, "clip_samples": model.clip_samples, "model": str(args.model), "batches": numbers})
    print(f"wrote {path}")
    return 0 if model.provider == CUDA or args.allow_cpu else 3


def run_train(args: argparse.Namespace) -> int:
    """Seconds per step of a short Keras fit of the configured experiment on random images (last epoch)."""
    import keras

    from genretag.core.config import load_params

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
    contract = sub.add_parser("contract", help="(a) numpy + image-in vs (b) waveform-in ONNX clips/s, CPU")
    contract.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="square image sizes")
    contract.add_argument("--batch", type=int, default=64)
    contract.add_argument("--batches", type=int, default=4, help="batches of distinct clips")
    contract.add_argument("--repeats", type=int, default=3, help="rounds, (a) and (b) taking turns; medians reported")
    contract.add_argument("--experiment", default="exp8")
    e2e = sub.add_parser("e2e", help="cost per track against length, decode-only/model-only/end-to-end tracks/s, peak RSS (the default)")
    for p in (parser, e2e):
        p.add_argument("--folder", help="rates on this folder's files instead of the synthetic catalog (no cost table)")
        p.add_argument("--tracks", type=int, default=0, help="rates on this many synthetic FLAC tracks of --seconds instead (no cost table)")
        p.add_argument("--seconds", type=float, default=30.0)
        p.add_argument("--minutes", type=float, nargs="+", default=[1, 4, 10, 60], help="synthetic track lengths")
        p.add_argument("--formats", nargs="+", default=list(CATALOG_FORMATS), choices=CATALOG_FORMATS)
        p.add_argument("--catalog-sample", help=f"real recordings to add (default {CATALOG_SAMPLE}, when present)")
        p.add_argument("--cache", default=str(RESULTS / "catalog-audio"), help="where the synthetic audio is kept between runs")
        p.add_argument("--whole-file-minutes", type=float, nargs="*", default=[4, 60],
                       help="lengths also timed the old way: decode the whole file, then cut")
        p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                       help="peak RSS of genretag tag-catalog (default: with the synthetic length catalog only)")
        p.add_argument("--memory-hours", type=float, default=2.0, help="length of the long file of the memory run")
        p.add_argument("--memory-tracks", type=int, default=2000, help="short tracks of the memory run")
        p.add_argument("--model", help="a contract-v2 .onnx file (default: the paper CNN built here)")
        p.add_argument("--experiment", default="exp8")
        p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=[128, 128])
        p.add_argument("--max-windows", type=int, default=None, help="default: params score.max_windows")
        p.add_argument("--batch-size", type=int, default=0, help="scoring batch (default: params score.batch_size)")
        p.add_argument("--workers", type=int, default=0)
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
    return {"contract": run_contract, "e2e": run_e2e, "export-model": run_export, "gpu": run_gpu, "train": run_train}[mode](args)


if __name__ == "__main__":
    sys.exit(main())
