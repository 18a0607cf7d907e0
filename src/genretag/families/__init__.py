"""Model families: every way genretag can turn a 3-s clip into genre probabilities.

One interface for all families, one module per family (``genretag.families.<module>``). A family
trains on the clips of a split, predicts with its own framework (the parity reference), and
exports a contract-v2 ONNX graph (waveform in; probabilities and embedding out; see
:mod:`genretag.contract`). The gate, the tagger and the handoff only ever see that graph, so they
never branch on the family. Adding a family touches one new module and one line in
:data:`FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import onnx


@dataclass(frozen=True)
class ClipSet:
    """Clips of one split, as waveforms at the family's sample rate.

    ``waveforms``: float32 [n, S] (S = clip samples at ``sample_rate`` Hz, mono, full scale ±1);
    ``labels``: int64 [n], indices into the label tuple; ``track_ids``/``clip_ids``: n strings each.
    """

    waveforms: np.ndarray
    labels: np.ndarray
    track_ids: tuple[str, ...]
    clip_ids: tuple[str, ...]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.clip_ids)


@dataclass(frozen=True)
class Prediction:
    """``probabilities`` float32 [n, K] (softmax, label order) and ``embedding`` float32 [n, D]."""

    probabilities: np.ndarray
    embedding: np.ndarray


class Family(Protocol):
    """What every model family provides (see the module docstring)."""

    name: ClassVar[str]
    sample_rate: int  # Hz, the rate of the contract's ``waveform`` input
    clip_samples: int  # S

    def fit(self, train: ClipSet, validation: ClipSet, *, labels: tuple[str, ...], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
        """Train on ``train`` (``validation`` for early stopping/calibration); returns training facts for MLflow."""

    def predict(self, waveforms: np.ndarray) -> Prediction:
        """The framework's own forward pass on float32 [n, S]: the parity reference of :meth:`to_onnx`."""

    def to_onnx(self) -> onnx.ModelProto:
        """The trained model as a contract-v2 graph (``waveform`` -> ``probabilities``, ``embedding``), without metadata."""

    def preprocessing(self) -> dict[str, Any]:
        """JSON-able description of what the graph computes before the network (stored in the contract)."""

    def describe(self) -> dict[str, Any]:
        """Model-card facts: architecture, parameters, pretrained weights and licence, training recipe."""

    def save(self, directory: Path) -> None:
        """Write the trained state (framework files) under ``directory`` atomically."""


FAMILIES: Mapping[str, Callable[..., Family]] = {}
