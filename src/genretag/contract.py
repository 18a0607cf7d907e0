"""The ONNX handoff contract: what every exported model says about itself in metadata_props."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from genretag.errors import ExportError
from genretag.spectrogram import PreprocessingSpec

INPUT_NAME = "mel_image"
OUTPUT_NAME = "probabilities"

KEY_LABELS = "genretag.labels"
KEY_PREPROCESSING = "genretag.preprocessing"
KEY_MODEL_NAME = "genretag.model_name"
KEY_MODEL_VERSION = "genretag.model_version"
KEY_DATA_HASH = "genretag.training_data_hash"
KEY_GIT_COMMIT = "genretag.git_commit"
KEY_METRICS = "genretag.test_metrics"


@dataclass(frozen=True)
class ModelContract:
    """Labels, preprocessing and provenance of an exported model."""

    labels: tuple[str, ...]
    preprocessing: PreprocessingSpec
    model_name: str
    model_version: str
    training_data_hash: str = ""
    git_commit: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {
            KEY_LABELS: json.dumps(list(self.labels)),
            KEY_PREPROCESSING: self.preprocessing.to_json(),
            KEY_MODEL_NAME: self.model_name,
            KEY_MODEL_VERSION: self.model_version,
            KEY_DATA_HASH: self.training_data_hash,
            KEY_GIT_COMMIT: self.git_commit,
            KEY_METRICS: json.dumps(self.test_metrics, sort_keys=True),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], *, source: str = "model") -> ModelContract:
        missing = [key for key in (KEY_LABELS, KEY_PREPROCESSING, KEY_MODEL_NAME, KEY_MODEL_VERSION) if key not in metadata]
        if missing:
            raise ExportError(f"{source}: not a genretag model, metadata lacks {', '.join(missing)}")
        return cls(
            labels=tuple(json.loads(metadata[KEY_LABELS])),
            preprocessing=PreprocessingSpec.from_json(metadata[KEY_PREPROCESSING]),
            model_name=metadata[KEY_MODEL_NAME],
            model_version=metadata[KEY_MODEL_VERSION],
            training_data_hash=metadata.get(KEY_DATA_HASH, ""),
            git_commit=metadata.get(KEY_GIT_COMMIT, ""),
            test_metrics=json.loads(metadata.get(KEY_METRICS) or "{}"),
        )


def read_contract(onnx_path: str | Path) -> ModelContract:
    """Read the contract from an ONNX file's metadata_props (the weights are not loaded)."""
    path = Path(onnx_path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model ({exc})") from exc
    return ModelContract.from_metadata({p.key: p.value for p in model.metadata_props}, source=str(path))


def write_contract(model: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """Replace the model's genretag metadata with ``contract`` (other keys are kept)."""
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("genretag.")]
    del model.metadata_props[:]
    for key, value in [*kept, *contract.to_metadata().items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


CUDNN_MAX_ELEMENTS = 2**31 - 1
"""cuDNN rejects a tensor of 2^31 elements or more (CUDNN_STATUS_NOT_SUPPORTED)."""


def largest_activation(model: onnx.ModelProto) -> int:
    """Elements per input clip of the model's largest tensor, by ONNX shape inference (0: unknown)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    largest = 0
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim[1:]  # the first dimension is the batch
        if dims and all(d.HasField("dim_value") for d in dims):
            largest = max(largest, math.prod(d.dim_value for d in dims))
    return largest


def cuda_batch_limit(model: onnx.ModelProto) -> int:
    """Most clips one CUDA run may hold: the largest tensor must stay under cuDNN's limit.

    The paper's exp8 at 128x128 has a 128x128x128 activation per clip, so 1,024 clips make
    a 2^31-element tensor and its first MaxPool fails on the GPU (seen on an H100); 1,023 run.
    """
    largest = largest_activation(model)
    return max(1, CUDNN_MAX_ELEMENTS // largest) if largest else 0
