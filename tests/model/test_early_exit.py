"""Early exit per track (genretag.tagging.early_exit) and the memory cap on a session run's batch."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from genretag.onnx.contract import LIVE_ACTIVATIONS, largest_activation, memory_batch_limit
from genretag.onnx.session import open_model
from genretag.tagging.early_exit import EarlyExit, betting_log_capital, fewest_windows, settled, spread_order
from genretag.tagging.run import tag_catalog
from genretag.tagging.scoring import TrackScore, score_files
from genretag.tagging.store import Catalog
from tests.conftest import tone, write_audio
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
    assert settled(_windows(0.6, 0.2, 3), total=4, risk=1e-12)
    assert not settled(_windows(0.5, 0.3, 3), total=4, risk=1e-12)  # 0.6 < 1
    assert settled(_windows(0.3, 0.3, 4), total=4, risk=0.05)  # every window scored


def _stream(rng: np.random.Generator, *, means: list[float], spread: float, n: int) -> np.ndarray:
    """n windows' probabilities float [n, K] around ``means`` (one per genre), noise ``spread``, renormalised."""
    windows = np.abs(rng.normal(means, spread, size=(n, len(means))))
    return windows / windows.sum(axis=1, keepdims=True)


def _decide(windows: np.ndarray, *, risk: float, round_windows: int) -> tuple[int, int]:
    """(genre, windows used) of windows float [N, K] taken in rounds until settled."""
    used = 0
    while True:
        used = min(used + round_windows, len(windows))
        if settled(windows[:used], total=len(windows), risk=risk):
            return int(windows[:used].mean(0).argmax()), used


def test_a_clear_stream_stops_early_with_the_genre_of_all_its_windows() -> None:
    rng = np.random.default_rng(5)
    clear = _stream(rng, means=[0.05, 0.8] + [0.15 / 8] * 8, spread=0.08, n=40)
    genre, used = _decide(clear, risk=0.05, round_windows=4)
    assert genre == 1 == int(clear.mean(0).argmax())
    assert used <= 16  # of 40: the certain rule alone would need n * gap > 40 - n, i.e. ~20 windows
    assert 16 * (clear[:16, 1] - np.sort(clear[:16].mean(0))[-2]).mean() < 40 - 16  # so the bet made the call


def test_an_ambiguous_stream_scores_every_window() -> None:
    rng = np.random.default_rng(6)
    ambiguous = _stream(rng, means=[0.4, 0.38] + [0.22 / 8] * 8, spread=0.15, n=40)
    assert _decide(ambiguous, risk=0.05, round_windows=4)[1] == 40


def test_the_betting_capital_grows_on_steady_gaps_and_not_on_gaps_around_zero() -> None:
    steady = np.full((8, 1), 0.6)
    assert np.all(np.diff([betting_log_capital(steady[:n], total=40)[0] for n in range(2, 9)]) > 0)
    noise = np.tile([[0.3], [-0.3]], (4, 1))
    assert betting_log_capital(noise, total=40)[0] < np.log(2)
    assert betting_log_capital(np.full((21, 1), 1.0), total=40)[0] == np.inf  # 21 of 40 at d = 1: certain


@pytest.mark.parametrize("risk", [0.05, 0.3])
def test_the_bound_holds_the_early_decision_equals_the_full_one_at_least_1_minus_risk_of_the_time(risk: float) -> None:
    rng = np.random.default_rng(7)
    agree, early = 0, 0
    trials = 400
    for _ in range(trials):  # close calls: two genres near each other, noisy windows, random order of the track's windows
        top = rng.uniform(0.25, 0.45)
        windows = _stream(rng, means=[top, top - rng.uniform(0.0, 0.12), 0.3, 0.05] + [0.02] * 6, spread=0.2, n=int(rng.integers(8, 41)))
        genre, used = _decide(windows, risk=risk, round_windows=2)
        agree += genre == int(windows.mean(0).argmax())
        early += used < len(windows)
    assert agree / trials >= 1 - risk
    assert early > trials // 20  # the bound did stop early on some of them: this is not a test of the full decision


