"""Family ``mfcc-logreg``: MFCC statistics per clip + logistic regression, the baseline every family must beat.

Per 3-s clip at 22,050 Hz: 20 MFCCs (librosa.feature.mfcc's defaults: 2048-point STFT, hop 512,
128 Slaney mel bands, dB floored 80 dB under the clip's max, orthonormal DCT-II), their mean,
standard deviation and the standard deviation of their frame-to-frame difference (a first-order
delta) over frames (:func:`genretag.features.mfcc_stats`; in the graph
:func:`genretag.graph.mfcc_stats_frontend`) -> the 60-d **embedding** -> StandardScaler +
multinomial LogisticRegression (C chosen by inner cross-validation on the training tracks). The
classic baseline of Tzanetakis & Cook (2002), in its common MFCC-statistics form.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper

from pydantic import Field

from genretag.dsp import features
from genretag.families import register_family
from genretag.families.heads import FeatureHeadFamily, HeadOptions
from genretag.onnx.contract import EMBEDDING_NAME

SAMPLE_RATE = 22_050
CLIP_SECONDS = 3.0


class MfccOptions(HeadOptions):
    """params.yaml ``families.mfcc-logreg``: :class:`~genretag.families.heads.HeadOptions` and ``n_mfcc`` coefficients."""

    batch_size: int = Field(256, ge=1)
    n_mfcc: int = Field(features.N_MFCC, ge=1, le=128)


@register_family
class MfccLogReg(FeatureHeadFamily):
    """``mfcc-logreg``: [n, 66150] waveforms at 22,050 Hz -> 60 MFCC statistics -> linear head."""

    name: ClassVar[str] = "mfcc-logreg"
    options: ClassVar[type[MfccOptions]] = MfccOptions
    sample_rate = SAMPLE_RATE
    clip_samples = int(SAMPLE_RATE * CLIP_SECONDS)

    def __init__(self, *, C: float | None = None, opset: int = 17, batch_size: int = 256, n_mfcc: int = features.N_MFCC) -> None:
        super().__init__(C=C, opset=opset, batch_size=batch_size)
        self.n_mfcc = n_mfcc
        self.embedding_size = features.MFCC_STATISTICS * n_mfcc

    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        """float32 [n, S] -> MFCC mean, std, delta std, float32 [n, 3 n_mfcc] (numpy reference, in batches)."""
        waveforms = np.asarray(waveforms, dtype=np.float32)
        parts = [
            features.mfcc_stats(waveforms[i : i + self.batch_size], sample_rate=self.sample_rate, n_mfcc=self.n_mfcc)
            for i in range(0, len(waveforms), self.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.embedding_size), np.float32)

    def frontend(self) -> onnx.ModelProto:
        from genretag.onnx.graph import mfcc_stats_frontend

        return mfcc_stats_frontend(sample_rate=self.sample_rate, clip_samples=self.clip_samples, n_mfcc=self.n_mfcc)

    def embedding_network(self) -> onnx.ModelProto:
        """The MFCC statistics are the embedding: ``features`` [N, 3 n_mfcc] -> Identity -> ``embedding``."""
        from genretag.onnx.graph import IR_VERSION

        graph = helper.make_graph(
            [helper.make_node("Identity", ["features"], [EMBEDDING_NAME])], "mfcc_embedding",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", self.embedding_size])],
            [helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", self.embedding_size])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = IR_VERSION
        return model

    def preprocessing(self) -> dict[str, Any]:
        return {"frontend": "MFCC statistics", "sample_rate": self.sample_rate, "n_mfcc": self.n_mfcc, "n_fft": 2048,
                "hop_length": 512, "n_mels": 128, "top_db": features.MFCC_TOP_DB, "embedding": "MFCC mean, std and delta (frame difference) std over frames"}

    def describe_frozen(self) -> dict[str, Any]:
        return {"family": self.name, "architecture": f"{self.n_mfcc} MFCC mean/std/delta-std statistics + logistic regression",
                "pretrained": None, "embedding_size": self.embedding_size}
