"""Family ``compact``: a small CNN over the paper's mel image, quick on a CPU (~0.1 M parameters).

Four blocks of Conv2D 3x3 (32, 48, 64, 96 filters, 'same', no bias) -> BatchNormalization ->
ReLU -> MaxPool 2 (the last block without pooling), then global average pooling, a 128-unit
``embedding`` layer, dropout 0.3 and softmax (batch-norm momentum 0.9: few steps per epoch on little data). Batch normalisation and global pooling keep it
small and independent of the image width (Ioffe & Szegedy 2015; Lin et al. 2014). Trained with
the recipe of :mod:`genretag.families.keras_images`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from genretag.families import register_family
from genretag.families.keras_images import KerasImageFamily
from genretag.families.paper_models import EMBEDDING_LAYER, HIDDEN_UNITS

FILTERS = (32, 48, 64, 96)
PARAMETER_LIMIT = 300_000


@register_family
class Compact(KerasImageFamily):
    """``compact``: see the module docstring."""

    name: ClassVar[str] = "compact"

    def build_network(self, *, n_classes: int):
        """``mel_image`` [H, W, 3] -> softmax [n_classes]; ~0.1 M parameters (tests assert < 300 k)."""
        import keras

        inputs = keras.Input(shape=(*self.spec.image_size, 3), name="mel_image")
        x = inputs
        for index, filters in enumerate(FILTERS, start=1):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"norm{index}")(x)
            x = keras.layers.ReLU(name=f"relu{index}")(x)
            if index < len(FILTERS):
                x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
        x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
        x = keras.layers.Dense(HIDDEN_UNITS, activation="relu", name=EMBEDDING_LAYER)(x)
        x = keras.layers.Dropout(0.3, name="dropout")(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
        return keras.Model(inputs, outputs, name=self.name)

    def architecture(self) -> dict[str, Any]:
        return {"architecture": f"4 x (conv 3x3 {'/'.join(map(str, FILTERS))} + batch norm + ReLU [+ maxpool]), "
                                "global average pool, dense 128, softmax"}
