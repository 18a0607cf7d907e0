"""Train candidates on every track of a GTZAN-layout folder, then tag recordings from outside it.

    python bench/catalog_check.py --data ../shared/gtzan-sample --catalog ../shared/catalog-sample \
        --families musicnn-msd mfcc-logreg

A listening check, not an accuracy figure: each family is fitted on all 3-s clips of ``--data``
(``genretag.families``), exported as a contract-v2 graph, and the files of ``--catalog`` are tagged
through ``genretag.tagging.scoring`` (the tagger's own path, up to 20 windows per track). Prints the top 3.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

import genretag  # noqa: F401  - offline/quiet environment first
from genretag.audio.decoding import AUDIO_EXTENSIONS, decode
from genretag.onnx.contract import ModelContract, write_contract
from genretag.families import ClipSet, create
from genretag.onnx.session import open_model
from genretag.tagging.scoring import score_file

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


def clips_of(folder: Path, *, sample_rate: int, clip_samples: int) -> ClipSet:
    """Every whole 3-s clip of every ``<genre>/<file>`` under ``folder``, at ``sample_rate``."""
    waves, labels, tracks, clips = [], [], [], []
    for index, genre in enumerate(GENRES):
        for path in sorted((folder / genre).glob("*")):
            if path.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            waveform = decode(path, sample_rate=sample_rate).waveform
            for n in range(len(waveform) // clip_samples):
                waves.append(waveform[n * clip_samples:(n + 1) * clip_samples])
                labels.append(index)
                tracks.append(path.stem)
                clips.append(f"{path.stem}.{n}")
    return ClipSet(np.stack(waves).astype(np.float32), np.array(labels), tuple(tracks), tuple(clips), sample_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--families", nargs="+", default=["musicnn-msd", "mfcc-logreg"])
    args = parser.parse_args()
    files = sorted(p for p in args.catalog.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    with tempfile.TemporaryDirectory() as tmp:
        for candidate in args.families:
            family = create(candidate)
            train = clips_of(args.data, sample_rate=family.sample_rate, clip_samples=family.clip_samples)
            family.fit(train, train, labels=GENRES, seed=2021, log=lambda _line: None)
            proto = write_contract(family.to_onnx(), ModelContract(
                labels=GENRES, model_name=candidate, model_version="catalog-check", sample_rate=family.sample_rate,
                clip_samples=family.clip_samples, family=candidate))
            path = Path(tmp) / f"{candidate}.onnx"
            onnx.save(proto, path)
            model = open_model(path, prefer_gpu=False)
            for file in files:
                scored = score_file(model, file, max_windows=20)
                top = sorted(scored.probabilities.items(), key=lambda item: -item[1])[:3]
                print(f"{candidate:12} {file.name[:56]:56} " + ", ".join(f"{g} {p:.2f}" for g, p in top)
                      + f"  ({scored.windows_scored} windows)", flush=True)


if __name__ == "__main__":
    main()
