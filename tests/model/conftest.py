"""Tiny learnable projects for model tests: PNGs whose class shows as a bright band at a class row."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from genretag.config import Layout, Params, layout, load_params

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_GENRES = ("blues", "jazz", "rock")


def band_image(genre_index: int, n_genres: int, *, size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB noise with a bright horizontal band whose row depends on the class."""
    height, width = size
    image = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    band = max(1, height // (2 * n_genres))
    top = genre_index * height // n_genres
    image[top : top + band] = rng.integers(200, 256, size=(band, width, 3), dtype=np.uint8)
    return image


def make_project(
    root: Path,
    *,
    genres: Sequence[str] = TINY_GENRES,
    image_size: Sequence[int] = (32, 32),
    tracks_per_split: dict[str, int] | None = None,
    clips_per_track: int = 4,
    seed: int = 0,
    **train: object,
) -> tuple[Params, Layout]:
    """Write params.yaml, data/clips.csv and its PNGs under ``root``; return (params, layout)."""
    tracks_per_split = tracks_per_split or {"train": 2, "validation": 1, "test": 1}
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["genres"] = list(genres)
    raw["spectrogram"]["image_size"] = list(image_size)
    raw["train"].update({"experiment": "exp1", "batch_size": 8, "max_epochs": 3, "patience": 3, "seed": 2021, **train})
    raw["evaluate"]["tsne_clips"] = 250
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")

    rng = np.random.default_rng(seed)
    rows = []
    for genre_index, genre in enumerate(genres):
        number = 0
        for split, count in tracks_per_split.items():
            for _ in range(count):
                track_id = f"{genre}.{number:05d}"
                number += 1
                for clip_index in range(clips_per_track):
                    clip_id = f"{track_id}.{clip_index}"
                    relative = f"data/images/{split}/{genre}/{clip_id}.png"
                    path = root / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(band_image(genre_index, len(genres), size=image_size, rng=rng)).save(path)
                    rows.append({
                        "clip_id": clip_id, "track_id": track_id, "genre": genre, "split": split,
                        "clip_index": clip_index, "start_s": 3.0 * clip_index, "image": relative,
                    })
    (root / "data").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "data" / "clips.csv", index=False)
    return load_params(root / "params.yaml"), layout(root)


@pytest.fixture
def tiny_project():
    """The :func:`make_project` factory (test modules cannot import conftest)."""
    return make_project


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the whole session (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracked(monkeypatch: pytest.MonkeyPatch, mlflow_uri: str) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return mlflow_uri


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str):
    """A tiny project with exp1 trained (3 epochs) and evaluated once: (params, layout, train, eval)."""
    from genretag.evaluate import evaluate
    from genretag.train import train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        params, paths = make_project(tmp_path_factory.mktemp("project"))
        trained = train(params, paths)
        evaluated = evaluate(params, paths)
        yield params, paths, trained, evaluated
