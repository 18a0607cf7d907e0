"""params.yaml parsing and errors; atomic writes never leave a partial file."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from genretag.core.atomic import atomic_open, write_csv, write_json
from genretag.core.config import load_params, resolve_sqlite_url, worker_count
from genretag.dsp.spectrogram import preprocessing_spec
from genretag.core.errors import ConfigError
from tests.conftest import REPO_ROOT


def test_the_repository_params_load_and_give_the_preprocessing_contract():
    params = load_params(REPO_ROOT / "params.yaml")
    spec = preprocessing_spec(params)
    assert params.train.candidates == ("musicnn-msd", "mfcc-logreg", "paper-exp8") and len(params.genres) == 10
    assert (spec.sample_rate, spec.n_fft, spec.hop_length, spec.n_mels, spec.top_db) == (22050, 2048, 512, 128, 80.0)
    assert spec.image_size == tuple(params.spectrogram.image_size)


@pytest.mark.parametrize(("text", "named"), [
    ("families:\n  compact:\n    batch_size: 0\n", "families.compact.batch_size"),
    ("split:\n  method: random\n", "split.method"),
    ("split:\n  fractions: [0.5, 0.5, 0.5]\n", "split.fractions"),
    ("trian:\n  batch_size: 64\n", "trian"),
    ("genres: [rock, rock]\n", "distinct"),
    ("train: [unclosed\n", "not valid YAML"),
])
def test_a_bad_param_is_named_in_the_error(tmp_path, text, named):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named) as error:
        load_params(path)
    assert str(path) in str(error.value)


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="no such parameters file"):
        load_params(tmp_path / "params.yaml")


def test_relative_sqlite_urls_resolve_against_the_project(tmp_path):
    assert resolve_sqlite_url("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_sqlite_url("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_sqlite_url("postgresql://db/catalog", tmp_path) == "postgresql://db/catalog"
    assert worker_count(3) == 3 and worker_count(0) >= 1


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as handle:
            handle.write('{"version": 2, "half')
            raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_outputs_are_readable_by_others(tmp_path):
    write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1]}))
    assert os.stat(tmp_path / "t.csv").st_mode & 0o777 == 0o644
