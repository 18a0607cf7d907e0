"""Contract-v2 export: a model -> one ONNX graph (waveform in; probabilities and embedding out),
gated on parity with the framework's own forward pass, with its contract and a model card.

Generic route (every family): :func:`export_candidate` takes anything with ``to_onnx()`` (the
contract-v2 graph) and ``predict(waveforms) -> Prediction`` (the framework reference), runs both
on the test clips and on :func:`synthetic_clips` (music, noise, silence, clipping), and writes the
ONNX file (and card) only when the top-1 class agrees on every clip (reference top-two gaps under
:data:`TIE_GAP` excepted and counted) and max |probability difference| <= the tolerance;
otherwise :class:`~genretag.errors.ExportError` and nothing is written.

Every family goes this one way (the DVC ``candidate-<id>`` stage calls it through
:func:`genretag.train.export_trained_candidate`); how a family builds its graph is the family's
business (e.g. :mod:`genretag.families.keras_images` for the paper's CNNs). This module imports
no framework: the registry's helpers (sessions, provenance) load neither TensorFlow nor scikit-learn.

int8 (any family, :func:`export_int8`): the exported float32 graph's network nodes (the
``network/`` part that :func:`genretag.graph.compose` names) are statically quantised with
``onnxruntime.quantization.quantize_static``, calibrated on training clips fed as waveforms; the
front end (STFT, mel, dB, image) and the final Softmax stay float32. The result is its own
candidate with its own version (``<float32 version>-int8``, metadata ``genretag.quantization``
int8, ``genretag.derived_from`` the float32 version); the registry gate decides whether it serves.

Calibration (any family, :func:`calibrate_sealed`, inside :func:`export_candidate` once parity has
passed): a temperature ``T`` fitted on the validation clips' ONNX probabilities
(:mod:`genretag.calibration`, Guo et al. 2017) is appended to the graph as nodes named
``calibration/...``, so that ``probabilities`` = Softmax(Log(Max(p, floor)) / T); the embedding and the
top-1 class do not change, and the record (T, clips, ECE before/after) goes into ``genretag.calibration``.
The int8 model is quantised from that calibrated graph (its ``calibration/`` nodes stay float32), so it
carries the same T.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import yaml

from genretag.core.atomic import atomic_open
from genretag.evaluation.calibration import ECE_BINS, PROBABILITY_FLOOR, Calibration, calibrate, temperature_scaled
from genretag.core.config import ExportParams, Layout, Params
from genretag.onnx.contract import (
    EMBEDDING_NAME,
    INPUT_NAME,
    INT8,
    OUTPUT_NAME,
    ModelContract,
    read_contract,
    require_v2,
    write_contract,
)
from genretag.data.dataset import read_table
from genretag.data.demo import synthesize_track
from genretag.core.errors import ExportError
from genretag.onnx.contract import Prediction
from genretag.onnx.session import cpu_session, predict_waveforms

log = logging.getLogger(__name__)

BATCH_DIM = "N"
MODEL_CARD_NAME = "MODEL_CARD.md"
RANDOM_SEED = 2021
DEFAULT_TOLERANCE = 1e-3  # issue 10: max |probability difference| of the ONNX graph vs the framework
TIE_GAP = 1e-6  # reference top-two gap below which the top-1 class is a tie and not compared
NETWORK_PREFIX = "network/"  # genretag.graph.compose's prefix on the network's nodes
INT8_SUFFIX = "-int8"  # model version (and candidate id) of the int8 model of a float32 one
INT8_DIR = "int8"  # models/candidates/<id>/int8/model.onnx: inside the candidate's DVC output
QUANT_FORMATS = ("qoperator", "qdq")
NOT_QUANTIZED = ("Softmax",)  # the probabilities keep float resolution (a uint8 softmax steps by 1/255)
CALIBRATION_PREFIX = "calibration/"  # names of the nodes and initializers that temperature scaling appends
CALIBRATION_TOLERANCE = 1e-5  # max |calibrated graph - numpy temperature_scaled| checked before writing (float32 ops)
DEFAULT_TEMPERATURE_MIN_CLIPS = ExportParams().temperature_min_clips  # the built-in default of params export.temperature_min_clips
SYNTHETIC_KINDS: tuple[str, ...] = ("music-rock", "music-jazz", "music-classical", "noise", "silence", "clipping", "quiet-music")


@dataclass(frozen=True)
class TestClips:
    """One split's labelled clips as waveforms at one sample rate (the test split for parity, the
    validation split for calibration)."""

    __test__ = False  # not a pytest test class, whatever its name

    waveforms: np.ndarray  # float32 (n, S)
    genres: tuple[str, ...]  # true genre of each clip
    clip_ids: tuple[str, ...]
    sample_rate: int

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
    """How closely the ONNX graph reproduces the framework on the same waveforms."""

    tolerance: float
    test_clips: int
    synthetic_clips: int
    max_abs_diff_test: float
    max_abs_diff_synthetic: float
    max_abs_diff_embedding: float  # reported, not gated (embeddings are not probabilities)
    top1_mismatches: int
    near_ties: int  # clips whose reference top-two gap is under TIE_GAP (top-1 not compared)
    onnx_test_accuracy: float

    @property
    def max_abs_diff(self) -> float:
        return max(self.max_abs_diff_test, self.max_abs_diff_synthetic)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.top1_mismatches == 0


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    card_path: Path | None
    contract: ModelContract
    parity: ParityReport
    calibration: Calibration


class Exportable(Protocol):
    """What :func:`export_candidate` needs of a model (every :class:`genretag.families.Family` has it)."""

    def to_onnx(self) -> onnx.ModelProto:
        """The contract-v2 graph, without metadata."""

    def predict(self, waveforms: np.ndarray) -> Prediction:
        """The framework's forward pass on float32 [n, S]."""


