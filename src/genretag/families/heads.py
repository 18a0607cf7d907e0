"""The trained head shared by feature-based families: StandardScaler + multinomial LogisticRegression.

Fitted on per-clip feature vectors (an embedding or MFCC statistics) with scikit-learn and
exported with skl2onnx as ``features`` float32 [N, D] -> ``probabilities`` float32 [N, K]
(no ZipMap, so the output is a plain tensor in label order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

HEAD_INPUT = "features"
HEAD_OUTPUT = "probabilities"


@dataclass
class LinearHead:
    """StandardScaler -> LogisticRegression (lbfgs, multinomial, L2 strength ``1/C``, balanced class weights).

    ``n_classes``: K, the number of labels; :meth:`predict_proba` always returns K columns.
    """

    n_classes: int
    C: float = 1.0
    max_iter: int = 2000

    def __post_init__(self) -> None:
        self.pipeline = None

    def fit(self, features: np.ndarray, labels: np.ndarray, *, seed: int) -> dict[str, Any]:
        """Fit on float32 [n, D] features and int labels in [0, K); returns facts (iterations, classes seen).

        Class weights are ``balanced`` (inverse class frequency), so unbalanced genres do not tilt the head.
        Raises ValueError when ``labels`` holds fewer than two classes (scikit-learn cannot fit that).
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.pipeline = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced", random_state=seed),
        )
        self.pipeline.fit(np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64))
        classifier = self.pipeline[-1]
        return {"head": "StandardScaler+LogisticRegression", "head_C": self.C,
                "head_iterations": int(np.max(classifier.n_iter_)), "classes_seen": len(classifier.classes_)}

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """float32 [n, K] probabilities; columns of classes absent from training stay 0."""
        seen = self.pipeline.predict_proba(np.asarray(features, dtype=np.float64))
        out = np.zeros((len(seen), self.n_classes), dtype=np.float32)
        out[:, self.pipeline[-1].classes_] = seen
        return out

    def to_onnx(self, *, n_features: int, opset: int) -> onnx.ModelProto:
        """The fitted head as ONNX: ``features`` [N, D] -> ``probabilities`` [N, K] (skl2onnx, no ZipMap).

        Every class must have been seen in training (else the K columns would not line up): ValueError.
        """
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        if len(self.pipeline[-1].classes_) != self.n_classes:
            raise ValueError(f"the head saw {len(self.pipeline[-1].classes_)} of {self.n_classes} classes in training")
        model = convert_sklearn(
            self.pipeline,
            initial_types=[(HEAD_INPUT, FloatTensorType([None, n_features]))],
            options={id(self.pipeline[-1]): {"zipmap": False}},
            target_opset={"": opset, "ai.onnx.ml": 3},
            final_types=None,
        )
        probability_output = model.graph.output[1].name
        for node in model.graph.node:
            node.output[:] = [HEAD_OUTPUT if o == probability_output else o for o in node.output]
        keep = [o for o in model.graph.output if o.name == probability_output]
        keep[0].name = HEAD_OUTPUT
        del model.graph.output[:]
        model.graph.output.extend(keep)
        return model