@pytest.mark.parametrize("risk", [0.05, 0.3])
def test_the_bound_holds_on_leaders_near_half_of_the_probability(risk: float) -> None:
    """Leaders holding 0.45-0.6 of the probability, noisy windows: the early genre is the full one at least 1 - risk of the time."""
    rng = np.random.default_rng(11)
    agree, early = 0, 0
    trials = 400
    for _ in range(trials):
        top = rng.uniform(0.45, 0.6)
        windows = _stream(rng, means=[top, (1 - top) * 0.6] + [(1 - top) * 0.05] * 8, spread=0.25, n=int(rng.integers(8, 41)))
        genre, used = _decide(windows, risk=risk, round_windows=2)
        agree += genre == int(windows.mean(0).argmax())
        early += used < len(windows)
    assert agree / trials >= 1 - risk and early > trials // 20


def test_no_valid_rule_stops_before_the_fewest_windows_and_settled_does_not_either() -> None:
    assert [fewest_windows(n, risk=0.05) for n in (5, 6, 20)] == [3, 3, 4]  # GTZAN excerpts: 2x fewer windows at best
    assert fewest_windows(6, risk=0.2) == 2 and fewest_windows(1, risk=0.05) == 1 and fewest_windows(0, risk=0.05) == 0
    rng = np.random.default_rng(13)
    for total in (5, 6, 20):
        soonest = fewest_windows(total, risk=0.05)
        # the track of the docstring: ceil(N/2) - 1 windows certain of genre 0, the rest certain of genre 1 (all N say 1)
        track = np.zeros((total, 10))
        track[: -(-total // 2) - 1, 0], track[-(-total // 2) - 1 :, 1] = 1.0, 1.0
        first_all_0 = np.mean([np.all(track[rng.permutation(total)[: soonest - 1], 0] == 1.0) for _ in range(4000)])
        assert first_all_0 > 0.05  # a rule stopping one window sooner on certain windows would err more often than the risk
        certain = np.tile(np.eye(10)[0], (total, 1))
        assert soonest <= _decide(certain, risk=0.05, round_windows=1)[1] < total


def test_the_pilot_window_bets_nothing_and_its_genre_stops_sooner_than_a_uniform_union() -> None:
    assert betting_log_capital(np.array([[1.0, -1.0, 0.3]]), total=20).tolist() == [0.0, 0.0, 0.0]  # every capital is 1 after it
    certain = np.tile(np.eye(10)[0], (20, 1))
    with_pilot = _decide(certain, risk=0.05, round_windows=1)[1]
    uniform = next(n for n in range(1, 21) if np.all(betting_log_capital(certain[:n, [0]] - certain[:n, 1:], total=20) >= np.log(9 / 0.05)))
    assert with_pilot < uniform and with_pilot <= 8  # capital 2 / risk rather than (K - 1) / risk: 7 windows against 9
    turned = certain.copy()
    turned[0] = np.eye(10)[1]  # the pilot says genre 1, every later window genre 0: genre 0 leads without the pilot's weight
    genre, used = _decide(turned, risk=0.05, round_windows=1)
    assert genre == 0 and used > with_pilot


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


def test_a_60_s_file_that_stops_early_decodes_only_the_rounds_it_scored(confident: Path, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    write_audio(tmp_path / "long60.ogg", tone(60.0, frequency=150.0, seed=7), sample_rate=22050)
    model = open_model(confident, prefer_gpu=False)
    items = [("long60", tmp_path / "long60.ogg")]

    def decoded_windows(early_exit: EarlyExit | None) -> tuple[int, int, TrackScore]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="genretag.audio.seeking"):
            [result] = score_files(model, items, max_windows=0, parallel=False, early_exit=early_exit)  # decodes in this process
        counts = [re.match(r"decoded (\d+) of (\d+) windows", r.getMessage()) for r in caplog.records]
        return sum(int(m[1]) for m in counts if m), len(counts), result.score

    all_decoded, reads, full = decoded_windows(None)
    assert (all_decoded, reads, full.windows_scored) == (20, 1, 20)
    early_decoded, reads, early = decoded_windows(EarlyExit(round_windows=2, risk=0.05))
    assert early.label == full.label and early.windows_available == 20
    assert early_decoded == early.windows_scored < 20  # only the rounds it scored were decoded: 2 per read
    assert reads == early.windows_scored // 2


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
