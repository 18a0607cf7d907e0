"""params.yaml is checked when loaded: every bad value fails at once, naming the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genretag.core.config import load_params
from genretag.core.errors import ConfigError
from tests.conftest import REPO_ROOT

CASES = [
    ({"spectrogram": {"image_size": [0, 0]}}, r"spectrogram\.image_size = \[0, 0\]: image_size must be two positive"),
    ({"spectrogram": {"fmin": 5000, "fmax": 100}}, r"spectrogram\.fmin \(5000\) must be below spectrogram\.fmax \(100\)"),
    ({"spectrogram": {"fmax": 1e6}}, r"spectrogram\.fmax \(1e\+06\) must not exceed audio\.sample_rate / 2 \(11025 Hz\)"),
    ({"spectrogram": {"hop_length": 100000}}, r"spectrogram\.hop_length \(100000\) must not exceed spectrogram\.n_fft \(2048\)"),
    ({"validate": {"min_duration_s": 50}}, r"validate\.min_duration_s \(50\) must be below validate\.max_duration_s \(35\)"),
    ({"train": {"candidates": ["paper-exp99"]}}, r"train\.candidates = \['paper-exp99'\]: unknown candidate 'paper-exp99'; valid: .*paper-<exp1\|"),
    ({"audio": {"sample_rate": 1}}, r"audio\.sample_rate = 1: Input should be greater than or equal to 4000"),
    ({"register": {"baseline": "mfcc-logreg-typo"}},
     r"register\.baseline \('mfcc-logreg-typo'\) is not one of train\.candidates \(musicnn-msd, mfcc-logreg, paper-exp8\); null: chance only"),
    # each family checks its own input constraints (issue 23): six 2x2 max-pools need 64 pixels a side
    ({"spectrogram": {"image_size": [8, 8]}},
     r"spectrogram\.image_size = \[8, 8\]: paper-exp8 needs at least \[64, 64\] \(6 blocks of 5x5 same convolution \+ 2x2 max-pool\)"),
]


def _params_with(tmp_path: Path, override: dict) -> Path:
    data = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in override.items():
        data[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("override", "message"), CASES, ids=[next(iter(o)) + "." + next(iter(next(iter(o.values())))) for o, _ in CASES])
def test_a_bad_value_is_refused_when_loaded(tmp_path: Path, override: dict, message: str) -> None:
    path = _params_with(tmp_path, override)
    with pytest.raises(ConfigError, match=message) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_the_repository_params_are_valid() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.spectrogram.hop_length <= params.spectrogram.n_fft


def test_a_version_number_is_a_registry_version(tmp_path: Path) -> None:
    assert load_params(_params_with(tmp_path, {"score": {"model": 2}})).score.model == "2"


def test_the_least_image_side_walks_the_conv_and_pool_blocks_back() -> None:
    from genretag.families.paper_models import EXPERIMENTS, least_image_side

    # forward: exp3 (2 x 3x3 valid + pool) 10 -> 8 -> 4 -> 2 -> 1; exp8 (6 x same + pool) 64 -> 1
    assert (least_image_side(EXPERIMENTS["exp3"]), least_image_side(EXPERIMENTS["exp8"]), least_image_side(EXPERIMENTS["exp1"])) == (10, 64, 1)


def test_a_null_baseline_means_the_floor_checks_chance_only(tmp_path: Path) -> None:
    params = load_params(_params_with(tmp_path, {"register": {"baseline": None}}))
    assert params.registry.baseline is None
