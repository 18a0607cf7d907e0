"""Shared base of the Keras families over the paper's mel image (``paper-expN``, ``compact``).

Input of the network: the paper's colour mel image, float32 NHWC in [0, 1]
(:func:`genretag.spectrogram.waveform_to_images` then ``to_model_input``; in the graph
:func:`genretag.graph.paper_image_frontend`). The contract's ``embedding`` output is the input of
the network's last Dense layer: the 128-unit layer named ``embedding``
(:data:`genretag.models.EMBEDDING_LAYER`; after dropout in `compact`, the same values at inference).
This module holds the one Keras -> ONNX conversion (:func:`network_to_onnx`) and the one Keras
reference forward pass (:func:`keras_predict`) of genretag: the parity gate compares the two.

The training recipe, for little real data (each choice with its source):

- **random 3-s crops** of each training track at every epoch instead of its fixed clips: the
  track's clips, in order, are joined back into one signal (they are consecutive cuts of it) and
  as many crops as it has clips are drawn uniformly from it (Pons & Serra 2019 train on random patches);
- **SpecAugment** masks (Park et al. 2019): one time mask of up to ``time_mask`` of the width and one
  frequency mask of up to ``freq_mask`` of the height per image, filled with the image mean;
- **mixup** (Zhang et al. 2018) with Beta(``mixup``, ``mixup``) weights between shuffled pairs of a batch;
- a **cosine learning-rate schedule** (Loshchilov & Hutter 2017) from ``learning_rate`` to 1 % of it
  over ``max_epochs``, after one warm-up epoch at a tenth of it;
- **early stopping** on validation loss with ``patience``, keeping the best epoch's weights;
- **class weights** ``n / (K n_k)`` (scikit-learn's "balanced") as sample weights, so unbalanced genres count equally.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from genretag.core.atomic import atomic_path
from genretag.core.errors import ExportError
from genretag.onnx.contract import EMBEDDING_NAME, OUTPUT_NAME, V1_INPUT_NAME, Prediction
from genretag.onnx.graph import OPSET, compose, paper_image_frontend, rename_tensor
from genretag.dsp.spectrogram import PreprocessingSpec, db_to_image, mel_db, to_model_input

MODEL_FILE = "model.keras"
KERAS_DVC_PARAMS = ("spectrogram", "audio.sample_rate", "audio.clip_seconds")
"""The params keys a Keras image family reads besides its own section: the mel image of its front end."""


class KerasRecipe(BaseModel):
    """A Keras image family's params.yaml section ``families.<name>``: the recipe of the module docstring.

    ``batch_size`` clips per step, ``max_epochs``/``patience`` epochs, ``learning_rate`` Adam's peak rate,
    ``mixup`` the Beta parameter, ``time_mask``/``freq_mask`` fractions of the image width/height.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(12, ge=1)
    patience: int = Field(3, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    mixup: float = Field(0.2, ge=0)
    time_mask: float = Field(0.15, ge=0, lt=1)
    freq_mask: float = Field(0.15, ge=0, lt=1)


def configure_runtime(*, seed: int) -> None:
    """Fresh Keras state, every seed set (Python, numpy, TensorFlow), TensorFlow op determinism on."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def save_model(model, path: Path) -> Path:
    """Save a Keras model atomically (Keras insists on a ``.keras`` suffix, so stage it beside)."""
    import os

    with atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name + ".keras")
        try:
            model.save(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return path

STATE_FILE = "family.json"
BATCH_DIM = "N"  # the dynamic batch dimension of every graph (genretag.export checks it)


class KerasImageFamily:
    """A Keras CNN over the paper's mel image, trained with the recipe of the module docstring.

    Subclasses set ``name`` and implement :meth:`build_network` and :meth:`architecture`.
    """

    name: ClassVar[str]
    options: ClassVar[type[KerasRecipe]] = KerasRecipe
    dvc_params: ClassVar[tuple[str, ...]] = KERAS_DVC_PARAMS
    variants: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_params(cls, options: KerasRecipe, *, params, variant: str | None = None) -> KerasImageFamily:
        """The family with ``options`` (its section), the mel image of ``params`` (a
        :class:`~genretag.core.config.Params`: spectrogram, audio) and ``export.opset``."""
        from genretag.dsp.spectrogram import preprocessing_spec

        extra = {"variant": variant} if variant else {}
        return cls(spec=preprocessing_spec(params), opset=params.export.opset, **options.model_dump(), **extra)

    def __init__(
        self,
        *,
        image_size: tuple[int, int] = (64, 64),
        max_epochs: int = 40,
        patience: int = 8,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        mixup: float = 0.2,
        time_mask: float = 0.15,
        freq_mask: float = 0.15,
        opset: int = 17,
        spec: PreprocessingSpec | None = None,
    ) -> None:
        self.spec = spec or PreprocessingSpec(image_size=tuple(int(v) for v in image_size))
        self.sample_rate = self.spec.sample_rate
        self.clip_samples = self.spec.clip_samples
        self.recipe = {"max_epochs": max_epochs, "patience": patience, "batch_size": batch_size,
                       "learning_rate": learning_rate, "mixup": mixup, "time_mask": time_mask, "freq_mask": freq_mask}
        self.opset = opset
        self.labels: tuple[str, ...] = ()
        self.model = None

    # -- subclass hooks
    def build_network(self, *, n_classes: int):
        """An uncompiled-or-compiled Keras model: ``mel_image`` [H, W, 3] -> softmax [K], with a layer ``embedding``."""
        raise NotImplementedError

    def architecture(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- data
    def images(self, waveforms: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """float32 [n, S] at 22,050 Hz -> the network input float32 [n, H, W, 3] in [0, 1] (numpy reference)."""
        height, width = self.spec.image_size
        parts = [to_model_input(db_to_image(mel_db(waveforms[i : i + batch_size], self.spec), self.spec))
                 for i in range(0, len(waveforms), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, height, width, 3), np.float32)

    def random_crops(self, train, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One epoch of crops: per track, as many random ``clip_samples`` crops as it has clips."""
        track_ids = np.array(train.track_ids)
        crops, labels = [], []
        for track in dict.fromkeys(train.track_ids):
            index = np.flatnonzero(track_ids == track)
            signal = train.waveforms[index].reshape(-1)
            starts = rng.integers(0, len(signal) - self.clip_samples + 1, size=len(index))
            crops += [signal[s : s + self.clip_samples] for s in starts]
            labels += [int(train.labels[index[0]])] * len(index)
        return np.stack(crops), np.array(labels, np.int64)

    def augment(self, images: np.ndarray, onehot: np.ndarray, weights: np.ndarray, rng: np.random.Generator):
        """SpecAugment masks on every image, then mixup of shuffled pairs (images, soft labels, weights)."""
        images = images.copy()
        n, height, width, _ = images.shape
        for i in range(n):
            fill = images[i].mean(axis=(0, 1))
            t = rng.integers(0, int(self.recipe["time_mask"] * width) + 1)
            t0 = rng.integers(0, width - t + 1)
            images[i, :, t0 : t0 + t] = fill
            f = rng.integers(0, int(self.recipe["freq_mask"] * height) + 1)
            f0 = rng.integers(0, height - f + 1)
            images[i, f0 : f0 + f] = fill
        if self.recipe["mixup"] > 0:
            lam = rng.beta(self.recipe["mixup"], self.recipe["mixup"], size=n).astype(np.float32)
            order = rng.permutation(n)
            images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[order]
            onehot = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[order]
            weights = lam * weights + (1 - lam) * weights[order]
        return images.astype(np.float32), onehot.astype(np.float32), weights.astype(np.float32)

    # -- the Family protocol
    def fit(self, train, validation, *, labels: tuple[str, ...], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
        """Train with the recipe; early stopping on ``validation`` loss (on training loss when it is empty)."""
        import keras

        self.labels = tuple(labels)
        k = len(labels)
        configure_runtime(seed=seed)
        rng = np.random.default_rng(seed)
        self.model = self.build_network(n_classes=k)
        r = self.recipe
        self.model.compile(optimizer=keras.optimizers.Adam(learning_rate=r["learning_rate"]),
                           loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
        counts = np.bincount(train.labels, minlength=k).astype(np.float64)
        class_weight = np.where(counts > 0, len(train.labels) / (k * np.maximum(counts, 1)), 0.0).astype(np.float32)
        eye = np.eye(k, dtype=np.float32)
        held_out = (self.images(validation.waveforms), eye[validation.labels]) if len(validation) else None
        best = (math.inf, 0, None)
        history = []
        started = time.perf_counter()
        for epoch in range(r["max_epochs"]):
            rate = r["learning_rate"] * (0.1 if epoch == 0 else
                                         0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / max(1, r["max_epochs"] - 1))))
            self.model.optimizer.learning_rate.assign(rate)
            waveforms, hard = self.random_crops(train, rng)
            images, soft, weights = self.augment(self.images(waveforms), eye[hard], class_weight[hard], rng)
            fitted = self.model.fit(images, soft, sample_weight=weights, batch_size=r["batch_size"], epochs=1,
                                    shuffle=True, verbose=0, validation_data=held_out)
            logs = {key: float(v[-1]) for key, v in fitted.history.items()}
            monitored = logs.get("val_loss", logs["loss"])
            history.append({"epoch": epoch + 1, "learning_rate": rate, **logs})
            log(f"{self.name} epoch {epoch + 1}: " + ", ".join(f"{key} {v:.4f}" for key, v in logs.items()))
            if monitored < best[0]:
                best = (monitored, epoch + 1, self.model.get_weights())
            elif epoch + 1 - best[1] >= r["patience"]:
                break
        self.model.set_weights(best[2])
        best_row = history[best[1] - 1]
        return {"epochs": len(history), "best_epoch": best[1], "train_seconds": round(time.perf_counter() - started, 2),
                "validation_loss": best_row.get("val_loss"), "validation_accuracy": best_row.get("val_accuracy"),
                "train_loss": best_row["loss"], "params_count": int(self.model.count_params()), "history": history}

    def predict(self, waveforms: np.ndarray):
        """numpy + Pillow images (:meth:`images`, the training path) -> Keras, in true float32."""
        return keras_predict(self.model, self.images(np.asarray(waveforms, np.float32)))

    def to_onnx(self) -> onnx.ModelProto:
        """:func:`genretag.graph.paper_image_frontend` composed with :func:`network_to_onnx` of the trained network.

        Raises ExportError when ``opset`` is not the front end's (:data:`genretag.graph.OPSET`: one opset per composed graph).
        """
        if self.opset != OPSET:
            raise ExportError(f"export.opset {self.opset}: the waveform front end is built at opset {OPSET}; the network must match it")
        return compose(paper_image_frontend(self.spec), network_to_onnx(self.model, image_size=self.spec.image_size, opset=self.opset))

    def preprocessing(self) -> dict[str, Any]:
        """``frontend`` and the PreprocessingSpec fields as JSON values (what the contract stores and gives back)."""
        return {"frontend": "paper mel image", **json.loads(self.spec.to_json())}

    def describe(self) -> dict[str, Any]:
        return {"family": self.name, **self.architecture(), "parameters": int(self.model.count_params()) if self.model else None,
                "pretrained": None, "recipe": dict(self.recipe),
                "image_size": list(self.spec.image_size)}

    def save(self, directory: Path) -> None:
        """``model.keras`` (atomic) and ``family.json`` (labels, the whole PreprocessingSpec, recipe)."""
        from genretag.core.atomic import write_json

        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, directory / MODEL_FILE)
        write_json(directory / STATE_FILE, {"labels": list(self.labels), "spec": json.loads(self.spec.to_json()), "recipe": self.recipe})

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote; raises :class:`~genretag.errors.TrainingDataError` when unusable."""
        import keras

        from genretag.core.errors import TrainingDataError

        try:
            state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
            self.model = keras.models.load_model(directory / MODEL_FILE, compile=False)
        except (OSError, ValueError, KeyError) as exc:
            raise TrainingDataError(f"{directory}: cannot read the trained {self.name} model ({exc})") from exc
        self.labels = tuple(state["labels"])
        self.spec = PreprocessingSpec.from_json(json.dumps(state["spec"]))


# --------------------------------------------------------------------------- Keras -> ONNX, Keras reference


def _with_embedding(model):
    """The same Keras model returning (probabilities, input of its last Dense layer = the embedding)."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ExportError(f"model {model.name!r} has no Dense layer: no embedding to expose")
    return keras.Model(model.inputs, [model.outputs[0], dense[-1].input], name=f"{model.name}_with_embedding")


