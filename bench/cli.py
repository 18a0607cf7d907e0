"""Time `genretag` commands as whole processes, as a user runs them (median of 5).

    python bench/cli.py [--repeat 5] [--tracks 100]

Builds its inputs in a temporary folder outside the repository (so the commands run without a
project): a 30-s WAV, a tiny contract-v2 ONNX model (waveform in; probabilities and embedding
out), an MLflow registry on SQLite with one version, and ``--tracks`` 30-s WAVs tagged once.
Then it times, each as a fresh ``python -m genretag.cli`` process:

- ``predict`` on one 30-s file, CPU, with ``--model PATH`` and with the registry's champion (target <= 5 s);
- ``registry list`` (target <= 3 s);
- ``registry fetch champion`` (the handoff bundle; target <= 5 s, as predict);
- a ``tag-catalog`` rerun over the already-tagged tracks, which has nothing to do (target <= 15 s).

Python's bytecode cache is on for the child processes (an installed package has one; this
environment sets PYTHONDONTWRITEBYTECODE), kept in the temporary folder, and one untimed warm-up
run of each command fills it. $PREFECT_API_URL is unset, as for a user without a server:
tag-catalog then runs its steps in-process, without Prefect.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

import genretag  # noqa: F401  - offline environment
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, ModelContract, write_contract

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 22050
CLIP_SAMPLES = 66150
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
MODEL_NAME = "genretag-cnn"
TARGETS_S = {"predict, one 30-s file, --model PATH": 5.0, "predict, one 30-s file, champion": 5.0, "registry list": 3.0,
             "registry fetch champion": 5.0, "tag-catalog no-op rerun": 15.0}


def tiny_model(path: Path) -> Path:
    """A contract-v2 ONNX graph: frame energy statistics -> Dense -> softmax (enough to time the CLI)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    frames, dim = 30, 16
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "frame_shape"], ["framed"]),
        helper.make_node("Mul", ["framed", "framed"], ["power"]),
        helper.make_node("ReduceMean", ["power"], ["energy"], axes=[2], keepdims=0),
        helper.make_node("MatMul", ["energy", "w_embed"], ["pre"]),
        helper.make_node("Tanh", ["pre"], [EMBEDDING_NAME]),
        helper.make_node("MatMul", [EMBEDDING_NAME, "w_out"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1, frames, CLIP_SAMPLES // frames], dtype=np.int64), "frame_shape"),
        numpy_helper.from_array(rng.normal(size=(frames, dim)).astype(np.float32), "w_embed"),
        numpy_helper.from_array(rng.normal(size=(dim, len(GENRES))).astype(np.float32), "w_out"),
    ]
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", CLIP_SAMPLES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", len(GENRES)]),
         helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", dim])], inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    contract = ModelContract(labels=GENRES, model_name=MODEL_NAME, model_version="bench-1", sample_rate=SAMPLE_RATE,
                             clip_samples=CLIP_SAMPLES, family="bench")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(write_contract(proto, contract), str(path))
    return path


def tone_file(path: Path, *, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.02 * rng.normal(size=t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return path


def registry_with_one_version(uri: str, model: Path) -> None:
    """An MLflow registry (SQLite) holding one version of MODEL_NAME whose source is ``model``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(MODEL_NAME, source=str(model.parent), tags={"genretag.decision": "champion"})
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)


def run(command: list[str], *, env: dict[str, str], cwd: Path, failures: dict[str, str]) -> float:
    """Seconds the whole process took; a non-zero exit is kept in ``failures`` (shown with the table)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "genretag.cli", *command], env=env, cwd=cwd,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        failures[command[0]] = f"exit {done.returncode}: {' / '.join(last)}"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tracks", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="genretag-bench-cli-") as tmp:
        work = Path(tmp)
        model = tiny_model(work / "model" / "model.onnx")
        song = tone_file(work / "song.wav", seconds=30.0, seed=1)
        for index in range(args.tracks):
            tone_file(work / "catalog" / f"track{index:03d}.wav", seconds=30.0, seed=100 + index)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONDONTWRITEBYTECODE", "PREFECT_API_URL")}
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            PYTHONPYCACHEPREFIX=str(work / "pycache"), PREFECT_HOME=str(work / "prefect"), MLFLOW_TRACKING_URI=uri,
            GENRETAG_CATALOG_URL=f"sqlite:///{work / 'catalog.db'}",
        )
        subprocess.run([sys.executable, "-c", f"import bench.cli as b, pathlib; b.registry_with_one_version({uri!r}, pathlib.Path({str(model)!r}))"],
                       env=env, cwd=REPO, check=True, capture_output=True)
        commands = {
            "predict, one 30-s file, --model PATH": ["predict", "--model", str(model), str(song)],
            "predict, one 30-s file, champion": ["predict", str(song)],
            "registry list": ["registry", "list"],
            "registry fetch champion": ["registry", "fetch", "champion", "--out", str(work / "handoff")],
            "tag-catalog no-op rerun": ["tag-catalog", str(work / "catalog"), "--model", str(model)],
        }
        failures: dict[str, str] = {}
        outside = work / "elsewhere"  # no params.yaml here or above: built-in defaults
        outside.mkdir()
        rows = []
        try:
            first = run(commands["tag-catalog no-op rerun"], env=env, cwd=outside, failures=failures)
            print(f"{args.tracks} tracks of 30 s; first tag-catalog run (untimed, tags them): "
                  f"{first:.1f} s", flush=True)
            for name, command in commands.items():
                run(command, env=env, cwd=outside, failures=failures)  # warm-up: bytecode cache
                times = [run(command, env=env, cwd=outside, failures=failures) for _ in range(args.repeat)]
                rows.append((name, statistics.median(times), min(times), max(times)))
                print(f"  {name}: {', '.join(f'{t:.2f}' for t in times)} s", flush=True)
        finally:
            subprocess.run([sys.executable, "-m", "genretag.cli", "server", "stop"], env=env, cwd=outside,
                           capture_output=True, check=False)  # in case a command started it
    print(f"\n| command | median of {args.repeat} (s) | min | max | target (s) |\n| --- | ---: | ---: | ---: | ---: |")
    for name, median, low, high in rows:
        print(f"| {name} | {median:.2f} | {low:.2f} | {high:.2f} | ≤ {TARGETS_S[name]:.0f} |")
    for command, reason in failures.items():
        print(f"\nnot a clean run: `genretag {command}` {reason}")


if __name__ == "__main__":
    main()
