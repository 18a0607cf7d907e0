"""Early exit per track (genretag.tagging.early_exit) and the memory cap on a session run's batch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from genretag.onnx.contract import LIVE_ACTIVATIONS, largest_activation, memory_batch_limit
from genretag.onnx.session import open_model
from genretag.tagging.early_exit import EarlyExit, hoeffding_serfling_margin, settled, spread_order
from genretag.tagging.run import tag_catalog
from genretag.tagging.scoring import score_files
from genretag.tagging.store import Catalog
from tests.tagging_support import make_good_files, make_onnx_model


def test_the_spread_order_is_a_bit_reversal_permutation_whose_prefixes_cover_the_track() -> None:
    assert list(spread_order(8)) == [0, 4, 2, 6, 1, 5, 3, 7]
    assert list(spread_order(5)) == [0, 4, 2, 1, 3]
    assert list(spread_order(1)) == [0] and list(spread_order(0)) == []
    order = spread_order(23)
    assert sorted(order) == list(range(23))
    assert min(order[:4]) == 0 and max(order[:4]) >= 16  # four windows already span the track


def _windows(first: float, second: float, n: int, k: int = 10) -> np.ndarray:
    rest = (1.0 - first - second) / (k - 2)
    return np.tile([first, second] + [rest] * (k - 2), (n, 1))


def test_the_rest_at_worst_case_settles_a_gap_for_certain() -> None:
    # 3 of 4 windows scored, gap 0.4: 3 x 0.4 = 1.2 > the 1 window left at worst case (d = -1)
    assert settled(_windows(0.6, 0.2, 3), total=4, risk=1e-12, round_windows=1)
    assert not settled(_windows(0.5, 0.3, 3), total=4, risk=1e-12, round_windows=1)  # 0.6 < 1
    assert settled(_windows(0.3, 0.3, 4), total=4, risk=0.05, round_windows=1)  # every window scored


def test_the_hoeffding_serfling_margin_decides_where_the_rest_could_still_change_the_genre() -> None:
    n, total, risk, rounds = 20, 100, 0.2, 4
    delta = risk / (9 * math.ceil(total / rounds))  # 9 rivals, 25 looks
    margin = hoeffding_serfling_margin(scored=n, total=total, delta=delta)
    assert margin == pytest.approx(2 * math.sqrt((1 - (n - 1) / total) * math.log(1 / delta) / (2 * n)))
    assert n * margin < total - n  # this case is the bound's, not the certain rule's
    assert margin < 0.9
    assert settled(_windows(0.05 + margin + 0.01, 0.05, n), total=total, risk=risk, round_windows=rounds)
    assert not settled(_windows(0.05 + margin - 0.01, 0.05, n), total=total, risk=risk, round_windows=rounds)
    assert hoeffding_serfling_margin(scored=total, total=total, delta=delta) == 0.0


@pytest.fixture(scope="module")
def confident(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_onnx_model(tmp_path_factory.mktemp("models") / "m.onnx", version="1", seed=2)  # a gap of ~0.8 on these tones


def test_early_exit_stops_a_long_track_early_with_the_genre_of_all_its_windows(confident: Path, tmp_path: Path) -> None:
    model = open_model(confident, prefer_gpu=False)
    make_good_files(tmp_path / "good")
    items = [(p.name, p) for p in sorted((tmp_path / "good").rglob("*.*"))]
    full = {r.key: r.score for r in score_files(model, items, max_windows=0, parallel=False)}
    early = {r.key: r.score for r in score_files(model, items, max_windows=0, parallel=False,
                                                 early_exit=EarlyExit(round_windows=2, risk=0.05))}
    assert {k: s.label for k, s in early.items()} == {k: s.label for k, s in full.items()}
    long = early["long70.wav"]
    assert long.windows_available == full["long70.wav"].windows_scored == 23
    assert 2 <= long.windows_scored < 23 and long.windows_scored % 2 == 0  # whole rounds of 2
    assert list(long.window_starts_s) == sorted(long.window_starts_s)  # the timeline in time order
    assert set(long.window_starts_s) < set(full["long70.wav"].window_starts_s)
    assert full["long70.wav"].windows_available == 23  # without early exit every window is used


def test_the_catalog_records_the_windows_used_of_those_available(confident: Path, tmp_path: Path) -> None:
    make_good_files(tmp_path / "good")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    tag_catalog(tmp_path / "good", model=open_model(confident, prefer_gpu=False), database_url=url, max_windows=0, workers=1,
                early_exit=EarlyExit(round_windows=2, risk=0.05))
    with Catalog(url) as catalog:
        row = catalog.read().set_index("track_id").loc["long70"]
    assert row["windows_available"] == 23 and row["windows_scored"] < 23
    assert len(json.loads(row["window_probabilities"])["start_s"]) == row["windows_scored"]


def test_the_memory_budget_caps_the_clips_per_session_run_and_changes_no_prediction(confident: Path) -> None:
    largest = largest_activation(onnx.load(str(confident)))
    assert largest == 3 * 22050  # the waveform itself is this tiny graph's largest tensor per clip
    assert 2**20 // (LIVE_ACTIVATIONS * 4 * largest) == 0
    assert memory_batch_limit(onnx.load(str(confident)), budget_mb=1) == 1  # at least one clip, whatever the budget
    assert memory_batch_limit(onnx.load(str(confident)), budget_mb=0) == 0
    capped, free = open_model(confident, prefer_gpu=False, batch_memory_mb=8), open_model(confident, prefer_gpu=False)
    assert (capped.max_batch, free.max_batch) == (8 * 2**20 // (LIVE_ACTIVATIONS * 4 * largest), 0)
    waveforms = np.random.default_rng(0).normal(0, 0.1, (40, 3 * 22050)).astype(np.float32)
    np.testing.assert_allclose(capped.predict(waveforms).probabilities, free.predict(waveforms).probabilities, rtol=1e-5, atol=1e-6)
