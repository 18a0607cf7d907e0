"""The paper's architectures (Holst 2021, experiments 1-10) from one shared block builder.

Every model maps a float32 NHWC image in [0, 1] (``spectrogram.to_model_input``) to
``Dense(n_classes, softmax)``. The last hidden layer is ``Dense(128, relu)`` named
``"embedding"``; :func:`embed` returns its activations (the paper's t-SNE, Figure 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import genretag  # noqa: F401  - offline/quiet environment before TensorFlow loads
from genretag.core.errors import ConfigError

EMBEDDING_LAYER = "embedding"
HIDDEN_UNITS = 128
PAPER_INPUT_SHAPE: tuple[int, int, int] = (128, 128, 3)


@dataclass(frozen=True)
class Architecture:
    """What distinguishes one experiment from another; :func:`build_model` does the rest.

    Conv models: ``len(filters)`` blocks of Conv2D(f, kernel, padding, relu) -> MaxPool(2)
    [-> Dropout(dropout)], then Flatten -> ``dense_layers`` x Dense(128, relu) -> softmax.
    ``l2`` > 0 puts an L2 kernel penalty on every hidden (conv and dense) layer.
    """

    description: str
    paper_params: int
    filters: tuple[int, ...] = ()
    kernel_size: int = 3
    padding: str = "valid"
    dropout: float = 0.0
    dense_layers: int = 1
    l2: float = 0.0
    input_shape: tuple[int, int, int] = PAPER_INPUT_SHAPE


def _conv(filters: tuple[int, ...], **kwargs) -> dict:
    return {"filters": filters, **kwargs}


_EXP4 = _conv((128,) * 3, dropout=0.2)
_EXP8 = _conv((128,) * 6, kernel_size=5, padding="same", dropout=0.3)

EXPERIMENTS: dict[str, Architecture] = {
    "exp1": Architecture("dense 128-128, no convolution", 6_309_386, dense_layers=2),
    "exp2": Architecture("exp1 + L2 0.003", 6_309_386, dense_layers=2, l2=0.003),
    "exp3": Architecture("2 x conv128 3x3 valid + maxpool", 14_898_186, **_conv((128, 128))),
    "exp3r": Architecture("exp3 + L2 0.003", 14_898_186, **_conv((128, 128)), l2=0.003),
    "exp4": Architecture("3 x conv128 3x3 valid + maxpool + dropout 0.2", 3_511_434, **_EXP4),
    "exp4r": Architecture("exp4 + L2 0.003", 3_511_434, **_EXP4, l2=0.003),
    "exp5": Architecture("exp4 with 128/256/512 filters", 14_325_386, **{**_EXP4, "filters": (128, 256, 512)}),
    "exp6": Architecture("exp4 with padding same", 4_494_474, **{**_EXP4, "padding": "same"}),
    "exp7": Architecture("6 x conv128 3x3 same + maxpool + dropout 0.2", 808_458, **_conv((128,) * 6, padding="same", dropout=0.2)),
    "exp8": Architecture("6 x conv128 5x5 same + maxpool + dropout 0.3", 2_125_322, **_EXP8),
    "exp9": Architecture("exp8 with dropout 0.5", 2_125_322, **{**_EXP8, "dropout": 0.5}),
    "exp10": Architecture("exp8 on 220x216 images", 2_207_242, **_EXP8, input_shape=(220, 216, 3)),
}


def least_image_side(spec: Architecture) -> int:
    """The smallest image side (pixels) that leaves every MaxPool(2) of ``spec`` at least one pixel: walking
    the blocks back from 1, each 2x2 pool doubles it and a ``valid`` k x k convolution adds k - 1."""
    side = 1
    for _ in spec.filters:
        side = 2 * side + (spec.kernel_size - 1 if spec.padding == "valid" else 0)
    return side


def experiment_names() -> list[str]:
    """Registered experiment names in the paper's order."""
    return list(EXPERIMENTS)


def architecture(name: str) -> Architecture:
    """The spec of experiment ``name``; an unknown name raises ConfigError listing the valid ones."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}"
        ) from None


def build_model(
    name: str,
    *,
    input_shape: Sequence[int] | None = None,
    n_classes: int = 10,
    learning_rate: float = 1e-3,
    mixed_precision: bool = False,
    jit_compile: bool = False,
):
    """Build and compile experiment ``name`` (Adam, categorical cross-entropy, accuracy).

    ``input_shape`` (H, W, C) defaults to the paper's input size of that experiment.
    ``mixed_precision`` computes in float16 (softmax in float32, dynamic loss scaling);
    ``jit_compile`` compiles the train/predict steps with XLA.
    """
    import keras

    spec = architecture(name)
    shape = tuple(int(v) for v in (input_shape or spec.input_shape))
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"{name}: input_shape must be (height, width, channels), got {shape}")
    if n_classes < 2:
        raise ConfigError(f"{name}: n_classes must be at least 2, got {n_classes}")
    dtype = "mixed_float16" if mixed_precision else None

    def penalty():
        return keras.regularizers.L2(spec.l2) if spec.l2 else None

    inputs = keras.Input(shape=shape, name="mel_image")
    x = inputs
    for index, filters in enumerate(spec.filters, start=1):
        x = keras.layers.Conv2D(
            filters, spec.kernel_size, padding=spec.padding, activation="relu",
            kernel_regularizer=penalty(), dtype=dtype, name=f"conv{index}",
        )(x)
        x = keras.layers.MaxPooling2D(2, dtype=dtype, name=f"pool{index}")(x)
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, dtype=dtype, name=f"dropout{index}")(x)
    x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    for index in range(1, spec.dense_layers + 1):
        last = index == spec.dense_layers
        x = keras.layers.Dense(
            HIDDEN_UNITS, activation="relu", kernel_regularizer=penalty(), dtype=dtype,
            name=EMBEDDING_LAYER if last else f"dense{index}",
        )(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=name)

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if mixed_precision:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=bool(jit_compile),
    )
    return model
