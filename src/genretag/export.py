"""Keras -> ONNX export with its contract, a parity gate against Keras, and a model card.

Route: the Keras model is wrapped in a ``tf.function`` with the input signature
``TensorSpec([None, H, W, 3], float32, name="mel_image")`` that returns
``{"probabilities": float32 output}``, and ``tf2onnx.convert.from_function`` converts that
(``from_keras`` breaks on Keras 3 models; this route works for any Sequential or functional
model, called before or not, mixed precision included). The graph's input and output are then
checked (and renamed when needed) to :data:`genretag.contract.INPUT_NAME` / ``OUTPUT_NAME``
with a dynamic batch dimension ``N``.

Nothing is written unless the ONNX model agrees with Keras on every test image and on random
input: max |ONNX - Keras| <= ``export.parity_tolerance`` and the same argmax on every clip.

"Model version" in the contract is ``weights-<12 hex>``: a SHA-256 of the trained weights
(order, shapes and values). Identical weights give the same version whatever the export
run; the MLflow registry's version number is only known at registration and is recorded there
(version tags, models/registry.json). TensorFlow is imported lazily: the helpers used by the
registry (test images, sessions, accuracy) do not load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from PIL import Image

from genretag.atomic import atomic_open
from genretag.config import Layout, Params, preprocessing_spec
from genretag.contract import INPUT_NAME, OUTPUT_NAME, ModelContract, write_contract
from genretag.dataset import read_table
from genretag.errors import ExportError
from genretag.spectrogram import PreprocessingSpec, to_model_input

log = logging.getLogger(__name__)

BATCH_DIM = "N"
MODEL_CARD_NAME = "MODEL_CARD.md"
N_RANDOM = 16
RANDOM_SEED = 2021


@dataclass(frozen=True)
class TestImages:
    """The test split's clips as rendered by the spectrogram stage."""

    __test__ = False  # not a pytest test class, whatever its name

    images: np.ndarray  # uint8 (n, H, W, 3)
    genres: tuple[str, ...]  # true genre of each clip
    clip_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def fingerprint(self) -> str:
        """Hash of which clips (and labels) form the split: equal fingerprints, same test set."""
        digest = hashlib.sha256()
        for clip_id, genre in sorted(zip(self.clip_ids, self.genres)):
            digest.update(f"{clip_id}\t{genre}\n".encode())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX model reproduces Keras."""

    tolerance: float
    test_clips: int
    random_inputs: int
    max_abs_diff_test: float
    max_abs_diff_random: float
    argmax_mismatches: int  # clips whose argmax differs although Keras's top two are further apart than the tolerance
    near_ties: int  # clips whose Keras top-two gap is within the tolerance (argmax not compared)
    onnx_test_accuracy: float

    @property
    def max_abs_diff(self) -> float:
        return max(self.max_abs_diff_test, self.max_abs_diff_random)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.argmax_mismatches == 0


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    card_path: Path
    contract: ModelContract
    parity: ParityReport
    opset: int


# --------------------------------------------------------------------------- onnxruntime


def onnx_session(model: str | Path | bytes):
    """An onnxruntime session on the CPU (device selection belongs to ``genretag.scoring``)."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_predict(session, inputs: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Run ``session`` on float32 NHWC ``inputs`` in batches; returns (n, n_classes) float32."""
    input_name = session.get_inputs()[0].name
    outputs = [
        session.run([OUTPUT_NAME], {input_name: np.ascontiguousarray(inputs[start : start + batch_size])})[0]
        for start in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32) if outputs else np.empty((0, 0), np.float32)


def onnx_accuracy(model: str | Path | bytes, test: TestImages, *, labels: tuple[str, ...]) -> float:
    """Clip accuracy of an ONNX model on ``test``; predictions map through the model's own ``labels``."""
    if not len(test):
        raise ExportError("no test clips to score the model on")
    probabilities = onnx_predict(onnx_session(model), to_model_input(test.images))
    if probabilities.shape[1] != len(labels):
        raise ExportError(f"model gives {probabilities.shape[1]} outputs but its contract names {len(labels)} labels")
    predicted = np.asarray(labels)[probabilities.argmax(axis=1)]
    return float(np.mean(predicted == np.asarray(test.genres)))


# --------------------------------------------------------------------------- inputs and provenance


