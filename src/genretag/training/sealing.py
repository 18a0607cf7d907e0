"""Sealing a contract-v2 graph: its input and outputs checked, the contract written into its metadata,
the ONNX checker run, the bytes serialised. Every model that leaves training (float32, calibrated, int8)
goes through :func:`seal`."""

from __future__ import annotations

import onnx

from genretag.core.errors import ExportError
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, ModelContract, write_contract

BATCH_DIM = "N"  # the contract's dynamic batch dimension


def seal(proto: onnx.ModelProto, contract: ModelContract, *, what: str) -> bytes:
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

