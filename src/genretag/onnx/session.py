"""The one way genretag opens an ONNX model: :func:`open_model` for scoring (CUDA when onnxruntime can
really use it, else the CPU; the contract's input and outputs checked), :func:`cpu_session` for parity,
calibration and evaluation, and :func:`predict_waveforms` to run any contract-v2 session in batches.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from genretag.core.errors import GenretagError, ScoringError
from genretag.onnx.contract import (
    EMBEDDING_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    ModelContract,
    Prediction,
    cuda_batch_limit,
    memory_batch_limit,
    read_contract,
    require_v2,
)

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# onnxruntime's own default log level (2 = warning); restored after a quiet session start.
_ORT_DEFAULT_SEVERITY = 2


@dataclass(frozen=True)
class ScoringModel:
    """An open ONNX session, the model's contract, and where it really runs."""

    path: Path
    session: ort.InferenceSession
    contract: ModelContract
    requested: tuple[str, ...]
    provider: str  # the provider that actually runs: session.get_providers()[0]
    cuda_problem: str = ""  # why CUDA is not active ("" when it is, or was not wanted)
    max_batch: int = 0  # most clips per session run (0: no limit); see cuda_batch_limit and memory_batch_limit

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def sample_rate(self) -> int:
        """Hz of the ``waveform`` input: tracks are decoded at this rate."""
        return self.contract.sample_rate

    @property
    def clip_samples(self) -> int:
        """S, samples per window (3 s at ``sample_rate``)."""
        return self.contract.clip_samples

    @property
    def contract_version(self) -> int:
        return self.contract.contract_version

    @property
    def model_name(self) -> str:
        return self.contract.model_name

    @property
    def model_version(self) -> str:
        return self.contract.model_version

    @property
    def on_gpu(self) -> bool:
        return self.provider == CUDA

    def predict(self, waveforms: np.ndarray, *, batch_size: int = 256) -> Prediction:
        """Windows float32 [n, S] at ``sample_rate`` -> probabilities [n, K] and embedding [n, D].

        The session runs on at most ``batch_size`` windows at a time (and never more than
        ``max_batch``, cuDNN's limit on a GPU); n = 0 gives empty arrays.
        """
        waveforms = np.asarray(waveforms, dtype=np.float32)
        if waveforms.ndim != 2 or waveforms.shape[1] != self.clip_samples:
            raise ScoringError(f"{self.path}: expected windows [n, {self.clip_samples}], got shape {waveforms.shape}")
        step = max(1, min(batch_size, self.max_batch) if self.max_batch else batch_size)
        return predict_waveforms(self.session, waveforms, batch_size=step)


def _preload_cuda_libraries() -> str:
    """Load CUDA/cuDNN from pip's nvidia packages when present; return what went wrong."""
    if not hasattr(ort, "preload_dlls"):
        return ""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):  # it prints each library it cannot find
            ort.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - best effort; the session start says the rest
        captured.write(f"preload_dlls failed: {exc}")
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    missing = [line.split()[3].rstrip(":") for line in lines if line.startswith("Failed to load ") and len(line.split()) > 3]
    if missing:
        return "cannot load " + ", ".join(dict.fromkeys(Path(name).name for name in missing))
    return " ".join(lines)[:300]


def _built_cuda() -> str:
    """The CUDA major version this onnxruntime was built for (its libraries must match)."""
    try:
        from onnxruntime.capi import build_and_package_info

        return str(build_and_package_info.cuda_version).split(".")[0] + ".x"
    except (ImportError, AttributeError):
        return "12/13"