def load_test_images(paths: Layout, *, image_size: tuple[int, int]) -> TestImages:
    """The ``split == test`` rows of data/clips.csv, their PNGs loaded as uint8 RGB."""
    if not paths.clips.is_file():
        raise ExportError(f"{paths.clips}: no such file (run the split stage)")
    clips = read_table(paths.clips)
    missing = {"clip_id", "genre", "split", "image"} - set(clips.columns)
    if missing:
        raise ExportError(f"{paths.clips}: lacks column(s) {', '.join(sorted(missing))}")
    test = clips[clips["split"] == "test"]
    height, width = image_size
    images = np.empty((len(test), height, width, 3), dtype=np.uint8)
    for index, relative in enumerate(test["image"]):
        file = paths.root / relative
        try:
            with Image.open(file) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise ExportError(f"{file}: cannot read test image ({exc})") from exc
        if array.shape != (height, width, 3):
            raise ExportError(
                f"{file}: image is {array.shape[0]}x{array.shape[1]}, spectrogram.image_size asks for {height}x{width}"
            )
        images[index] = array
    return TestImages(images=images, genres=tuple(test["genre"]), clip_ids=tuple(test["clip_id"]))


def dvc_lock_md5(root: Path, *, stage: str, out: str) -> str | None:
    """The md5 DVC recorded in dvc.lock for output ``out`` of ``stage`` (None when unknown)."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    except yaml.YAMLError:
        return None
    for entry in (stages.get(stage) or {}).get("outs", []) or []:
        if isinstance(entry, dict) and entry.get("path") == out and entry.get("md5"):
            return str(entry["md5"])
    return None


def training_data_hash(paths: Layout) -> str:
    """``dvc-md5:<md5>`` of data/images from dvc.lock (spectrograms stage), else ``sha256:<data/clips.csv>``."""
    md5 = dvc_lock_md5(paths.root, stage="spectrograms", out="data/images")
    if md5:
        return f"dvc-md5:{md5}"
    if paths.clips.is_file():
        return f"sha256:{hashlib.sha256(paths.clips.read_bytes()).hexdigest()}"
    return "unknown"


DIRTY = "+dirty"  # suffix of a commit whose work tree had local changes


def git_commit(root: Path) -> str:
    """``git rev-parse HEAD`` of ``root``, with ``+dirty`` when tracked files differ from HEAD
    (``git status --porcelain --untracked-files=no``); "unknown" outside git or before the first commit."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=20, check=False
        )
        if done.returncode != 0 or len(done.stdout.strip()) < 7:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() + (DIRTY if status.stdout.strip() else "")


def read_metrics(path: Path) -> dict[str, float]:
    """Numeric entries of a metrics JSON file (nested keys joined with dots); {} when absent."""
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    return {key: value for key, value in flatten(raw).items() if isinstance(value, float)}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with dotted keys; numbers become float, lists JSON text."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    if isinstance(value, bool) or value is None:
        return {key: str(value).lower() if isinstance(value, bool) else "null"}
    if isinstance(value, int | float):
        return {key: float(value)}
    if isinstance(value, list | tuple):
        return {key: json.dumps(list(value))}
    return {key: str(value)}


