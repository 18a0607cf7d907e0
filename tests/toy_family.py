"""A family that lives outside genretag (params.yaml ``train.family_modules: [tests.toy_family]``): ``toy-bands``.

Per clip at 22,050 Hz: the waveform is cut into frames of :data:`FRAME` samples (the last partial frame
dropped), each frame's power spectrum (a plain DFT, no window) is summed into :data:`BANDS` equal-width
frequency bands, and the log of each band's power (+1e-10) is averaged and its standard deviation taken
over frames: a 2 x BANDS embedding, then genretag's scikit-learn logistic-regression head. Cheap on a CPU,
and the same arithmetic in numpy (:meth:`ToyBands.embed`) and ONNX (:meth:`ToyBands.frontend`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import Field

from genretag.families import register_family
from genretag.families.heads import FeatureHeadFamily, HeadOptions
from genretag.onnx.contract import EMBEDDING_NAME, INPUT_NAME
from genretag.onnx.graph import IR_VERSION, OPSET

SAMPLE_RATE = 22_050
CLIP_SAMPLES = 3 * SAMPLE_RATE
FRAME = 512
BANDS = 32  # ~345 Hz wide at 22,050 Hz: the gate tones (220, 880, 3,000, 5,000 Hz) fall in different bands


class ToyOptions(HeadOptions):
    """params.yaml ``families.toy-bands``: the head's options and ``floor``, added to each band power before the log."""

    floor: float = Field(1e-10, gt=0)


def _bases(frame: int, bands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DFT cosine and sine bases float32 [frame, frame//2 + 1] and the band membership float32 [frame//2 + 1, bands]."""
    n = np.arange(frame)[:, None]
    k = np.arange(frame // 2 + 1)[None, :]
    angle = 2 * np.pi * n * k / frame
    member = np.zeros((frame // 2 + 1, bands), np.float32)
    member[np.arange(frame // 2 + 1), np.minimum(np.arange(frame // 2 + 1) * bands // (frame // 2 + 1), bands - 1)] = 1
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32), member


@register_family
class ToyBands(FeatureHeadFamily):
    """``toy-bands``: float32 [n, 66150] at 22,050 Hz -> 16 band statistics -> linear head."""

    name: ClassVar[str] = "toy-bands"
    options: ClassVar[type[ToyOptions]] = ToyOptions
    sample_rate = SAMPLE_RATE
    clip_samples = CLIP_SAMPLES

    def __init__(self, *, floor: float = 1e-10, **head: Any) -> None:
        super().__init__(**head)
        self.floor = floor
        self.embedding_size = 2 * BANDS

    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        """float32 [n, S] -> float32 [n, 2 BANDS]: mean then std over frames of log band power."""
        cos, sin, member = _bases(FRAME, BANDS)
        count = self.clip_samples // FRAME
        frames = np.asarray(waveforms, np.float32)[:, : count * FRAME].reshape(len(waveforms), count, FRAME)
        power = np.square(frames @ cos) + np.square(frames @ sin)
        logs = np.log(power @ member + np.float32(self.floor))
        return np.concatenate([logs.mean(axis=1), logs.std(axis=1)], axis=1).astype(np.float32)

    def frontend(self) -> onnx.ModelProto:
        """``waveform`` [N, 66150] -> ``features`` [N, 2 BANDS], the ops of :meth:`embed`."""
        cos, sin, member = _bases(FRAME, BANDS)
        count = self.clip_samples // FRAME
        constants = {"cos": cos, "sin": sin, "member": member, "floor": np.array(self.floor, np.float32),
                     "starts": np.array([0], np.int64), "ends": np.array([count * FRAME], np.int64), "axis": np.array([1], np.int64),
                     "shape": np.array([-1, count, FRAME], np.int64)}
        nodes = [
            helper.make_node("Slice", [INPUT_NAME, "starts", "ends", "axis"], ["kept"]),
            helper.make_node("Reshape", ["kept", "shape"], ["frames"]),
            helper.make_node("MatMul", ["frames", "cos"], ["re"]),
            helper.make_node("MatMul", ["frames", "sin"], ["im"]),
            helper.make_node("Mul", ["re", "re"], ["re2"]),
            helper.make_node("Mul", ["im", "im"], ["im2"]),
            helper.make_node("Add", ["re2", "im2"], ["power"]),
            helper.make_node("MatMul", ["power", "member"], ["band"]),
            helper.make_node("Add", ["band", "floor"], ["floored"]),
            helper.make_node("Log", ["floored"], ["logs"]),
            helper.make_node("ReduceMean", ["logs"], ["mean_keep"], axes=[1], keepdims=1),
            helper.make_node("Sub", ["logs", "mean_keep"], ["centred"]),
            helper.make_node("Mul", ["centred", "centred"], ["squared"]),
            helper.make_node("ReduceMean", ["squared"], ["variance"], axes=[1], keepdims=0),
            helper.make_node("Sqrt", ["variance"], ["std"]),
            helper.make_node("Squeeze", ["mean_keep", "axis"], ["mean"]),
            helper.make_node("Concat", ["mean", "std"], ["features"], axis=1),
        ]
        graph = helper.make_graph(
            nodes, "toy_bands", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", self.clip_samples])],
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", self.embedding_size])],
            initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        return model

    def embedding_network(self) -> onnx.ModelProto:
        """The statistics are the embedding: ``features`` -> Identity -> ``embedding``."""
        graph = helper.make_graph(
            [helper.make_node("Identity", ["features"], [EMBEDDING_NAME])], "toy_embedding",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", self.embedding_size])],
            [helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", self.embedding_size])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = IR_VERSION
        return model

    def preprocessing(self) -> dict[str, Any]:
        return {"frontend": "toy band statistics", "sample_rate": self.sample_rate, "frame": FRAME, "bands": BANDS, "floor": self.floor}

    def describe_frozen(self) -> dict[str, Any]:
        return {"family": self.name, "architecture": f"{BANDS} DFT band log-powers, mean and std over frames + logistic regression",
                "pretrained": None, "embedding_size": self.embedding_size}
