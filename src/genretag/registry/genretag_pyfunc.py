"""The registered model's ``python_function`` flavour: waveforms in, genre labels out.

MLflow's own ONNX pyfunc returns the graph's raw tensors, so ``mlflow models serve`` and
``mlflow.pyfunc.load_model`` answered with unnamed probabilities. This loader (MLmodel's
``python_function.loader_module``) returns, per input clip, a row with named columns:

* ``genre``: the most probable label (str);
* ``confidence``: its probability (float);
* ``top3``: the three most probable, ``[{"genre": str, "probability": float}, ...]``, best first;
* one column per label (the contract's labels, in order): its probability (float, calibrated).

Input: float32 waveforms ``[n, clip_samples]``, mono, at the model's sample rate, in [-1, 1]: the
ONNX contract v2 ``waveform`` input (a DataFrame, an array, or ``{"waveform": array}``). The labels,
sample rate and tensor names come from ``model_config`` (written at registration,
:mod:`genretag.registry.labelled_model`). This file is copied into the logged model (``code/``) and
imports only numpy, pandas and onnxruntime, so the model serves without genretag installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TOP = 3


class LabelledGenres:
    """An onnxruntime session on the registered ``model.onnx`` that names its outputs (see the module)."""

    def __init__(self, model_file: str, *, config: dict[str, Any]):
        import onnxruntime as ort

        self.labels: list[str] = list(config["labels"])
        self.input_name: str = config["input_name"]
        self.output_name: str = config["output_name"]
        self.clip_samples = int(config["clip_samples"])
        self.session = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])

    def _waveforms(self, data: Any) -> np.ndarray:
        if isinstance(data, dict):
            data = data[self.input_name] if self.input_name in data else next(iter(data.values()))
        waveforms = np.asarray(data.to_numpy() if isinstance(data, pd.DataFrame) else data, dtype=np.float32)
        if waveforms.ndim == 1:
            waveforms = waveforms[None, :]
        if waveforms.ndim != 2 or waveforms.shape[1] != self.clip_samples:
            raise ValueError(f"waveform input has shape {waveforms.shape}; expected [n, {self.clip_samples}] "
                             f"(clips of {self.clip_samples} samples at the model's rate)")
        return waveforms

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per clip: genre, confidence, top3 and a probability column per label (see the module)."""
        waveforms = self._waveforms(data)
        (probabilities,) = self.session.run([self.output_name], {self.input_name: waveforms})
        order = np.argsort(-probabilities, axis=1, kind="stable")
        rows = []
        for row, ranked in zip(probabilities, order):
            best = int(ranked[0])
            rows.append({
                "genre": self.labels[best],
                "confidence": float(row[best]),
                "top3": [{"genre": self.labels[int(i)], "probability": float(row[int(i)])} for i in ranked[:TOP]],
                **{label: float(p) for label, p in zip(self.labels, row)},
            })
        return pd.DataFrame(rows, columns=["genre", "confidence", "top3", *self.labels])


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> LabelledGenres:
    """MLflow's loader hook: ``path`` is the model's ``model.onnx`` (the flavour's ``data``)."""
    if not model_config or "labels" not in model_config:
        raise ValueError(f"{path}: the MLmodel's python_function flavour has no model_config labels")
    return LabelledGenres(path, config=model_config)
