"""The handoff bundle: what another service needs to run a genretag model without genretag.

Contract v2 makes the bundle independent of the model: the graph takes waveforms, so a client
needs only a decoder, a resampler and onnxruntime. ``write_bundle`` puts into one folder:

- ``model.onnx``: the model, its contract in metadata_props (``genretag.contract``);
- ``labels.json``: the labels in output order (for runtimes that cannot read custom metadata);
- ``scoring.json``: the contract's rate and window length, and how the catalog scores a track
  (``score.max_windows`` evenly spaced windows, silent windows skipped below
  ``validation.silence_rms_dbfs``, mean of the windows, the GPU batch cap) and, for a model with an
  out-of-taxonomy score, ``unknown``: the record of :class:`genretag.onnx.contract.OpenSet` (the bank of train-track
  embeddings as base64 float32, k, the threshold and the track definition: ``1 - cos`` of the track embedding, the
  mean of its windows' ``embedding`` output, to the k-th nearest bank row; above the threshold, the track is ``unknown``);
- ``genretag_reference.py``: the Python reference client (numpy, soundfile, python-soxr, onnxruntime);
- ``genretag_reference.mjs`` with ``package.json`` and ``package-lock.json``: the Node.js reference
  client (onnxruntime-node, pinned), WAV at any rate (a windowed-sinc resampler of its own);
- ``MODEL_CARD.md`` when the registry stored one with the version;
- ``README.md`` and ``MANIFEST.json`` (SHA-256 of every file, model name and versions).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import onnx

from genretag.core.atomic import atomic_path, write_json, write_text
from genretag.onnx.contract import (
    EMBEDDING_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    UNKNOWN,
    ModelContract,
    cuda_batch_limit,
    read_contract,
    require_v2,
)

MODEL_CARD_NAME = "MODEL_CARD.md"  # beside every candidate's model.onnx, in its registry version and in the bundle
PYTHON_CLIENT = "genretag_reference.py"
NODE_CLIENT = "genretag_reference.mjs"
CLIENT_FILES = (PYTHON_CLIENT, NODE_CLIENT, "package.json", "package-lock.json")
BUNDLE_FILES = ("model.onnx", "labels.json", "scoring.json", *CLIENT_FILES, "README.md")


def client_sources() -> dict[str, Path]:
    """The reference clients shipped in every bundle (this installation's files), by bundle name."""
    return {name: Path(__file__).with_name(name) for name in CLIENT_FILES}


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
    silence_rms_dbfs: float,
    client_dir: Path | None = None,
    model_card: Path | None = None,
    registry_version: str = "",
) -> Path:
    """Write the handoff bundle of a contract-v2 ``onnx_path`` into ``out_dir``; returns ``out_dir``.

    Each client file comes from ``client_dir`` when it holds one (the registry passes the copies
    stored with the model version, so that the code matches the model), else from this installation.
    Raises :class:`~genretag.errors.ExportError` (one line, how to re-export) for a v1 model.
    """
    contract = require_v2(read_contract(onnx_path), source=str(onnx_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy(onnx_path, out_dir / "model.onnx")
    for name, installed in client_sources().items():
        stored = client_dir / name if client_dir is not None else None
        _copy(stored if stored is not None and stored.is_file() else installed, out_dir / name)
    if model_card is not None:
        _copy(model_card, out_dir / MODEL_CARD_NAME)
    write_json(out_dir / "labels.json", list(contract.labels))
    write_json(out_dir / "scoring.json", {
        "contract_version": contract.contract_version,
        "sample_rate": contract.sample_rate,
        "clip_samples": contract.clip_samples,
        "max_windows": max_windows,
        "evenly_spaced": True,
        "silence_rms_dbfs": silence_rms_dbfs,
        "aggregate": "mean",
        "track_temperature": contract.track_temperature,  # softmax(log(mean) / T): genretag.onnx.contract.track_probabilities
        "max_clips_per_run": cuda_batch_limit(onnx.load(str(onnx_path))),
        **({"unknown": {**contract.open_set.as_dict(), "label": UNKNOWN}} if contract.open_set.available else {}),
    })
    write_text(out_dir / "README.md", _readme(contract, registry_version))
    write_json(
        out_dir / "MANIFEST.json",
        {
            "model_name": contract.model_name,
            "model_version": contract.model_version,
            "registry_version": registry_version,
            "contract_version": contract.contract_version,
            "input": INPUT_NAME,
            "outputs": [OUTPUT_NAME, EMBEDDING_NAME],
            "sha256": {
                name: _sha256(out_dir / name)
                for name in (*BUNDLE_FILES, *([MODEL_CARD_NAME] if model_card is not None else []))
            },
        },
    )
    return out_dir


def _readme(contract: ModelContract, registry_version: str) -> str:
    registry = f", registry version {registry_version}" if registry_version else ""
    seconds = f"{contract.clip_seconds:g}"
    return f"""# {contract.model_name} ({contract.model_version}{registry})

Tag audio with genres using only a decoder, a resampler and onnxruntime. The model takes
waveforms and computes its own features inside the graph: never compute a spectrogram for it.

Python (numpy, soundfile, python-soxr, onnxruntime):

    pip install numpy soundfile soxr onnxruntime
    python {PYTHON_CLIENT} track.flac --top 3

Node.js 18+ (onnxruntime-node, pinned in package-lock.json; WAV at any rate, resampled to {contract.sample_rate} Hz;
`node {NODE_CLIENT} --help` lists the options; `--json` prints the Python client's fields):

    npm ci        # offline mirrors: ONNXRUNTIME_NODE_INSTALL=skip ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci
    node {NODE_CLIENT} track.wav

- `model.onnx` (contract v{contract.contract_version}): input `{INPUT_NAME}` float32 [N, {contract.clip_samples}]
  ({seconds}-s mono windows at {contract.sample_rate} Hz, full scale ±1); outputs `{OUTPUT_NAME}` float32
  [N, {len(contract.labels)}] (softmax, labels.json order) and `{EMBEDDING_NAME}` float32 [N, D]. Its
  metadata_props hold the contract (`genretag.labels`, `genretag.sample_rate`, `genretag.clip_samples`, ...).
- How genretag scores a track (both clients do the same, settings in scoring.json): decode, downmix
  to mono (mean of the channels), resample to {contract.sample_rate} Hz with soxr "HQ" when needed, cut
  whole {seconds}-s windows (at most `max_windows`, evenly spaced), skip silent windows (all zero or RMS
  below `silence_rms_dbfs` dBFS), run the model, average the windows' probabilities, then
  softmax(log(mean) / `track_temperature`) (scoring.json; 1: the mean itself): the calibrated track confidence.
- "None of these genres" (when scoring.json has `unknown`): the track embedding is the mean of its windows'
  `embedding` output; its score is 1 - cos to the `unknown.neighbours`-th nearest row of `unknown.bank`
  (base64 of little-endian float32 [`bank_tracks`, `dimension`], rows L2-normalised: the training tracks'
  embeddings). A track whose score is above `unknown.threshold` is `unknown` (its top 3 are still
  reported). Never write `unknown` as a genre.
- `scoring.json` `max_clips_per_run`: the most windows one `session.run` may hold on a GPU (cuDNN
  rejects a tensor of 2^31 elements; 0: no limit); batch your own calls below it.
- `MANIFEST.json`: SHA-256 of every file.
"""
