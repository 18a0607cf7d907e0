"""The handoff bundle: what another service needs to run a genretag model without genretag.

``write_bundle`` puts into one folder:

- ``model.onnx``: the model, its contract in metadata_props (``genretag.contract``);
- ``labels.json``, ``preprocessing.json``: the contract again, as plain JSON;
- ``scoring.json``: how the catalog scores a track (``score.max_windows``, evenly spaced windows);
- ``genretag_spectrogram.py``: genretag/spectrogram.py, byte for byte (numpy + Pillow only);
- ``genretag_reference.py``: a reference client (numpy, soundfile, Pillow, onnxruntime);
- ``MODEL_CARD.md`` when the registry stored one with the version;
- ``README.md`` and ``MANIFEST.json`` (SHA-256 of every file, model name and versions).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict
from pathlib import Path

import onnx

from genretag.atomic import atomic_path, write_json, write_text
from genretag.contract import INPUT_NAME, OUTPUT_NAME, cuda_batch_limit, read_contract

REFERENCE_NAME = "genretag_reference.py"
SPECTROGRAM_NAME = "genretag_spectrogram.py"
BUNDLE_FILES = ("model.onnx", "labels.json", "preprocessing.json", "scoring.json", SPECTROGRAM_NAME, REFERENCE_NAME, "README.md")


def reference_source() -> Path:
    """The reference client shipped in every bundle."""
    return Path(__file__).with_name(REFERENCE_NAME)


def spectrogram_source() -> Path:
    """genretag's preprocessing module, shipped verbatim."""
    from genretag import spectrogram

    return Path(spectrogram.__file__)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def write_bundle(
    onnx_path: Path,
    out_dir: Path,
    *,
    max_windows: int,
    spectrogram_file: Path | None = None,
    reference_file: Path | None = None,
    model_card: Path | None = None,
    registry_version: str = "",
) -> Path:
    """Write the handoff bundle of ``onnx_path`` into ``out_dir``; returns ``out_dir``.

    ``spectrogram_file``/``reference_file`` default to this installation's files; the registry
    passes the copies stored with the model version, so that the code matches the model.
    """
    contract = read_contract(onnx_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy(onnx_path, out_dir / "model.onnx")
    _copy(spectrogram_file or spectrogram_source(), out_dir / SPECTROGRAM_NAME)
    _copy(reference_file or reference_source(), out_dir / REFERENCE_NAME)
    if model_card is not None:
        _copy(model_card, out_dir / "MODEL_CARD.md")
    write_json(out_dir / "labels.json", list(contract.labels))
    write_json(out_dir / "preprocessing.json", asdict(contract.preprocessing))
    write_json(out_dir / "scoring.json", {
        "max_windows": max_windows, "evenly_spaced": True, "aggregate": "mean",
        "max_clips_per_run": cuda_batch_limit(onnx.load(str(onnx_path))),
    })
    write_text(out_dir / "README.md", _readme(contract.model_name, contract.model_version, registry_version))
    write_json(
        out_dir / "MANIFEST.json",
        {
            "model_name": contract.model_name,
            "model_version": contract.model_version,
            "registry_version": registry_version,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "sha256": {
                name: _sha256(out_dir / name)
                for name in (*BUNDLE_FILES, *(["MODEL_CARD.md"] if model_card is not None else []))
            },
        },
    )
    return out_dir


def _readme(name: str, version: str, registry_version: str) -> str:
    registry = f", registry version {registry_version}" if registry_version else ""
    return f"""# {name} ({version}{registry})

Tag audio with genres using only numpy, soundfile, Pillow and onnxruntime:

    pip install numpy soundfile pillow onnxruntime
    python genretag_reference.py track.wav --top 3

- `model.onnx`: input `{INPUT_NAME}` float32 [N, H, W, 3] in [0, 1], output `{OUTPUT_NAME}` float32
  [N, n_labels]. Labels and preprocessing are in its metadata_props (`genretag.labels`,
  `genretag.preprocessing`) and, for convenience, in labels.json and preprocessing.json.
- `genretag_spectrogram.py` is genretag's preprocessing, byte for byte. Do not re-implement it:
  import it (`waveform_to_images`, `to_model_input`).
- `genretag_reference.py` decodes, downmixes, resamples (FFT method; files at the model's rate
  reproduce genretag's own scores exactly), cuts windows (scoring.json), scores and averages.
- `scoring.json` `max_clips_per_run`: the most clips one `session.run` may hold on a GPU. cuDNN
  rejects a tensor of 2^31 elements, and the model's largest activation sets the limit (1,023 clips
  for the paper's 128x128 exp8); batch your own calls below it.
- `MANIFEST.json`: SHA-256 of every file.
"""
