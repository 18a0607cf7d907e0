"""Family ``musicnn-msd``: the pretrained musicnn MSD network, frozen, with a logistic-regression head.

Pons & Serra (2019), "musicnn: pre-trained convolutional neural networks for music audio tagging",
ISMIR late-breaking demo; the checkpoint ``MSD_musicnn`` ships in the PyPI wheel ``musicnn==0.1.0``
(ISC licence, Music Technology Group, Universitat Pompeu Fabra; the weights carry no separate
terms). Nothing is downloaded at run time: the wheel is pinned in ``requirements.in`` and installed
without its unsatisfiable declared dependencies (``numpy<1.17``, ``tensorflow>=1.14``).

The graph, all in one ONNX model at 16 kHz (input ``waveform`` float32 [N, 48000]):

1. musicnn's log-mel (:func:`genretag.features.musicnn_log_mel`; in the graph
   :func:`genretag.graph.musicnn_log_mel_frontend`): 512-point STFT, hop 256, 96 Slaney mel bands,
   ``log10(10000 x + 1)`` in **float32** (musicnn's own code casts to float16 first, which overflows
   to inf on loud music: see ``shared/notes/musicnn-facts.md``) -> [N, T, 96];
2. the network's front and mid end re-written from the checkpoint variables with plain TF2 ops
   (:func:`embedding_network`), then max and mean over time (musicnn's ``max_pool``/``mean_pool``,
   1,506-d), then the back end's batch norm and penultimate dense layer with its ReLU: the 200-d
   **embedding** (musicnn's ``dense`` layer, before the batch norm it feeds; musicnn's extractor calls
   that normalised output ``penultimate``);
3. StandardScaler + multinomial LogisticRegression (scikit-learn, exported by skl2onnx) ->
   ``probabilities`` [N, K].

Why the penultimate layer and not the pooled features: on ../shared/gtzan-sample it measured better for
genre similarity (precision@5 of the nearest tracks) and for "none of these genres" (the track kNN
score, leave-two-genres-out), with equal genre accuracy, at 7.5x fewer dimensions (``bench/similarity.py``,
``bench/open_set.py``; README "Similar tracks" and "None of these genres"). The ReLU output measured
a little better than the normalised one on both (within noise), and cosine distances on it need no
affine correction.

Only the head is trained. A checkpoint that is missing, altered or unreadable raises
:class:`PretrainedWeightsError`: the family never runs random weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from genretag.dsp import features
from genretag.onnx.contract import EMBEDDING_NAME
from genretag.core.errors import GenretagError
from genretag.families import register_family
from genretag.families.heads import FeatureHeadFamily

N_MELS = features.MUSICNN_N_MELS
POOLED_SIZE = 1_506  # 2 x (561 front-end + 3 x 64 mid-end channels): musicnn's flattened tmp_pool
EMBEDDING_SIZE = 200  # units of musicnn's penultimate dense layer (models.backend, output_units of MSD_musicnn)
OUTPUTS = ("penultimate", "pooled")
BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default, used by musicnn/models.py

CHECKPOINT = "MSD_musicnn"
CHECKPOINT_SHA256: Mapping[str, str] = {
    # SHA-256 of the files of musicnn 0.1.0's wheel (its RECORD holds the same digests, base64url).
    ".data-00000-of-00001": "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6",
    ".index": "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8",
}
LICENCE = "ISC (musicnn 0.1.0, Music Technology Group, Universitat Pompeu Fabra 2019)"
SOURCE = "PyPI wheel musicnn==0.1.0, checkpoint MSD_musicnn (Pons & Serra 2019)"


class PretrainedWeightsError(GenretagError):
    """Pretrained weights are missing, do not match their pinned SHA-256, or cannot be read."""


# --------------------------------------------------------------------------- weights


def checkpoint_dir() -> Path:
    """Folder of the ``MSD_musicnn`` checkpoint inside the installed musicnn wheel.

    Raises :class:`PretrainedWeightsError` when musicnn is not installed.
    """
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedWeightsError(
            "musicnn is not installed: install the pinned wheel without its dependencies "
            "(`uv pip install --no-deps musicnn==0.1.0`, see requirements.in)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / CHECKPOINT


def verify_checkpoint(directory: Path) -> None:
    """Check every checkpoint file against :data:`CHECKPOINT_SHA256`; raise :class:`PretrainedWeightsError`."""
    for name, expected in CHECKPOINT_SHA256.items():
        path = directory / name
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise PretrainedWeightsError(f"{path}: cannot read the musicnn checkpoint ({exc.strerror or exc})") from exc
        if digest != expected:
            raise PretrainedWeightsError(f"{path}: SHA-256 {digest} differs from the pinned {expected} (altered checkpoint)")


def load_weights(directory: Path | None = None) -> dict[str, np.ndarray]:
    """The checkpoint's variables (Adam slots left out) as float32 arrays, by TF1 variable name.

    The wheel's ``checkpoint`` file names its author's home folder, so the variables are read by
    prefix (``<dir>/`` + the empty stem) with ``NewCheckpointReader``. The files are verified by
    hash first. Raises :class:`PretrainedWeightsError` for a missing, altered or unreadable checkpoint.
    """
    import tensorflow as tf

    directory = directory or checkpoint_dir()
    verify_checkpoint(directory)
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(str(directory) + "/")
        names = [n for n in reader.get_variable_to_shape_map() if "Adam" not in n and not n.endswith("_power")]
        weights = {name: np.asarray(reader.get_tensor(name), dtype=np.float32) for name in names}
    except Exception as exc:  # noqa: BLE001 - TF raises DataLossError, NotFoundError, ... for bad files
        raise PretrainedWeightsError(f"{directory}: cannot read the musicnn checkpoint ({exc})") from exc
    missing = [n for n in _REQUIRED_VARIABLES if n not in weights]
    if missing:
        raise PretrainedWeightsError(f"{directory}: checkpoint lacks variables {missing[:5]}")
    return weights


_CONVS = [f"conv2d{'' if i == 0 else f'_{i}'}" for i in range(8)]
_NORMS = [f"batch_normalization{'' if i == 0 else f'_{i}'}" for i in range(10)]  # 0-8 front/mid end, 9 back end
_REQUIRED_VARIABLES = [
    *(f"{c}/{p}" for c in _CONVS for p in ("kernel", "bias")),
    *(f"{b}/{p}" for b in _NORMS for p in ("gamma", "beta", "moving_mean", "moving_variance")),
    "dense/kernel", "dense/bias",
]
_BACK_END_VARIABLES = [*(f"{_NORMS[9]}/{p}" for p in ("gamma", "beta", "moving_mean", "moving_variance")), "dense/kernel", "dense/bias"]


# --------------------------------------------------------------------------- network


def embedding_network(weights: Mapping[str, np.ndarray], *, output: str = "penultimate") -> Callable:
    """musicnn's front, mid and back end (``musicnn/models.py``, ``build_musicnn`` and ``backend``) in inference
    mode, as TF2 ops, up to ``output``.

    Returns ``f(log_mel)``: float32 [N, T, 96] -> float32 [N, 1506] for ``output="pooled"`` (max over time of the
    753 mid-end channels interleaved with their mean, exactly musicnn's flattened ``tmp_pool``) or [N, 200] for
    ``output="penultimate"`` (the pooled features through ``batch_normalization_9`` and ``dense`` with its ReLU;
    dropout is the identity at inference). Raises ValueError for another ``output``.
    Variables: ``conv2d``/``_1`` timbral 7x38 and 7x67 (pad 3 in time), ``_2``-``_4`` temporal
    128/64/32x1 ('same'), ``_5``-``_7`` mid-end 7xC with residuals; batch norms in creation order.
    The weights are numpy constants, so tf2onnx folds them into initialisers.
    """
    import tensorflow as tf

    if output not in OUTPUTS:
        raise ValueError(f"musicnn output {output!r}: expected one of {OUTPUTS}")
    w = {name: np.asarray(value, dtype=np.float32) for name, value in weights.items()}

    def norm(x, index: int):
        b = _NORMS[index]
        scale = w[f"{b}/gamma"] / np.sqrt(w[f"{b}/moving_variance"] + BN_EPSILON)
        shift = w[f"{b}/beta"] - w[f"{b}/moving_mean"] * scale
        return x * scale.astype(np.float32) + shift.astype(np.float32)

    def conv(x, index: int, padding: str):
        c = _CONVS[index]
        return tf.nn.relu(tf.nn.conv2d(x, w[f"{c}/kernel"], strides=1, padding=padding) + w[f"{c}/bias"])

    def pad_time(x):
        return tf.pad(x, [[0, 0], [3, 3], [0, 0], [0, 0]])

    def pool_frequency(x):  # [N, T, F, C] -> [N, T, C]
        return tf.reduce_max(x, axis=2)

    def forward(log_mel):
        x = norm(log_mel[..., tf.newaxis], 0)  # [N, T, 96, 1]
        padded = pad_time(x)
        timbral = [pool_frequency(norm(conv(padded, i, "VALID"), i + 1)) for i in (0, 1)]
        temporal = [pool_frequency(norm(conv(x, i, "SAME"), i + 1)) for i in (2, 3, 4)]
        front = tf.concat(timbral + temporal, axis=2)[..., tf.newaxis]  # [N, T, 561, 1]
        layers = [front]
        h = tf.transpose(norm(conv(pad_time(front), 5, "VALID"), 6), [0, 1, 3, 2])  # [N, T, 64, 1]
        layers.append(h)
        for index in (6, 7):
            h = tf.transpose(norm(conv(pad_time(h), index, "VALID"), index + 1), [0, 1, 3, 2]) + h
            layers.append(h)
        mid = tf.concat(layers, axis=2)  # [N, T, 753, 1]
        pooled = tf.concat([tf.reduce_max(mid, axis=1), tf.reduce_mean(mid, axis=1)], axis=2)  # [N, 753, 2]
        flat = tf.reshape(pooled, [-1, POOLED_SIZE])
        if output == "pooled":
            return flat
        return tf.nn.relu(tf.matmul(norm(flat, 9), w["dense/kernel"]) + w["dense/bias"])  # [N, 200]

    return forward


@register_family
class MusicnnMSD(FeatureHeadFamily):
    """``musicnn-msd``: frozen MSD musicnn embedding (the 200-d penultimate layer) + a trained linear head, at 16 kHz.

    The checkpoint is verified and read when the family is created: a bad checkpoint raises
    :class:`PretrainedWeightsError` before anything is trained.
    """

    name: ClassVar[str] = "musicnn-msd"
    sample_rate = features.MUSICNN_SAMPLE_RATE
    clip_samples = features.MUSICNN_CLIP_SAMPLES

    def __init__(self, *, C: float | None = None, opset: int = 17, batch_size: int = 64, checkpoint: Path | None = None,
                 embedding_layer: str = "penultimate") -> None:
        """``embedding_layer``: ``"penultimate"`` (200-d, what the pipeline trains on) or ``"pooled"`` (1,506-d; for
        benchmarks that compare the two, :func:`embedding_network`). Raises ValueError for another layer."""
        import tensorflow as tf

        super().__init__(C=C, opset=opset, batch_size=batch_size)
        self.checkpoint = checkpoint or checkpoint_dir()
        self.weights = load_weights(self.checkpoint)
        self.embedding_layer = embedding_layer
        self._forward = embedding_network(self.weights, output=embedding_layer)
        self._compiled = tf.function(self._forward, reduce_retracing=True)
        self.embedding_size = EMBEDDING_SIZE if embedding_layer == "penultimate" else POOLED_SIZE

    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        """float32 [n, 48000] at 16 kHz -> embedding float32 [n, 200] (log-mel of :mod:`genretag.features`, TF forward)."""
        waveforms = np.asarray(waveforms, dtype=np.float32)
        parts = [
            self._compiled(features.musicnn_log_mel(waveforms[i : i + self.batch_size])).numpy()
            for i in range(0, len(waveforms), self.batch_size)
        ]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.embedding_size), np.float32)

    def frontend(self) -> onnx.ModelProto:
        from genretag.onnx.graph import musicnn_log_mel_frontend

        return musicnn_log_mel_frontend()

    def embedding_network(self) -> onnx.ModelProto:
        """The frozen network as ONNX (tf2onnx): ``log_mel`` float32 [N, T, 96] -> ``embedding`` [N, 200]."""
        import tensorflow as tf
        import tf2onnx

        from genretag.onnx.graph import rename_tensor

        signature = [tf.TensorSpec([None, None, N_MELS], tf.float32, name="log_mel")]
        model, _ = tf2onnx.convert.from_function(tf.function(self._forward), input_signature=signature, opset=self.opset)
        rename_tensor(model.graph, model.graph.output[0].name, EMBEDDING_NAME)
        return model

    def preprocessing(self) -> dict[str, Any]:
        return {
            "frontend": "musicnn log-mel", "sample_rate": self.sample_rate, "n_fft": features.MUSICNN_N_FFT,
            "hop_length": features.MUSICNN_HOP, "n_mels": N_MELS, "frames": features.MUSICNN_FRAMES,
            "pad_mode": features.MUSICNN_PAD_MODE, "scale": "log10(10000 x + 1), float32",
            "embedding": (f"musicnn MSD penultimate dense layer (ReLU) over max and mean over time of its mid-end features ({EMBEDDING_SIZE})"
                          if self.embedding_layer == "penultimate" else f"max and mean over time of musicnn MSD mid-end features ({POOLED_SIZE})"),
        }

    def describe_frozen(self) -> dict[str, Any]:
        return {
            "family": self.name, "architecture": ("musicnn (Pons & Serra 2019) front and mid end, frozen" if self.embedding_layer == "pooled" else
                                                 "musicnn (Pons & Serra 2019) front and mid end and penultimate dense layer, frozen"),
            "pretrained": SOURCE, "licence": LICENCE, "checkpoint_sha256": dict(CHECKPOINT_SHA256),
            "frozen_parameters": int(sum(self.weights[n].size for n in _REQUIRED_VARIABLES
                                         if self.embedding_layer == "penultimate" or n not in _BACK_END_VARIABLES)),
            "embedding_size": self.embedding_size,
        }