def open_model(
    path: str | Path,
    *,
    require_gpu: bool = False,
    prefer_gpu: bool = True,
    intra_op_threads: int = 0,
    batch_memory_mb: int = 0,
) -> ScoringModel:
    """Open an exported contract-v2 model with CUDA when onnxruntime can use it, else on the CPU.

    A v1 (image-input) model is refused with one line that says how to re-export it, and the
    session's input and outputs must be the contract's names and shapes (ScoringError otherwise).
    onnxruntime-gpu lists CUDA even where it cannot load it and then silently runs on the
    CPU; the provider that really runs is read back from the session. Its own load-error
    spam is silenced and replaced by one warning of ours. ``require_gpu`` raises
    ScoringError at once, with the reason, when CUDA is not active. ``batch_memory_mb`` (params
    score.batch_memory_mb; 0: none) caps the clips per session run so that the activations fit it
    (:func:`genretag.onnx.contract.memory_batch_limit`): peak memory follows the model, not score.batch_size.
    ``intra_op_threads`` (0: onnxruntime's default, every core) sets the session's threads.
    """
    path = Path(path)
    try:
        contract = require_v2(read_contract(path), source=str(path))
    except GenretagError as exc:
        raise ScoringError(str(exc)) from exc
    available = ort.get_available_providers()
    want_cuda = prefer_gpu or require_gpu
    cuda_listed = CUDA in available
    requested = (CUDA, CPU) if want_cuda and cuda_listed else (CPU,)
    preload_problem = _preload_cuda_libraries() if CUDA in requested else ""

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only from this session's own logger
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    ort.set_default_logger_severity(4)  # the provider bridge logs load failures on the default logger
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(requested))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ScoringError(f"{path}: onnxruntime cannot load the model ({exc})") from exc
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
    _check_io(session, path=path, contract=contract)

    provider = session.get_providers()[0]
    problem = ""
    if want_cuda and provider != CUDA:
        if not cuda_listed:
            problem = f"this onnxruntime ({ort.__version__}, providers {available}) has no CUDAExecutionProvider"
        else:
            problem = (
                f"onnxruntime could not start CUDAExecutionProvider (needs a GPU and CUDA {_built_cuda()} libraries"
                + (f"; {preload_problem}" if preload_problem else "")
                + ")"
            )
        if require_gpu:
            raise ScoringError(f"{path}: GPU required but CUDA is not active: {problem}")
        log.log(*cuda_note(provider=provider, problem=problem))
    proto = onnx.load(str(path)) if provider == CUDA or batch_memory_mb else None
    limits = [limit for limit in (cuda_batch_limit(proto) if provider == CUDA else 0,
                                  memory_batch_limit(proto, budget_mb=batch_memory_mb) if proto is not None else 0) if limit]
    max_batch = min(limits, default=0)
    log.info("scoring %s (%s %s) on %s%s", path.name, contract.model_name, contract.model_version, provider,
             f", at most {max_batch} clips per run" if max_batch else "")
    return ScoringModel(
        path=path, session=session, contract=contract, requested=requested, provider=provider, cuda_problem=problem,
        max_batch=max_batch,
    )


def cuda_note(*, provider: str, problem: str) -> tuple[int, str]:
    """(logging level, message) for CUDA not running: INFO when no GPU is visible to this process
    (the CPU was the only choice), WARNING when one is visible but CUDA cannot run on it."""
    from genretag.core.environment import gpu_visible

    if gpu_visible():
        return logging.WARNING, f"a GPU is visible but CUDA cannot run: scoring on {provider} ({problem})"
    return logging.INFO, f"no GPU visible: scoring on {provider}"


def _check_io(session: ort.InferenceSession, *, path: Path, contract: ModelContract) -> None:
    """The session takes ``waveform`` [N, S] and returns ``probabilities`` [N, K] and ``embedding`` [N, D]."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if list(inputs) != [INPUT_NAME] or not {OUTPUT_NAME, EMBEDDING_NAME} <= set(outputs):
        raise ScoringError(
            f"{path}: contract v2 needs input {INPUT_NAME!r} and outputs {OUTPUT_NAME!r}, {EMBEDDING_NAME!r}; "
            f"found {list(inputs)} -> {list(outputs)}"
        )
    shapes = {INPUT_NAME: inputs[INPUT_NAME], OUTPUT_NAME: outputs[OUTPUT_NAME], EMBEDDING_NAME: outputs[EMBEDDING_NAME]}
    wrong_rank = [f"{name} {shape}" for name, shape in shapes.items() if len(shape) != 2]
    if wrong_rank:
        raise ScoringError(f"{path}: contract v2 tensors are 2-D [N, ...]; found {', '.join(wrong_rank)}")
    samples, width = inputs[INPUT_NAME][1], outputs[OUTPUT_NAME][1]
    if isinstance(samples, int) and samples != contract.clip_samples:
        raise ScoringError(f"{path}: the model takes {samples} samples per window but its contract says {contract.clip_samples}")
    if isinstance(width, int) and width != len(contract.labels):
        raise ScoringError(f"{path}: the model outputs {width} probabilities but its metadata lists {len(contract.labels)} labels")
    dim = outputs[EMBEDDING_NAME][1]
    if contract.embedding_dim and isinstance(dim, int) and dim != contract.embedding_dim:
        raise ScoringError(f"{path}: the model outputs a {dim}-d embedding but its metadata (genretag.embedding) says {contract.embedding_dim}")


def cpu_session(model: str | Path | bytes):
    """An onnxruntime session on the CPU (for parity, calibration and evaluation; :func:`open_model` picks CUDA when it can)."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def predict_waveforms(session, waveforms: np.ndarray, *, batch_size: int = 64) -> Prediction:
    """Run a contract-v2 ``session`` on float32 [n, S] waveforms in batches of ``batch_size``."""
    waveforms = np.asarray(waveforms, dtype=np.float32)
    names = [OUTPUT_NAME, EMBEDDING_NAME]
    parts = [
        session.run(names, {INPUT_NAME: np.ascontiguousarray(waveforms[start : start + batch_size])})
        for start in range(0, len(waveforms), batch_size)
    ] or [session.run(names, {INPUT_NAME: waveforms})]
    return Prediction(
        probabilities=np.concatenate([p[0] for p in parts]).astype(np.float32),
        embedding=np.concatenate([p[1] for p in parts]).astype(np.float32),
    )