# --------------------------------------------------------------------------- onnxruntime


# --------------------------------------------------------------------------- inputs and provenance


def synthetic_clips(*, sample_rate: int, clip_samples: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """float32 (len(SYNTHETIC_KINDS), clip_samples): real-looking parity inputs beside the test clips.

    Synthetic music (genretag.demo's rock, jazz, classical), white noise, silence, a sine clipped
    hard at full scale, and music 60 dB down: the inputs where a front end's dB floor, max
    reference and colour table are most likely to part from the reference.
    """
    seconds = clip_samples / sample_rate
    t = np.arange(clip_samples) / sample_rate
    music = [
        synthesize_track(genre, index=0, seed=seed, sample_rate=sample_rate, duration_s=seconds)[:clip_samples]
        for genre in ("rock", "jazz", "classical")
    ]
    noise = np.random.default_rng(seed).standard_normal(clip_samples) * 0.3
    clipping = np.clip(3.0 * np.sin(2 * np.pi * 110.0 * t), -1.0, 1.0)
    return np.stack([*music, noise, np.zeros(clip_samples), clipping, music[0] * 1e-3]).astype(np.float32)


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
    """What a model was trained on: ``dvc-md5:<md5 of data/raw>`` (the ingest stage's output in dvc.lock)
    and ``clips-sha256:<16 hex of data/clips.csv>`` (which clips, which split), joined by ``+``;
    a part that is unknown is left out, "unknown" when both are."""
    parts = []
    md5 = dvc_lock_md5(paths.root, stage="ingest", out="data/raw")
    if md5:
        parts.append(f"dvc-md5:{md5}")
    if paths.clips.is_file():
        parts.append(f"clips-sha256:{hashlib.sha256(paths.clips.read_bytes()).hexdigest()[:16]}")
    return "+".join(parts) or "unknown"


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


# --------------------------------------------------------------------------- parity gate


def check_parity(
    candidate: Exportable,
    onnx_bytes: bytes,
    *,
    test: TestClips,
    labels: tuple[str, ...],
    tolerance: float = DEFAULT_TOLERANCE,
    synthetic: np.ndarray | None = None,
) -> ParityReport:
    """Compare the ONNX graph with ``candidate.predict`` on the test clips and ``synthetic`` clips
    (default :func:`synthetic_clips`); raise ExportError naming every gap."""
    if not len(test):
        raise ExportError("the test split holds no clips: nothing to check the ONNX export against")
    if synthetic is None:
        synthetic = synthetic_clips(sample_rate=test.sample_rate, clip_samples=test.waveforms.shape[1])
    session = cpu_session(onnx_bytes)
    reference_test, reference_synthetic = candidate.predict(test.waveforms), candidate.predict(synthetic)
    _check_probabilities(reference_test.probabilities, n_classes=len(labels))
    # Odd batch sizes on purpose: the batch dimension must really be dynamic.
    onnx_test, onnx_synthetic = predict_waveforms(session, test.waveforms, batch_size=37), predict_waveforms(session, synthetic, batch_size=5)

    mismatches = ties = 0
    for reference, candidate_out in ((reference_test, onnx_test), (reference_synthetic, onnx_synthetic)):
        top_two = np.sort(reference.probabilities, axis=1)[:, -2:]
        tied = (top_two[:, 1] - top_two[:, 0]) < TIE_GAP
        ties += int(tied.sum())
        mismatches += int(((reference.probabilities.argmax(axis=1) != candidate_out.probabilities.argmax(axis=1)) & ~tied).sum())
    predicted = np.asarray(labels)[onnx_test.probabilities.argmax(axis=1)]
    embedding_gap = max(
        float(np.abs(o.embedding - r.embedding).max()) if o.embedding.shape == r.embedding.shape else float("inf")
        for o, r in ((onnx_test, reference_test), (onnx_synthetic, reference_synthetic))
    )
    report = ParityReport(
        tolerance=tolerance,
        test_clips=len(test),
        synthetic_clips=len(synthetic),
        max_abs_diff_test=float(np.abs(onnx_test.probabilities - reference_test.probabilities).max()),
        max_abs_diff_synthetic=float(np.abs(onnx_synthetic.probabilities - reference_synthetic.probabilities).max()),
        max_abs_diff_embedding=embedding_gap,
        top1_mismatches=mismatches,
        near_ties=ties,
        onnx_test_accuracy=float(np.mean(predicted == np.asarray(test.genres))),
    )
    if not report.passed:
        problems = [
            f"max |diff| {diff:.3g} on {count} {what}"
            for diff, count, what in (
                (report.max_abs_diff_test, report.test_clips, "test clips"),
                (report.max_abs_diff_synthetic, report.synthetic_clips, "synthetic clips"),
            )
            if not diff <= tolerance
        ]
        if mismatches:
            problems.append(f"top-1 class differs on {mismatches} clip(s)")
        raise ExportError(
            f"ONNX export does not match the framework (tolerance {tolerance:g}): {'; '.join(problems)}. Nothing written."
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


def _sealed(proto: onnx.ModelProto, contract: ModelContract, *, what: str) -> bytes:
    """``proto`` checked as contract v2, with ``contract`` in its metadata, through the ONNX checker, serialised.

    Raises ExportError naming ``what`` model failed (e.g. "converted", "quantised").
    """
    _check_v2_io(proto, clip_samples=contract.clip_samples)
    write_contract(proto, contract)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{what} ONNX model is invalid: {exc}") from exc
    return proto.SerializeToString()


def export_candidate(
    candidate: Exportable,
    *,
    contract: ModelContract,
    onnx_path: Path,
    test: TestClips,
    tolerance: float = DEFAULT_TOLERANCE,
    synthetic: np.ndarray | None = None,
    validation: TestClips | None = None,
    temperature_min_clips: int = DEFAULT_TEMPERATURE_MIN_CLIPS,
    card: Callable[[ParityReport, Calibration], str] | None = None,
    card_path: Path | None = None,
) -> ExportResult:
    """Convert ``candidate``, stamp ``contract``, gate on parity, calibrate on the ``validation`` clips
    (:func:`calibrate_sealed`; None: no clips, T = 1), then write ``onnx_path`` (and the ``card`` text
    at ``card_path``, default MODEL_CARD.md beside it) atomically.

    Raises ExportError, writing nothing, when the graph is not contract v2 (input ``waveform``
    [N, contract.clip_samples], outputs ``probabilities`` [N, K] and ``embedding``), fails the
    ONNX checker, fails :func:`check_parity`, or its calibrated output parts from numpy's.
    """
    onnx_bytes = _sealed(candidate.to_onnx(), contract, what="converted")
    parity = check_parity(candidate, onnx_bytes, test=test, labels=contract.labels, tolerance=tolerance, synthetic=synthetic)
    onnx_bytes, contract, calibration = calibrate_sealed(onnx_bytes, contract, validation=validation, test=test,
                                                         min_clips=temperature_min_clips)
    card_path = (card_path or onnx_path.with_name(MODEL_CARD_NAME)) if card else None
    card_text = card(parity, calibration) if card else ""
    with atomic_open(onnx_path, "wb") as onnx_file, (
        atomic_open(card_path, "w", encoding="utf-8") if card_path else contextlib.nullcontext()
    ) as card_file:
        onnx_file.write(onnx_bytes)
        if card_file:
            card_file.write(card_text)
    log.info(
        "exported %s (%s) to %s: parity max |diff| %.3g test / %.3g synthetic",
        contract.model_name, contract.model_version, onnx_path, parity.max_abs_diff_test, parity.max_abs_diff_synthetic,
    )
    return ExportResult(onnx_path=onnx_path, card_path=card_path, contract=contract, parity=parity, calibration=calibration)


# --------------------------------------------------------------------------- calibration


def append_temperature(proto: onnx.ModelProto, *, temperature: float) -> onnx.ModelProto:
    """A copy of contract-v2 ``proto`` whose ``probabilities`` output is
    Softmax(Log(Max(p, PROBABILITY_FLOOR)) / ``temperature``, axis 1), p the graph's own float32 [N, K]
    probabilities (renamed ``calibration/uncalibrated``): :func:`genretag.calibration.temperature_scaled`
    in the graph. Nodes and initializers are named :data:`CALIBRATION_PREFIX` ...; the ``embedding``
    output is untouched. Raises ExportError when no node produces ``probabilities``.
    """
    scaled = onnx.ModelProto()
    scaled.CopyFrom(proto)
    graph, raw = scaled.graph, f"{CALIBRATION_PREFIX}uncalibrated"
    if not any(OUTPUT_NAME in node.output for node in graph.node):
        raise ExportError(f"graph {graph.name!r}: no node produces {OUTPUT_NAME!r}, nothing to calibrate")
    for node in graph.node:
        for names in (node.input, node.output):
            for index, name in enumerate(names):
                if name == OUTPUT_NAME:
                    names[index] = raw
    for info in graph.value_info:
        if info.name == OUTPUT_NAME:
            info.name = raw
    floor, divisor = f"{CALIBRATION_PREFIX}floor", f"{CALIBRATION_PREFIX}temperature"
    graph.initializer.extend([
        onnx.numpy_helper.from_array(np.array(PROBABILITY_FLOOR, dtype=np.float32), floor),
        onnx.numpy_helper.from_array(np.array(temperature, dtype=np.float32), divisor),
    ])
    floored, logs, divided = (f"{CALIBRATION_PREFIX}{what}" for what in ("floored", "log", "scaled"))
    graph.node.extend([
        onnx.helper.make_node("Max", [raw, floor], [floored], name=floored),
        onnx.helper.make_node("Log", [floored], [logs], name=logs),
        onnx.helper.make_node("Div", [logs, divisor], [divided], name=divided),
        onnx.helper.make_node("Softmax", [divided], [OUTPUT_NAME], name=f"{CALIBRATION_PREFIX}softmax", axis=1),
    ])
    return scaled


def _clip_probabilities(session, clips: TestClips | None, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The graph's probabilities float32 [n, K] on ``clips`` and their label indices int64 [n] (n = 0 for None)."""
    if clips is None or not len(clips):
        return np.zeros((0, len(labels)), np.float32), np.zeros(0, np.int64)
    truth = np.array([labels.index(genre) for genre in clips.genres], dtype=np.int64)
    return predict_waveforms(session, clips.waveforms).probabilities, truth


def calibrate_sealed(
    onnx_bytes: bytes, contract: ModelContract, *, validation: TestClips | None, test: TestClips,
    min_clips: int = DEFAULT_TEMPERATURE_MIN_CLIPS, bins: int = ECE_BINS,
) -> tuple[bytes, ModelContract, Calibration]:
    """Temperature scaling of a sealed, parity-checked contract-v2 graph: T fitted on its probabilities on
    ``validation`` (:func:`genretag.calibration.calibrate`; fewer than ``min_clips`` clips: T = 1 and no
    nodes), appended by :func:`append_temperature`, the record in ``genretag.calibration``, resealed.

    Returns the new bytes, contract and :class:`~genretag.calibration.Calibration`. Checked on the
    ``test`` clips before returning: the calibrated output equals numpy's ``temperature_scaled`` within
    :data:`CALIBRATION_TOLERANCE` with the same top-1 class, else ExportError.
    """
    session = cpu_session(onnx_bytes)
    (validation_p, validation_y), (test_p, test_y) = (_clip_probabilities(session, clips, contract.labels) for clips in (validation, test))
    calibration = calibrate(validation_probabilities=validation_p, validation_labels=validation_y, test_probabilities=test_p,
                            test_labels=test_y, min_clips=min_clips, bins=bins)
    proto = onnx.load_from_string(onnx_bytes)
    if calibration.applied:
        proto = append_temperature(proto, temperature=calibration.temperature)
    contract = replace(contract, calibration=calibration.as_dict())
    sealed = _sealed(proto, contract, what="calibrated")
    if calibration.applied and len(test):
        got = predict_waveforms(cpu_session(sealed), test.waveforms).probabilities
        gap = float(np.abs(got - temperature_scaled(probabilities=test_p, temperature=calibration.temperature)).max())
        top_two = np.sort(test_p, axis=1)[:, -2:]
        moved = (got.argmax(axis=1) != test_p.argmax(axis=1)) & ((top_two[:, 1] - top_two[:, 0]) >= TIE_GAP)
        if gap > CALIBRATION_TOLERANCE or moved.any():
            raise ExportError(f"calibrated graph (T = {calibration.temperature:.4g}) parts from numpy's temperature scaling "
                              f"by {gap:.3g} (tolerance {CALIBRATION_TOLERANCE:g}) or changes a top-1 class. Nothing written.")
    log.info("calibration of %s: %s, T = %.4g; %s", contract.model_version, calibration.method, calibration.temperature, calibration.reason)
    return sealed, contract, calibration


def _check_v2_io(proto: onnx.ModelProto, *, clip_samples: int) -> None:
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    outputs = [value.name for value in proto.graph.output]
    shape = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim] if len(inputs) == 1 else []
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or shape != [BATCH_DIM, clip_samples] or outputs != [OUTPUT_NAME, EMBEDDING_NAME]:
        raise ExportError(
            f"graph takes {[(v.name, shape) for v in inputs]} and gives {outputs}; contract v2 needs "
            f"{INPUT_NAME} [{BATCH_DIM}, {clip_samples}] -> {OUTPUT_NAME}, {EMBEDDING_NAME}"
        )


# --------------------------------------------------------------------------- int8


class NothingToQuantize(ExportError):
    """The network holds no op that onnxruntime.quantization quantises (e.g. scikit-learn's ai.onnx.ml ops)."""


class Int8Refused(ExportError):
    """The int8 graph's top-1 class parts from float32's on too many clips (``export.int8_min_agreement``)."""


@dataclass(frozen=True)
class Int8Result:
    """An int8 export: where it went, its contract and how often its top-1 class is the float32 model's."""

    onnx_path: Path
    contract: ModelContract
    agreement_test: float  # fraction of test clips with the same top-1 class as float32
    agreement_synthetic: float  # the same on :func:`synthetic_clips`
    max_abs_diff: float  # largest |probability difference| to float32 over both
    calibration_clips: int


def _calibration_reader(waveforms: np.ndarray, *, batch_size: int):
    """An ``onnxruntime.quantization.CalibrationDataReader`` feeding float32 [n, S] waveforms in batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Waveforms(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = (
                np.ascontiguousarray(waveforms[i : i + batch_size], dtype=np.float32) for i in range(0, len(waveforms), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Waveforms()


def quantize_network(
    proto: onnx.ModelProto, *, calibration: np.ndarray, quant_format: str = "qoperator", batch_size: int = 16
) -> onnx.ModelProto:
    """Static int8 quantisation of the network part of a contract-v2 graph; the front end stays float32.

    Quantised: the nodes named ``network/...`` (:func:`genretag.graph.compose`) except
    :data:`NOT_QUANTIZED` op types; weights int8 per channel, activations uint8 with MinMax ranges
    calibrated by running the float32 graph on ``calibration`` (float32 [n, S] waveforms, n >= 1)
    (onnxruntime.quantization.quantize_static). ``quant_format``: "qoperator" (QLinearConv,
    QLinearMatMul) or "qdq" (Quantize/DequantizeLinear pairs that onnxruntime fuses). Raises
    ExportError when the graph has no network nodes, no calibration clip is given, or onnxruntime
    fails; :class:`NothingToQuantize` when none of the network's ops can be quantised.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if quant_format not in QUANT_FORMATS:
        raise ExportError(f"export.quantize_format {quant_format!r}: expected one of {', '.join(QUANT_FORMATS)}")
    nodes = [n.name for n in proto.graph.node if n.name.startswith(NETWORK_PREFIX) and n.op_type not in NOT_QUANTIZED]
    if not nodes:
        raise ExportError(f"graph {proto.graph.name!r} has no {NETWORK_PREFIX} nodes: build it with genretag.graph.compose to quantise it")
    if len(calibration) == 0:
        raise ExportError("no calibration clips: int8 ranges need training clips")
    with tempfile.TemporaryDirectory(prefix="genretag-int8-") as tmp:
        source, target = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, source)
        try:
            quantize_static(
                source, target, _calibration_reader(calibration, batch_size=batch_size),
                quant_format=QuantFormat.QOperator if quant_format == "qoperator" else QuantFormat.QDQ,
                nodes_to_quantize=nodes, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises RuntimeError, ValueError, Fail...
            raise ExportError(f"onnxruntime could not quantise graph {proto.graph.name!r}: {exc}") from exc
        quantised = onnx.load(target)
    if not any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in quantised.graph.node):
        ops = sorted({proto.graph.node[[n.name for n in proto.graph.node].index(name)].op_type for name in nodes})
        raise NothingToQuantize(f"graph {proto.graph.name!r}: onnxruntime quantises none of its network's ops ({', '.join(ops)})")
    return quantised


def export_int8(
    float32_path: Path,
    *,
    calibration: np.ndarray,
    onnx_path: Path,
    test: TestClips,
    quant_format: str = "qoperator",
    min_agreement: float = 0.9,
    synthetic: np.ndarray | None = None,
) -> Int8Result:
    """Quantise the exported contract-v2 model at ``float32_path`` (:func:`quantize_network`) and write it to ``onnx_path``.

    Contract: the float32 one with ``model_version`` + :data:`INT8_SUFFIX`, ``quantization`` int8
    and ``derived_from`` the float32 version. Checked before anything is written: contract-v2 IO
    (same names and shapes), and top-1 agreement with the float32 graph on the ``test`` and
    ``synthetic`` clips together (default :func:`synthetic_clips`) of at least ``min_agreement``
    (else :class:`Int8Refused`). Accuracy is the registry gate's business, not this function's.
    Raises ExportError, writing nothing, on any failure.
    """
    source = require_v2(read_contract(float32_path), source=str(float32_path))
    if source.quantization == INT8:
        raise ExportError(f"{float32_path}: already int8")
    proto = quantize_network(onnx.load(float32_path), calibration=calibration, quant_format=quant_format)
    contract = replace(source, model_version=f"{source.model_version}{INT8_SUFFIX}", quantization=INT8,
                       derived_from=source.model_version)
    onnx_bytes = _sealed(proto, contract, what="quantised")
    if synthetic is None:
        synthetic = synthetic_clips(sample_rate=contract.sample_rate, clip_samples=contract.clip_samples)
    float32, int8 = cpu_session(str(float32_path)), cpu_session(onnx_bytes)
    same, gap = [], 0.0
    for clips in (test.waveforms, synthetic):
        reference, quantised = predict_waveforms(float32, clips).probabilities, predict_waveforms(int8, clips).probabilities
        same.append(reference.argmax(axis=1) == quantised.argmax(axis=1) if len(clips) else np.zeros(0, bool))
        gap = max(gap, float(np.abs(reference - quantised).max()) if len(clips) else 0.0)
    agreement = [float(np.mean(s)) if len(s) else 1.0 for s in same]
    pooled = float(np.mean(np.concatenate(same))) if sum(map(len, same)) else 1.0
    if pooled < min_agreement:
        raise Int8Refused(
            f"{float32_path}: int8 model agrees with float32 on top-1 for {100 * pooled:.1f} % of the clips ({100 * agreement[0]:.1f} % "
            f"of {len(same[0])} test, {100 * agreement[1]:.1f} % of {len(same[1])} synthetic), below export.int8_min_agreement "
            f"{100 * min_agreement:.1f} %. Nothing written."
        )
    with atomic_open(onnx_path, "wb") as handle:
        handle.write(onnx_bytes)
    log.info("exported int8 %s to %s: top-1 agreement with float32 %.3f test / %.3f synthetic, max |diff| %.3g",
             contract.model_version, onnx_path, agreement[0], agreement[1], gap)
    return Int8Result(onnx_path=onnx_path, contract=contract, agreement_test=agreement[0], agreement_synthetic=agreement[1],
                      max_abs_diff=gap, calibration_clips=len(calibration))


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


def _data_section(params: Params, test: TestClips, counts: Mapping[str, tuple[int, int]]) -> str:
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


def _ece(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _calibration_section(calibration: Calibration | None) -> str:
    """The card's "Calibration" section: method, T, and the ECE before and after on validation and test."""
    if calibration is None:
        return "## Calibration\n\nNot calibrated: `probabilities` are the model's own softmax.\n"
    how = (f"Temperature scaling (Guo et al. 2017, \"On Calibration of Modern Neural Networks\", ICML): the graph's\n"
           f"`probabilities` are Softmax(Log(p) / T) with **T = {calibration.temperature:.4g}**, fitted on "
           f"{calibration.fitted_on} validation clips by minimising the negative log-likelihood. T > 1 softens\n"
           "over-confident probabilities, T < 1 sharpens; the top-1 class and the embedding do not change."
           if calibration.applied else
           f"Not calibrated (T = 1): {calibration.reason}.")
    return (f"## Calibration\n\n{how}\n\n"
            f"Expected calibration error ({calibration.bins} equal-width confidence bins; 0 is perfect):\n\n"
            "| split | ECE before | ECE after |\n| --- | --- | --- |\n"
            f"| validation | {_ece(calibration.ece_before)} | {_ece(calibration.ece_after)} |\n"
            f"| test | {_ece(calibration.test_ece_before)} | {_ece(calibration.test_ece_after)} |\n")


def render_model_card(
    params: Params, contract: ModelContract, *, parity: ParityReport, test: TestClips,
    counts: Mapping[str, tuple[int, int]] | None = None, description: Mapping[str, Any] | None = None,
    calibration: Calibration | None = None,
) -> str:
    """The MODEL_CARD.md shipped beside every exported candidate: ``counts`` from :func:`split_counts`,
    ``description`` the family's ``describe()`` (architecture, parameters, pretrained weights, recipe),
    ``calibration`` what :func:`calibrate_sealed` did (None: not calibrated).
    Test metrics on audio and the gate's decision are added by the evaluate and register stages
    (metrics/candidates/<id>.json, models/GATE.md)."""
    described = dict(description or {})
    demo = params.ingest.source == "demo"
    architecture = described.get("architecture") or contract.family
    parameters = described.get("parameters") or described.get("trained_parameters")
    pretrained = described.get("pretrained")
    caveat = (
        "\n> These numbers come from the synthetic demo corpus and do not estimate accuracy on music.\n"
        if demo
        else (
            "\n> Clip split (leaky): these numbers are optimistic.\n" if params.split.method == "clip" else ""
        )
    )
    labels = ", ".join(f"{index}: {label}" for index, label in enumerate(contract.labels))
    calibrated = calibration is not None and calibration.applied
    confidence = ("Probabilities are temperature-scaled on the validation split (Calibration, above): on data like it, "
                  "clips given 0.8 are right about 80 % of the time; on other music that is not a guarantee."
                  if calibrated else "Probabilities are not calibrated; a high value is not a confidence guarantee.")
    preprocessing = json.dumps(contract.preprocessing, indent=2, sort_keys=True)
    return f"""# Model card: {contract.model_name}

| | |
| --- | --- |
| model name | `{contract.model_name}` |
| model version | `{contract.model_version}` (candidate id and its MLflow training run; the registry assigns its own version number at registration, see `genretag registry list`) |
| family | `{contract.family}`: {architecture} |
| parameters | {f"{parameters:,}" if isinstance(parameters, int) else "n/a"} |
| pretrained weights | {pretrained or "none (trained from scratch on the data below)"} |
| training data hash | `{contract.training_data_hash}` |
| git commit | `{contract.git_commit}` |
{"| **data** | **synthetic demo corpus - not real music** |" + chr(10) if demo else ""}
## Intended use

Suggest one of {len(contract.labels)} genre tags ({", ".join(contract.labels)}) for tracks of a music
catalog, to help editors search, browse and curate. A track is cut into {contract.clip_seconds:g}-s windows;
the window probabilities are averaged. The tag is a suggestion for people to review.

Not intended for: genres outside the label set (the model always answers with one of its labels;
there is no "other" class), non-Western or regional styles, speech, sound effects or mixed content,
decisions about royalties, rights, artists or playlists without human review.

## Data

{_data_section(params, test, counts or {})}
## Metrics (test split)

ONNX clip accuracy at export: {parity.onnx_test_accuracy:.4f} on {parity.test_clips} test clips. The evaluate stage scores
every candidate on the test tracks' audio (`metrics/candidates/<id>.json`: clip and track accuracy, macro-F1);
the register stage's gate compares them with intervals and a paired test (`models/GATE.md`).
{caveat}
## ONNX parity with the family's own framework (waveform in)

max |ONNX - reference| probability = {parity.max_abs_diff_test:.3g} on {parity.test_clips} test clips and
{parity.max_abs_diff_synthetic:.3g} on {parity.synthetic_clips} synthetic clips (music, noise, silence, clipping,
quiet music; tolerance {parity.tolerance:g}); top-1 class identical on every clip ({parity.near_ties} exact tie(s) not
compared); embedding max |diff| {parity.max_abs_diff_embedding:.3g}.

{_calibration_section(calibration)}
## Limitations

- {"Trained on synthetic signals: it has never heard music. " if demo else ""}Genre is fuzzy and
  culturally defined; one label per track hides crossover music.
- Sees {contract.clip_seconds:g}-s windows at {contract.sample_rate} Hz: no long-range structure, nothing above
  {contract.sample_rate / 2:g} Hz. Other rates are resampled first.
- {confidence}
{_GTZAN_LIMITS}

## ONNX contract (v{contract.contract_version}: audio in, genres out)

- input `{INPUT_NAME}`: float32 [N, {contract.clip_samples}], mono, {contract.clip_seconds:g} s at
  {contract.sample_rate} Hz, full scale +-1, any batch size N. Resample other rates first (python-soxr).
- output `{OUTPUT_NAME}`: float32 [N, {len(contract.labels)}], softmax probabilities in label order{f", temperature-scaled (T = {calibration.temperature:.4g})" if calibrated else ""}.
- output `{EMBEDDING_NAME}`: float32 [N, D], the family's embedding (the representation its classifier reads).
- labels (index: genre): {labels}
- `metadata_props` (read with `genretag.contract.read_contract` or
  `session.get_modelmeta().custom_metadata_map`): `genretag.contract_version`, `genretag.sample_rate`,
  `genretag.clip_samples`, `genretag.family`, `genretag.labels`, `genretag.preprocessing`,
  `genretag.model_name`, `genretag.model_version`, `genretag.training_data_hash`,
  `genretag.git_commit`, `genretag.test_metrics`, `genretag.calibration`.
- preprocessing, computed inside the graph (`genretag.graph`; numpy references in `genretag/dsp/spectrogram.py`
  and `genretag/dsp/features.py`, checked by the parity gate above): nothing to re-implement.

```json
{preprocessing}
```

## How to call it

`genretag registry fetch champion --out DIR` writes the handoff bundle (`model.onnx`,
`labels.json`, a reference client). In code, with only a decoder, a resampler and onnxruntime:

```python
import json
import numpy as np
import onnxruntime as ort
import soundfile as sf

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
labels = json.loads(meta["genretag.labels"])
rate, size = int(meta["genretag.sample_rate"]), int(meta["genretag.clip_samples"])

samples, file_rate = sf.read("track.wav", dtype="float32", always_2d=True)
mono = samples.mean(axis=1)  # must be at `rate` Hz: resample with python-soxr otherwise
clips = mono[: len(mono) // size * size].reshape(-1, size)  # whole {contract.clip_seconds:g}-s windows
probabilities = session.run(["{OUTPUT_NAME}"], {{"{INPUT_NAME}": clips}})[0].mean(axis=0)
for index in np.argsort(probabilities)[::-1][:3]:
    print(labels[index], round(float(probabilities[index]), 3))
```
"""