def weights_version(model) -> str:
    """``weights-<12 hex>``: SHA-256 over every weight's position, shape and float32 bytes.

    Layer names are left out on purpose: Keras numbers them per process (``dense_3``), so the
    same weights saved and loaded again would otherwise get another version.
    """
    digest = hashlib.sha256()
    for index, variable in enumerate(model.weights):
        value = np.ascontiguousarray(np.asarray(variable.numpy(), dtype=np.float32))
        digest.update(f"{index}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return f"weights-{digest.hexdigest()[:12]}"


def build_contract(params: Params, paths: Layout, *, model_version: str) -> ModelContract:
    return ModelContract(
        labels=tuple(params.genres),
        preprocessing=preprocessing_spec(params),
        model_name=params.registry.model_name,
        model_version=model_version,
        training_data_hash=training_data_hash(paths),
        git_commit=git_commit(paths.root),
        test_metrics=read_metrics(paths.metrics_dir / "eval.json"),
    )


# --------------------------------------------------------------------------- conversion


def load_keras_model(path: Path):
    import keras

    if not path.is_file():
        raise ExportError(f"{path}: no such Keras model (run the train stage)")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - keras raises many types for a bad file
        raise ExportError(f"{path}: cannot load Keras model ({exc})") from exc


def keras_predict(model, inputs: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Keras's probabilities in true float32: TF32 (TensorFlow's default on Ampere and newer GPUs)
    is switched off for this process, or the reference itself would be off by ~1e-3."""
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)

    outputs = [
        np.asarray(keras.ops.convert_to_numpy(model(inputs[start : start + batch_size], training=False)), dtype=np.float32)
        for start in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outputs)


def convert_to_onnx(model, *, image_size: tuple[int, int], opset: int) -> onnx.ModelProto:
    """Keras model -> ONNX (tf2onnx.from_function), input ``mel_image`` [N,H,W,3], output ``probabilities``."""
    import tensorflow as tf
    import tf2onnx

    if not 13 <= opset <= 18:
        raise ExportError(f"export.opset {opset}: tf2onnx 1.17 converts opsets 13..18 only")
    height, width = image_size
    signature = [tf.TensorSpec([None, height, width, 3], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def serve(mel_image):
        return {OUTPUT_NAME: tf.cast(model(mel_image, training=False), tf.float32)}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    except Exception as exc:  # noqa: BLE001 - tf2onnx and TensorFlow raise anything
        raise ExportError(f"tf2onnx could not convert model {getattr(model, 'name', '?')!r}: {exc}") from exc
    return _stable_names(_normalise_io(proto))


def _stable_names(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the process-wide counters tf2onnx and TensorFlow put into names (``Reshape_shape__19``,
    ``__inference_serve_116``): the same model then gives a byte-identical file in any process."""
    graph = proto.graph
    if any(attribute.g.node or attribute.graphs for node in graph.node for attribute in node.attribute):
        return proto  # control flow with subgraphs: leave names alone
    graph.doc_string = ""

    def renamer() -> Callable[[str], str]:
        taken: dict[str, str] = {}
        counts: dict[str, int] = {}

        def rename(name: str) -> str:
            if name not in taken:
                base = re.sub(r"__\d+", "", name)
                counts[base] = counts.get(base, 0) + 1
                taken[name] = base if counts[base] == 1 else f"{base}__{counts[base]}"
            return taken[name]

        return rename

    tensor, node_name = renamer(), renamer()
    for value in (*graph.input, *graph.output):
        tensor(value.name)  # reserved, unchanged
    for initializer in graph.initializer:
        initializer.name = tensor(initializer.name)
    for node in graph.node:
        node.name = node_name(node.name)
        node.input[:] = [tensor(name) if name else name for name in node.input]
        node.output[:] = [tensor(name) for name in node.output]
    for value in graph.value_info:
        value.name = tensor(value.name)
    return proto


def _normalise_io(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Exactly one input ``mel_image`` and one output ``probabilities``, batch dimension named ``N``."""
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(
            f"converted graph has inputs {[v.name for v in inputs]} and outputs {[v.name for v in graph.output]}; "
            "expected one of each"
        )
    for value, wanted in ((inputs[0], INPUT_NAME), (graph.output[0], OUTPUT_NAME)):
        if value.name != wanted:
            _rename_tensor(graph, value.name, wanted)
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
    return proto


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new


# --------------------------------------------------------------------------- parity gate


def check_parity(
    keras_model,
    onnx_bytes: bytes,
    *,
    test: TestImages,
    labels: tuple[str, ...],
    tolerance: float,
    n_random: int = N_RANDOM,
    seed: int = RANDOM_SEED,
) -> ParityReport:
    """Compare ONNX with Keras on the test images and on random input; raise ExportError on any gap."""
    if not len(test):
        raise ExportError("the test split holds no clips: nothing to check the ONNX export against")
    height, width = test.images.shape[1:3]
    rng = np.random.default_rng(seed)
    random = np.concatenate(
        [
            rng.random((n_random, height, width, 3), dtype=np.float32),
            np.zeros((1, height, width, 3), np.float32),
            np.ones((1, height, width, 3), np.float32),
        ]
    )
    test_inputs = to_model_input(test.images)
    session = onnx_session(onnx_bytes)
    keras_test, keras_random = keras_predict(keras_model, test_inputs), keras_predict(keras_model, random)
    _check_probabilities(keras_test, n_classes=len(labels))
    # Odd batch sizes on purpose: the batch dimension must really be dynamic.
    onnx_test, onnx_random = onnx_predict(session, test_inputs, batch_size=37), onnx_predict(session, random, batch_size=7)

    mismatches = ties = 0
    for reference, candidate in ((keras_test, onnx_test), (keras_random, onnx_random)):
        top_two = np.sort(reference, axis=1)[:, -2:]
        tied = (top_two[:, 1] - top_two[:, 0]) <= tolerance
        ties += int(tied.sum())
        mismatches += int(((reference.argmax(axis=1) != candidate.argmax(axis=1)) & ~tied).sum())
    predicted = np.asarray(labels)[onnx_test.argmax(axis=1)]
    report = ParityReport(
        tolerance=tolerance,
        test_clips=len(test),
        random_inputs=len(random),
        max_abs_diff_test=float(np.abs(onnx_test - keras_test).max()),
        max_abs_diff_random=float(np.abs(onnx_random - keras_random).max()),
        argmax_mismatches=mismatches,
        near_ties=ties,
        onnx_test_accuracy=float(np.mean(predicted == np.asarray(test.genres))),
    )
    if not report.passed:
        problems = [
            f"max |diff| {diff:.3g} on {count} {what}"
            for diff, count, what in (
                (report.max_abs_diff_test, report.test_clips, "test clips"),
                (report.max_abs_diff_random, report.random_inputs, "random inputs"),
            )
            if not diff <= tolerance
        ]
        if mismatches:
            problems.append(f"argmax differs on {mismatches} input(s)")
        raise ExportError(
            f"ONNX export does not match Keras (export.parity_tolerance {tolerance:g}): {'; '.join(problems)}. "
            "Nothing written."
        )
    return report


def _check_probabilities(outputs: np.ndarray, *, n_classes: int) -> None:
    if outputs.ndim != 2 or outputs.shape[1] != n_classes:
        raise ExportError(f"model output has shape {outputs.shape}, expected (N, {n_classes}) for params.genres")
    if outputs.min() < -1e-6 or not np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        raise ExportError(
            "model output is not a probability distribution (rows must be >= 0 and sum to 1): "
            "the last layer must be a softmax"
        )


# --------------------------------------------------------------------------- the stage


def export_model(
    params: Params,
    paths: Layout,
    *,
    keras_model=None,
    onnx_path: Path | None = None,
    card_path: Path | None = None,
) -> ExportResult:
    """Export models/model.keras (or ``keras_model``) to models/model.onnx + models/MODEL_CARD.md.

    Everything is checked in memory first; on any failure an ExportError is raised and no
    file is written or replaced.
    """
    onnx_path = onnx_path or paths.onnx_model
    card_path = card_path or onnx_path.with_name(MODEL_CARD_NAME)
    model = keras_model if keras_model is not None else load_keras_model(paths.keras_model)
    spec = preprocessing_spec(params)
    test = load_test_images(paths, image_size=spec.image_size)

    proto = convert_to_onnx(model, image_size=spec.image_size, opset=params.export.opset)
    contract = build_contract(params, paths, model_version=weights_version(model))
    write_contract(proto, contract)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"converted ONNX model is invalid: {exc}") from exc
    onnx_bytes = proto.SerializeToString()

    parity = check_parity(
        model, onnx_bytes, test=test, labels=contract.labels, tolerance=params.export.parity_tolerance
    )
    recorded = contract.test_metrics.get("test_accuracy")
    if recorded is not None and abs(recorded - parity.onnx_test_accuracy) > 0.01:
        log.warning(
            "metrics/eval.json says test_accuracy %.4f but the ONNX model scores %.4f on the %d test clips: "
            "is eval.json stale?", recorded, parity.onnx_test_accuracy, parity.test_clips,
        )
    card = render_model_card(params, contract, parity=parity, opset=params.export.opset, test=test,
                             counts=split_counts(paths.clips))
    with atomic_open(onnx_path, "wb") as onnx_file, atomic_open(card_path, "w", encoding="utf-8") as card_file:
        onnx_file.write(onnx_bytes)
        card_file.write(card)
    log.info(
        "exported %s (%s) to %s: parity max |diff| %.3g test / %.3g random",
        contract.model_name, contract.model_version, onnx_path, parity.max_abs_diff_test, parity.max_abs_diff_random,
    )
    return ExportResult(onnx_path=onnx_path, card_path=card_path, contract=contract, parity=parity, opset=params.export.opset)


# --------------------------------------------------------------------------- model card

_GTZAN_LIMITS = """\
- **GTZAN's known faults** (Sturm 2013, "The GTZAN dataset: its contents, its faults, their
  effects on evaluation"): exact and near duplicates (about 7 % of excerpts), repeated artists
  within a genre (a classifier can learn the artist, not the genre), mislabelled excerpts,
  recordings with distortion and clipping, and one unreadable file (jazz.00054) in common copies.
  GTZAN as a whole is 1,000 excerpts of 30 s, mostly 1990s-2000s Western radio: not a sample of any catalog.
- **Leaky clip split in the paper**: the source paper cuts every track into 10 clips and splits
  the *clips* at random, so clips of the same track land in training and test. Its test accuracy
  measures recognising tracks already heard, not genres. genretag splits by track by default
  (`split.method: track`); `filtered` uses the artist-filtered split of Kereliuk et al. (2015)."""


def split_counts(clips_csv: Path) -> dict[str, tuple[int, int]]:
    """Split -> (tracks, clips) counted in data/clips.csv (columns ``split``, ``track_id``); {} when absent."""
    if not clips_csv.is_file():
        return {}
    clips = read_table(clips_csv)
    grouped = clips.groupby("split", sort=False)["track_id"]
    return {str(split): (int(ids.nunique()), int(len(ids))) for split, ids in grouped}


def _counts_line(params: Params, counts: Mapping[str, tuple[int, int]]) -> str:
    """The real amount of data per split, e.g. "train 48 tracks / 472 clips; ..." (clips of 3 s)."""
    if not counts:
        return f"- Clips: at most {params.audio.clips_per_track} x {params.audio.clip_seconds:g} s per track (data/clips.csv not found)"
    order = {"train": 0, "validation": 1, "test": 2}
    parts = [f"{split} {tracks:,} tracks / {clips:,} clips" for split, (tracks, clips)
             in sorted(counts.items(), key=lambda item: order.get(item[0], 3))]
    total_tracks = sum(tracks for tracks, _ in counts.values())
    total_clips = sum(clips for _, clips in counts.values())
    return (f"- Data: {total_tracks:,} tracks cut into {total_clips:,} clips of {params.audio.clip_seconds:g} s "
            f"(at most {params.audio.clips_per_track} per track): {'; '.join(parts)}")


def _data_section(params: Params, test: TestImages, counts: Mapping[str, tuple[int, int]]) -> str:
    source = params.ingest.source
    split_note = {
        "track": "split by track (every clip of a track lands in one split)",
        "clip": "**split by clip, as in the paper: LEAKY** - clips of one track are in training and test, "
        "so the test metrics below are optimistic",
        "filtered": "artist-filtered split (Kereliuk et al. 2015)",
    }[params.split.method]
    if source == "demo":
        corpus = (
            "**SYNTHETIC DEMO CORPUS - not music.** The training data were synthesised by `genretag.demo` "
            f"({params.ingest.demo_tracks_per_genre} tracks per genre, seed {params.ingest.demo_seed}): each "
            "\"genre\" is a hand-written synthesis recipe (drums, bass, chords, melody, timbre), so that the "
            "pipeline can run end to end anywhere. A model that learns them has learnt the recipes. The metrics "
            "below measure how well it separates these synthetic recipes. **They say nothing about accuracy on "
            "real music; do not use this model to tag a real catalog.** Retrain on real data first "
            "(`ingest.source`; the README shows the paper's full configuration)."
        )
    elif source == "tfds":
        corpus = "GTZAN (via TensorFlow Datasets `gtzan`), 22,050 Hz excerpts of 30 s."
    else:
        corpus = f"A local folder in GTZAN layout (`ingest.source: {source}`), one sub-folder per genre."
    return (
        f"{corpus}\n\n"
        f"{_counts_line(params, counts)}; {split_note}.\n"
        f"- Test split used for the metrics and the parity check: {len(test)} clips "
        f"(fingerprint `{test.fingerprint()}`).\n"
    )


def render_model_card(
    params: Params, contract: ModelContract, *, parity: ParityReport, opset: int, test: TestImages,
    counts: Mapping[str, tuple[int, int]] | None = None,
) -> str:
    """The MODEL_CARD.md shipped with every exported model; ``counts``: :func:`split_counts`."""
    spec: PreprocessingSpec = contract.preprocessing
    height, width = spec.image_size
    demo = params.ingest.source == "demo"
    metrics_rows = "\n".join(
        f"| {key} | {int(value) if key.startswith('n_') and value.is_integer() else f'{value:.4f}'} |"
        for key, value in sorted(contract.test_metrics.items())
    )
    metrics_rows = metrics_rows or "| (metrics/eval.json was empty or absent) | |"
    caveat = (
        "\n> These numbers come from the synthetic demo corpus and do not estimate accuracy on music.\n"
        if demo
        else (
            "\n> Clip split (leaky): these numbers are optimistic.\n" if params.split.method == "clip" else ""
        )
    )
    labels = ", ".join(f"{index}: {label}" for index, label in enumerate(contract.labels))
    preprocessing = json.dumps(asdict(spec), indent=2, sort_keys=True)
    return f"""# Model card: {contract.model_name}

| | |
| --- | --- |
| model name | `{contract.model_name}` |
| model version | `{contract.model_version}` (SHA-256 of the trained weights; the MLflow registry assigns its own version number at registration, see `genretag registry list`) |
| architecture | `{params.train.experiment}` (Keras CNN), exported to ONNX opset {opset} with tf2onnx |
| training data hash | `{contract.training_data_hash}` |
| git commit | `{contract.git_commit}` |
{"| **data** | **synthetic demo corpus - not real music** |" + chr(10) if demo else ""}
## Intended use

Suggest one of {len(contract.labels)} genre tags ({", ".join(contract.labels)}) for tracks of a music
catalog, to help editors search, browse and curate. A track is cut into {spec.clip_seconds:g}-s windows;
the window probabilities are averaged. The tag is a suggestion for people to review.

Not intended for: genres outside the label set (the model always answers with one of its labels;
there is no "other" class), non-Western or regional styles, speech, sound effects or mixed content,
decisions about royalties, rights, artists or playlists without human review.

## Data

{_data_section(params, test, counts or {})}
## Metrics (test split)

| metric | value |
| --- | --- |
{metrics_rows}
| ONNX clip accuracy (re-computed at export) | {parity.onnx_test_accuracy:.4f} |
{caveat}
## ONNX parity with Keras

max |ONNX - Keras| = {parity.max_abs_diff_test:.3g} on {parity.test_clips} test clips and
{parity.max_abs_diff_random:.3g} on {parity.random_inputs} random inputs (tolerance {parity.tolerance:g});
argmax identical on every input ({parity.near_ties} near-tie(s) within the tolerance not compared).

## Limitations

- {"Trained on synthetic signals: it has never heard music. " if demo else ""}Genre is fuzzy and
  culturally defined; one label per track hides crossover music.
- Sees {spec.clip_seconds:g}-s windows at {spec.sample_rate} Hz: no long-range structure, nothing above
  {spec.upper_frequency:g} Hz. Other rates are resampled first.
- Probabilities are not calibrated; a high value is not a confidence guarantee.
{_GTZAN_LIMITS}

## ONNX contract

- input `{INPUT_NAME}`: float32 [N, {height}, {width}, 3], NHWC RGB in [0, 1] (uint8 image / 255), any batch size N.
- output `{OUTPUT_NAME}`: float32 [N, {len(contract.labels)}], softmax probabilities in label order.
- labels (index: genre): {labels}
- `metadata_props` (read with `genretag.contract.read_contract` or
  `session.get_modelmeta().custom_metadata_map`): `genretag.labels`, `genretag.preprocessing`,
  `genretag.model_name`, `genretag.model_version`, `genretag.training_data_hash`,
  `genretag.git_commit`, `genretag.test_metrics`.
- preprocessing (implemented once, in `genretag/spectrogram.py`, shipped verbatim as
  `genretag_spectrogram.py` by `genretag registry fetch`; never re-implement it):

```json
{preprocessing}
```

## How to call it

`genretag registry fetch champion --out DIR` writes `model.onnx`, `labels.json`,
`preprocessing.json`, `genretag_spectrogram.py` and `genretag_reference.py` (needs only numpy,
soundfile, Pillow and onnxruntime): `python DIR/genretag_reference.py track.wav` prints the top 3.
In code:

```python
import json
import numpy as np
import onnxruntime as ort
import soundfile as sf
import genretag_spectrogram as spectrogram  # the shipped copy of genretag/spectrogram.py

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
labels = json.loads(meta["genretag.labels"])
spec = spectrogram.PreprocessingSpec.from_json(meta["genretag.preprocessing"])

samples, rate = sf.read("track.wav", dtype="float32", always_2d=True)
mono = samples.mean(axis=1)  # must be at spec.sample_rate: genretag_reference.resample() otherwise
images = spectrogram.waveform_to_images(mono, spec)  # one image per whole {spec.clip_seconds:g}-s window
probabilities = session.run(["{OUTPUT_NAME}"], {{"{INPUT_NAME}": spectrogram.to_model_input(images)}})[0].mean(axis=0)
for index in np.argsort(probabilities)[::-1][:3]:
    print(labels[index], round(float(probabilities[index]), 3))
```
"""
