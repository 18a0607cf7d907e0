"""Family ``paper-expN``: the paper's CNNs (Holst 2021, experiments 1-10) with a recipe that learns on little data.

The architectures are :func:`genretag.models.build_model`'s, unchanged (their parameter counts
are asserted by tests/model/test_models.py); only the training differs from the paper's fixed
clips: random crops, SpecAugment masks, mixup, a cosine schedule, early stopping and class
weights (:mod:`genretag.families.keras_images`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from genretag.families import register_family
from genretag.families.keras_images import KerasImageFamily
from genretag.families.paper_models import EXPERIMENTS, architecture, build_model, least_image_side


@register_family
class Paper(KerasImageFamily):
    """``paper-<experiment>``, e.g. ``paper-exp8``; an unknown experiment raises ConfigError."""

    name: ClassVar[str] = "paper"
    variants: ClassVar[tuple[str, ...]] = tuple(EXPERIMENTS)

    def __init__(self, *, variant: str = "exp8", **options: Any) -> None:
        architecture(variant)
        super().__init__(**options)
        self.experiment = variant
        self.name = f"paper-{variant}"  # the candidate id, per instance

    @classmethod
    def check_input(cls, params: Any, *, variant: str | None) -> None:
        """``spectrogram.image_size`` must be large enough for the experiment's conv/pool blocks
        (:func:`~genretag.families.paper_models.least_image_side`); ValueError naming the key otherwise."""
        spec = architecture(variant or "exp8")
        least = least_image_side(spec)
        size = list(params.spectrogram.image_size)
        if min(size) < least:
            raise ValueError(
                f"spectrogram.image_size = {size}: paper-{variant} needs at least [{least}, {least}] "
                f"({len(spec.filters)} blocks of {spec.kernel_size}x{spec.kernel_size} {spec.padding} convolution + 2x2 max-pool)"
            )

    def build_network(self, *, n_classes: int):
        return build_model(self.experiment, input_shape=(*self.spec.image_size, 3), n_classes=n_classes)

    def architecture(self) -> dict[str, Any]:
        spec = architecture(self.experiment)
        return {"architecture": f"{self.experiment}: {spec.description}", "paper_parameters": spec.paper_params}