def keras_predict(model, inputs: np.ndarray, *, batch_size: int = 64) -> Prediction:
    """Keras's probabilities and embedding in true float32 on NHWC images in [0, 1]: TF32
    (TensorFlow's default on Ampere and newer GPUs) is switched off for this process, or the
    reference itself would be off by ~1e-3."""
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)
    both = _with_embedding(model)
    parts = [both(inputs[start : start + batch_size], training=False) for start in range(0, len(inputs), batch_size)]
    probabilities = [np.asarray(keras.ops.convert_to_numpy(p), dtype=np.float32) for p, _ in parts]
    embedding = [np.asarray(keras.ops.convert_to_numpy(e), dtype=np.float32).reshape(len(p), -1) for p, e in zip(probabilities, (e for _, e in parts))]
    return Prediction(probabilities=np.concatenate(probabilities), embedding=np.concatenate(embedding))


def network_to_onnx(model, *, image_size: tuple[int, int], opset: int) -> onnx.ModelProto:
    """Keras network -> ONNX: input ``mel_image`` float32 [N, H, W, 3] in [0, 1], outputs ``probabilities``
    [N, K] then ``embedding`` [N, D] (:func:`_with_embedding`), byte-stable names.

    The model is wrapped in a ``tf.function`` and converted with ``tf2onnx.convert.from_function``
    (``from_keras`` breaks on Keras 3). Raises ExportError for an opset tf2onnx 1.17 cannot write or a failed conversion.
    """
    import tensorflow as tf
    import tf2onnx

    if not 13 <= opset <= 18:
        raise ExportError(f"export.opset {opset}: tf2onnx 1.17 converts opsets 13..18 only")
    height, width = image_size
    signature = [tf.TensorSpec([None, height, width, 3], tf.float32, name=V1_INPUT_NAME)]
    both = _with_embedding(model)

    @tf.function(input_signature=signature)
    def serve(mel_image):
        probabilities, embedding = both(mel_image, training=False)
        flat = embedding if embedding.shape.rank == 2 else tf.reshape(embedding, [-1, int(np.prod(embedding.shape[1:]))])
        return {OUTPUT_NAME: tf.cast(probabilities, tf.float32), EMBEDDING_NAME: tf.cast(flat, tf.float32)}

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
    """Input ``mel_image``, outputs ``probabilities`` then ``embedding``, batch dimension named ``N``."""
    network = proto.graph
    initializers = {init.name for init in network.initializer}
    inputs = [value for value in network.input if value.name not in initializers]
    outputs = {value.name: value for value in network.output}
    if len(inputs) != 1 or set(outputs) != {OUTPUT_NAME, EMBEDDING_NAME}:
        raise ExportError(
            f"converted graph has inputs {[v.name for v in inputs]} and outputs {sorted(outputs)}; "
            f"expected one input and outputs {OUTPUT_NAME}, {EMBEDDING_NAME}"
        )
    if inputs[0].name != V1_INPUT_NAME:
        rename_tensor(network, inputs[0].name, V1_INPUT_NAME)
    ordered = [outputs[OUTPUT_NAME], outputs[EMBEDDING_NAME]]
    del network.output[:]
    network.output.extend(ordered)
    for value in (inputs[0], *network.output):
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):  # tf2onnx numbers unknown dimensions per process (unk__12)
                dim.Clear()
                if index == 0:
                    dim.dim_param = BATCH_DIM
    return proto
