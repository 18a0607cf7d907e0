"""Each candidate's test-split clip probabilities, stored by the evaluate stage for the register stage.

``data/scores/<candidate>.npz`` (a DVC output of evaluate) holds ``probabilities`` float64
[n_clips, K] in the test split's genre order, the ``clip_ids`` they belong to, the ``genres``, the
test split's ``fingerprint`` (:meth:`genretag.evaluation.evaluate.TestAudio.fingerprint`) and the
``onnx_sha256`` of the model file that produced them (:func:`genretag.audio.decoding.file_sha256`). The register stage trusts them only for the
same file on the same test split; otherwise it scores the model from audio itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genretag.core.atomic import atomic_open
from genretag.core.config import Layout

SCORES_DIR = ("data", "scores")


def scores_path(paths: Layout, *, candidate: str) -> Path:
    """``data/scores/<candidate>.npz`` of the project at ``paths``."""
    return paths.root.joinpath(*SCORES_DIR, f"{candidate}.npz")


def write_test_scores(path: Path, *, probabilities: np.ndarray, clip_ids: Sequence[str], genres: Sequence[str],
                      fingerprint: str, onnx_sha256: str) -> Path:
    """Store ``probabilities`` float [n_clips, K] (``genres`` order) of the test clips ``clip_ids`` atomically at ``path``."""
    with atomic_open(path, "wb") as file:
        np.savez(file, probabilities=np.asarray(probabilities, dtype=np.float64), clip_ids=np.asarray(list(clip_ids), dtype=str),
                 genres=np.asarray(list(genres), dtype=str), fingerprint=np.asarray(fingerprint), onnx_sha256=np.asarray(onnx_sha256))
    return path


def read_test_scores(path: Path, *, onnx_sha256: str, fingerprint: str, genres: Sequence[str], n_clips: int) -> np.ndarray | None:
    """The stored probabilities float64 [n_clips, K] when ``path`` holds them for this very model file
    (``onnx_sha256``), test split (``fingerprint``) and genre order; None when it does not exist, is
    unreadable or was written for anything else (the caller then scores the model itself)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            same = (str(stored["onnx_sha256"]) == onnx_sha256 and str(stored["fingerprint"]) == fingerprint
                    and [str(g) for g in stored["genres"]] == list(genres))
            probabilities = np.asarray(stored["probabilities"], dtype=np.float64)
    except (OSError, ValueError, KeyError):
        return None
    return probabilities if same and probabilities.shape == (n_clips, len(genres)) else None
