"""How a version is logged to MLflow: the ONNX flavour, and a ``python_function`` flavour that answers with labels.

A flavour module for ``mlflow.models.Model.log`` (``flavor=``): :func:`save_model` writes MLflow's
ONNX flavour (``model.onnx``, its requirements, the extra files), then points the
``python_function`` flavour at :mod:`genretag.registry.genretag_pyfunc` (copied into the model's
``code/``) with the contract's labels as its ``model_config``. ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` then return, per clip, the genre, its confidence, the top 3 and one
probability column per label; ``mlflow.onnx.load_model`` and genretag's own resolver
(genretag.registry.fetch: ``model.onnx`` in the model folder) are unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genretag.onnx.contract import INPUT_NAME, OUTPUT_NAME, ModelContract
from genretag.registry import genretag_pyfunc

LOADER_FILE = Path(genretag_pyfunc.__file__)
LOADER_MODULE = LOADER_FILE.stem  # importable from the model's code/ folder, without genretag


def pyfunc_config(contract: ModelContract) -> dict[str, Any]:
    """The ``model_config`` of the labelled pyfunc: labels (in output order), tensor names, clip length."""
    return {"labels": list(contract.labels), "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
            "clip_samples": int(contract.clip_samples), "sample_rate": int(contract.sample_rate)}


def labelled_signature(contract: ModelContract):
    """Waveforms float32 [-1, clip_samples] in; genre, confidence, top3 and a probability per label out."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Object, Property, Schema, TensorSpec

    top = Array(Object([Property("genre", "string"), Property("probability", "double")]))
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, contract.clip_samples), INPUT_NAME)]),
        outputs=Schema([ColSpec("string", "genre"), ColSpec("double", "confidence"), ColSpec(top, "top3"),
                        *(ColSpec("double", label) for label in contract.labels)]),
    )


def save_model(path: str, mlflow_model: Any, *, onnx_model: Any, model_config: dict[str, Any], **onnx_options: Any) -> None:
    """``Model.log``'s hook: MLflow's ONNX flavour at ``path``, then the labelled ``python_function`` flavour."""
    import mlflow.onnx
    import mlflow.pyfunc
    from mlflow.models.model import MLMODEL_FILE_NAME, MODEL_CONFIG

    mlflow.onnx.save_model(onnx_model, path, mlflow_model=mlflow_model, code_paths=[str(LOADER_FILE)], **onnx_options)
    pyfunc = mlflow_model.flavors[mlflow.pyfunc.FLAVOR_NAME]
    pyfunc[mlflow.pyfunc.MAIN] = LOADER_MODULE
    pyfunc[MODEL_CONFIG] = model_config
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))
