"""genretag.evaluation.tracks.TrackGroups: clips grouped by track, in first-seen order."""

from __future__ import annotations

import numpy as np

from genretag.evaluation.tracks import TrackGroups


def test_tracks_are_numbered_in_first_seen_order_and_their_means_equal_the_per_track_masks() -> None:
    ids = np.array(["b", "a", "b", "c", "a", "b"])
    values = np.random.default_rng(0).normal(size=(6, 3))
    groups = TrackGroups.of(ids)
    assert groups.names == ("b", "a", "c") and list(groups.codes) == [0, 1, 0, 2, 1, 0]
    assert list(groups.counts) == [3, 2, 1] and list(groups.first) == [0, 1, 3]
    np.testing.assert_allclose(groups.means(values), np.stack([values[ids == t].mean(0) for t in ("b", "a", "c")]))
    np.testing.assert_allclose(groups.sums(values[:, 0]), [values[[0, 2, 5], 0].sum(), values[[1, 4], 0].sum(), values[3, 0]])
    assert len(TrackGroups.of([])) == 0


def test_ids_are_compared_as_given_and_a_missing_id_is_a_track_of_its_own() -> None:
    mixed = TrackGroups.of(["a", 1, "1", 1])
    assert mixed.names == ("a", 1, "1") and list(mixed.counts) == [1, 2, 1]
    missing = TrackGroups.of(["a", None, "a", None])
    assert len(missing) == 2 and list(missing.codes) == [0, 1, 0, 1] and list(missing.first) == [0, 1]
