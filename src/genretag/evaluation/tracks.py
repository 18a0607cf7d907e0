"""Clips (windows) grouped by the track they were cut from: the one grouping that the track aggregation's
users share (calibration's track means, the open-set track embeddings and scores, evaluation's track
predictions).

Tracks are numbered in first-seen order (``pandas.factorize(sort=False)``), so every per-track array
lines up with the order the tracks first appear in the clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class TrackGroups:
    """The track of each of n clips: ``codes`` int64 [n] indexes ``names`` (the T track ids, first-seen order)."""

    names: tuple
    codes: np.ndarray

    @classmethod
    def of(cls, track_ids: Sequence | np.ndarray) -> TrackGroups:
        """Group n clips by their track ids ([n], any hashable ids, compared as given: 1 and "1" are two tracks; a missing
        id (None, NaN) is a track of its own)."""
        codes, names = pd.factorize(pd.Series(np.asarray(track_ids, dtype=object).tolist(), dtype=object), sort=False,
                                    use_na_sentinel=False)
        return cls(tuple(names), codes.astype(np.int64))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def counts(self) -> np.ndarray:
        """Clips per track: int64 [T]."""
        return np.bincount(self.codes, minlength=len(self)).astype(np.int64)

    @property
    def first(self) -> np.ndarray:
        """The index of each track's first clip: int64 [T]."""
        first = np.full(len(self), len(self.codes), dtype=np.int64)
        np.minimum.at(first, self.codes, np.arange(len(self.codes), dtype=np.int64))
        return first

    def sums(self, values: np.ndarray) -> np.ndarray:
        """The sum of each track's rows of ``values`` float [n, D]: float64 [T, D]."""
        rows = np.asarray(values, dtype=np.float64)
        sums = np.zeros((len(self), *rows.shape[1:]))
        np.add.at(sums, self.codes, rows)
        return sums

    def means(self, values: np.ndarray) -> np.ndarray:
        """The mean of each track's rows of ``values`` float [n, D]: float64 [T, D]."""
        sums = self.sums(values)
        return sums / self.counts.reshape(-1, *([1] * (sums.ndim - 1)))
