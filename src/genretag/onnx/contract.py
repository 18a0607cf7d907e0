"""The model contract (v2): what every exported ONNX model takes, returns and says about itself.

Contract v2 is the one interface between training and every consumer (tagging, ``predict``, the
registry gate, the handoff bundle, other languages): **audio in, genres out**, with the whole
preprocessing inside the graph.

- input ``waveform``: float32 ``[N, S]``, mono, ``S = clip_samples`` samples (3 s) at the
  contract's ``sample_rate`` (Hz). The rate belongs to the model: 22,050 Hz for the paper's CNNs,
  16,000 Hz for musicnn.
- output ``probabilities``: float32 ``[N, K]``, softmax (temperature-scaled when ``genretag.calibration``
  says so), labels in metadata order.
- output ``embedding``: float32 ``[N, D]``, the model's clip representation (the paper's CNNs:
  the 128-unit dense layer), used by drift checks and similarity.
- ``metadata_props``: the keys below (contract version, sample rate, clip samples, family,
  labels, family-specific preprocessing description, name, version, lineage, test metrics), the
  weights' number format (``float32``, or ``int8`` for a statically quantised network), for a
  model derived from another one (int8 from float32), that model's version, and how its
  probabilities were calibrated (``genretag.calibration``: method, temperature, ECE before/after),
  the track temperature of :func:`track_probabilities` (``genretag.track_calibration``),
  the embedding's dimension D and the dtype catalog rows store it in (``genretag.embedding``),
  and, for models exported since issue #21, the out-of-taxonomy score's bank and threshold (``genretag.open_set``,
  :class:`OpenSet`): a track's score is ``1 - cos`` of its embedding (the mean of its windows' ``embedding``
  output) to the k-th nearest of the train tracks' embeddings the record holds, and the track is ``unknown``
  when that score is above the threshold (:meth:`OpenSet.track_score`). Consumers that ignore it keep working.

A model whose metadata has no ``genretag.contract_version`` is a v1 model (input ``mel_image``
[N, H, W, 3]): :func:`read_contract` reads it, and :func:`require_v2` refuses it with one line that
says how to re-export. Clip-level models only: clips in, clip probabilities out.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genretag.core.errors import ExportError

if TYPE_CHECKING:  # onnx is imported where a model is read: the registry listing never loads one
    import numpy as np
    import onnx

CONTRACT_VERSION = 2
INPUT_NAME = "waveform"
OUTPUT_NAME = "probabilities"
EMBEDDING_NAME = "embedding"
V1_INPUT_NAME = "mel_image"

KEY_CONTRACT_VERSION = "genretag.contract_version"
KEY_SAMPLE_RATE = "genretag.sample_rate"
KEY_CLIP_SAMPLES = "genretag.clip_samples"
KEY_FAMILY = "genretag.family"
KEY_LABELS = "genretag.labels"
KEY_PREPROCESSING = "genretag.preprocessing"
KEY_MODEL_NAME = "genretag.model_name"
KEY_MODEL_VERSION = "genretag.model_version"
KEY_DATA_HASH = "genretag.training_data_hash"
KEY_GIT_COMMIT = "genretag.git_commit"
KEY_METRICS = "genretag.test_metrics"
KEY_QUANTIZATION = "genretag.quantization"
KEY_DERIVED_FROM = "genretag.derived_from"
KEY_DRIFT_REFERENCE = "genretag.drift_reference"  # JSON, genretag.drift.build_reference (absent in older models)
KEY_CALIBRATION = "genretag.calibration"
KEY_TRACK_CALIBRATION = "genretag.track_calibration"  # JSON, genretag.evaluation.calibration.TrackCalibration (absent: T = 1)
KEY_EMBEDDING = "genretag.embedding"  # JSON {"dim": D, "dtype": "float16" | "float32"}: the stored track embedding (absent in older models)

EMBEDDING_DTYPES = ("float16", "float32")  # how a catalog row stores a track embedding (little-endian bytes)
KEY_OPEN_SET = "genretag.open_set"  # JSON, OpenSet.as_dict (absent in models exported before it)
UNKNOWN = "unknown"  # the genre a track past the threshold records; never written as a genre anywhere
METHOD_TRACK_KNN = "track-knn"  # the out-of-taxonomy score models carry (bench/open_set.py chose it)
FITTED_ON_VALIDATION = "validation"  # the threshold's tracks: the validation split's
FITTED_ON_LEAVE_ONE_OUT = "leave-one-out"  # ... or each train track scored against the bank without itself
TRACK_SCORE = ("1 - cos of the track embedding (the mean of its windows' embedding output) to the k-th nearest "
               "row of the bank (the L2-normalised train tracks' embeddings)")  # the one definition, recorded in the model
NORM_FLOOR = 1e-12  # the least norm an embedding is divided by (a silent track's zero embedding stays zero)


def normalised(embeddings: Any) -> np.ndarray:
    """Each row of ``embeddings`` float [n, D] divided by its L2 norm (a zero row stays zero): float64 [n, D]."""
    import numpy as np

    x = np.asarray(embeddings, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), NORM_FLOOR)


def knn_scores(embeddings: Any, bank: Any, *, k: int) -> np.ndarray:
    """``1 - cos`` to the k-th nearest row of ``bank`` float [m, D] (L2-normalised rows) per row of ``embeddings``
    float [n, D]: float64 [n] in [0, 2] (Sun, Ming, Zhu and Li 2022, "Out-of-Distribution Detection with Deep Nearest
    Neighbors", ICML, section 3: the k-th nearest neighbour distance of normalised features; ``1 - cos`` is half the
    squared Euclidean distance of unit vectors, a monotone function of it). ``k`` larger than m uses the farthest row.
    Raises ValueError for k < 1, an empty bank or mismatched widths."""
    import numpy as np

    x, reference = normalised(embeddings), np.asarray(bank, dtype=np.float64)
    if k < 1 or reference.ndim != 2 or not len(reference) or x.shape[1:] != reference.shape[1:]:
        raise ValueError(f"k = {k} neighbours of {x.shape} embeddings in a {reference.shape} bank: "
                         "k >= 1, a non-empty bank and equal widths needed")
    similarity = x @ reference.T  # [n, m]
    return 1.0 - np.sort(similarity, axis=1)[:, -min(k, reference.shape[0])]


def encode_bank(bank: Any) -> str:
    """``bank`` float [m, D] as base64 of its little-endian float32 bytes, row-major (what :class:`OpenSet` stores)."""
    import numpy as np

    return base64.b64encode(np.ascontiguousarray(bank, dtype="<f4").tobytes()).decode("ascii")

PROBABILITY_FLOOR = 1e-12  # float32-representable; log(1e-12) = -27.6, far below any real logit gap

FLOAT32 = "float32"
INT8 = "int8"

REEXPORT_HINT = "re-export it with contract v2: `dvc repro` (stage candidate-<id>) in the project that trained it"


@dataclass(frozen=True)
class OpenSet:
    """What a model says about "none of these genres" (ONNX metadata ``genretag.open_set``): the method, the
    graph output whose window mean is the track embedding, the track-level definition, the bank of train-track
    embeddings it compares with, the threshold and how it was fitted. ``OpenSet.absent()`` for a model exported
    before it, or with an older per-window record (no ``bank``): it cannot say unknown."""

    method: str = ""
    output: str = ""  # the graph output averaged over a track's windows into its embedding (``embedding``)
    track_definition: str = TRACK_SCORE
    threshold: float | None = None
    accept: float = 0.0  # the share of validation tracks accepted it was fitted for
    validation_tracks: int = 0  # the tracks the threshold was fitted on
    validation_accepted: float = 0.0  # the share actually at or below the threshold
    fitted_on: str = FITTED_ON_VALIDATION  # or FITTED_ON_LEAVE_ONE_OUT: a model trained on every labelled track
    neighbours: int = 0  # k of the kNN score
    bank_tracks: int = 0  # rows of ``bank``: train tracks (at most export.unknown_bank_tracks, a seeded sample)
    dimension: int = 0  # D of ``bank`` (the embedding's)
    bank: str = field(default="", repr=False)  # :func:`encode_bank` of the L2-normalised train-track embeddings [bank_tracks, D]

    @classmethod
    def absent(cls) -> OpenSet:
        return cls()

    @property
    def available(self) -> bool:
        return self.threshold is not None and self.method == METHOD_TRACK_KNN and bool(self.bank) and self.bank_tracks > 0

    @cached_property
    def bank_vectors(self) -> np.ndarray:
        """The decoded bank: float32 [bank_tracks, dimension]. Raises ExportError when its size does not match."""
        import numpy as np

        raw = base64.b64decode(self.bank)
        if len(raw) != 4 * self.bank_tracks * self.dimension:
            raise ExportError(f"genretag.open_set: a bank of {len(raw)} bytes is not {self.bank_tracks} x {self.dimension} float32")
        return np.frombuffer(raw, dtype="<f4").reshape(self.bank_tracks, self.dimension)

    def track_score(self, track_embedding: Any) -> float | None:
        """The track's score from its embedding float [D] (the mean of its windows' ``embedding`` output):
        :func:`knn_scores` against the bank with k = ``neighbours``. None without a threshold or an embedding."""
        if not self.available or track_embedding is None or not len(track_embedding):
            return None
        return float(knn_scores([track_embedding], self.bank_vectors, k=self.neighbours)[0])

    def is_unknown(self, track_score: float | None) -> bool:
        """True when ``track_score`` (:func:`track_scores`) is above the threshold; False when there is none."""
        return self.available and track_score is not None and track_score > self.threshold

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) if self.available else {}

    def metrics(self) -> dict[str, float]:
        """The fitted numbers as MLflow metrics (``unknown_threshold``, ``unknown_validation_accepted``,
        ``unknown_validation_tracks``); empty when absent."""
        return {"unknown_threshold": self.threshold, "unknown_validation_accepted": self.validation_accepted,
                "unknown_validation_tracks": self.validation_tracks} if self.available else {}

    def params(self) -> dict[str, Any]:
        """The choices as MLflow params (``unknown_method``, ``unknown_accept``, ``unknown_neighbours``,
        ``unknown_bank_tracks``); empty when absent."""
        return {"unknown_method": self.method, "unknown_accept": self.accept, "unknown_neighbours": self.neighbours,
                "unknown_bank_tracks": self.bank_tracks} if self.available else {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenSet:
        """The record of :meth:`as_dict`; absent for an empty one or one without a bank (a per-window record of
        models exported before the track score: they cannot say unknown)."""
        record = cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data}) if data else cls.absent()
        return record if record.available else cls.absent()


@dataclass(frozen=True)
class ModelContract:
    """Labels, input format and provenance of an exported model (``metadata_props``).

    ``preprocessing`` is the family's own description of what the graph computes between the
    waveform and the network (for the paper's CNNs: the :class:`~genretag.spectrogram.PreprocessingSpec`
    fields); consumers never act on it, they feed waveforms.
    """

    labels: tuple[str, ...]
    model_name: str
    model_version: str
    sample_rate: int
    clip_samples: int
    family: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    training_data_hash: str = ""
    git_commit: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)
    contract_version: int = CONTRACT_VERSION
    quantization: str = FLOAT32  # FLOAT32 or INT8 (the network's weights and activations; the front end stays float32)
    derived_from: str = ""  # model_version of the model this one was made from (the float32 source of an int8 model)
    drift_reference: dict[str, Any] = field(default_factory=dict)  # training statistics for drift ({}: none)
    calibration: dict[str, Any] = field(default_factory=dict)  # genretag.calibration.Calibration.as_dict(); {}: none recorded
    track_calibration: dict[str, Any] = field(default_factory=dict)  # TrackCalibration.as_dict(); {}: none (T = 1)
    embedding_dim: int = 0  # D of the ``embedding`` output (0: not stated, a model exported before it was)
    embedding_dtype: str = ""  # one of EMBEDDING_DTYPES: how catalog rows store its track embeddings ("": not stated)
    open_set: OpenSet = field(default_factory=OpenSet.absent)  # the out-of-taxonomy score and threshold (absent: none)

    @property
    def track_temperature(self) -> float:
        """The track temperature of :func:`track_probabilities` (``genretag.track_calibration``; 1.0 when none is recorded)."""
        return float(self.track_calibration.get("temperature", 1.0))

    def track_probabilities(self, window_probabilities: np.ndarray) -> np.ndarray:
        """This model's track probabilities from its windows': :func:`track_probabilities` with :attr:`track_temperature`."""
        return track_probabilities(window_probabilities, temperature=self.track_temperature)

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    def to_metadata(self) -> dict[str, str]:
        return {
            KEY_CONTRACT_VERSION: str(self.contract_version),
            KEY_SAMPLE_RATE: str(self.sample_rate),
            KEY_CLIP_SAMPLES: str(self.clip_samples),
            KEY_FAMILY: self.family,
            KEY_LABELS: json.dumps(list(self.labels)),
            KEY_PREPROCESSING: json.dumps(self.preprocessing, sort_keys=True),
            KEY_MODEL_NAME: self.model_name,
            KEY_MODEL_VERSION: self.model_version,
            KEY_DATA_HASH: self.training_data_hash,
            KEY_GIT_COMMIT: self.git_commit,
            KEY_METRICS: json.dumps(self.test_metrics, sort_keys=True),
            KEY_QUANTIZATION: self.quantization,
            KEY_DERIVED_FROM: self.derived_from,
            KEY_CALIBRATION: json.dumps(self.calibration, sort_keys=True),
            **({KEY_TRACK_CALIBRATION: json.dumps(self.track_calibration, sort_keys=True)} if self.track_calibration else {}),
            **({KEY_DRIFT_REFERENCE: json.dumps(self.drift_reference, sort_keys=True)} if self.drift_reference else {}),
            **({KEY_EMBEDDING: json.dumps({"dim": self.embedding_dim, "dtype": self.embedding_dtype or "float32"})}
               if self.embedding_dim else {}),
            **({KEY_OPEN_SET: json.dumps(self.open_set.as_dict(), sort_keys=True)} if self.open_set.available else {}),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], *, source: str = "model") -> ModelContract:
        """Parse ``metadata_props``; a v1 model (no contract version) comes back with ``contract_version=1``.

        Raises :class:`~genretag.errors.ExportError` when the genretag keys are missing, or when
        ``genretag.embedding`` names a dtype outside EMBEDDING_DTYPES.
        """
        missing = [key for key in (KEY_LABELS, KEY_PREPROCESSING, KEY_MODEL_NAME, KEY_MODEL_VERSION) if key not in metadata]
        if missing:
            raise ExportError(f"{source}: not a genretag model, metadata lacks {', '.join(missing)}")
        preprocessing = json.loads(metadata[KEY_PREPROCESSING])
        version = int(metadata.get(KEY_CONTRACT_VERSION) or 1)
        if version == 1:  # v1 stored the paper's PreprocessingSpec: rate and clip length live there
            sample_rate = int(preprocessing.get("sample_rate", 0))
            clip_samples = int(round(sample_rate * float(preprocessing.get("clip_seconds", 0.0))))
        else:
            sample_rate, clip_samples = int(metadata[KEY_SAMPLE_RATE]), int(metadata[KEY_CLIP_SAMPLES])
        embedding = json.loads(metadata.get(KEY_EMBEDDING) or "{}")
        if embedding and embedding.get("dtype") not in EMBEDDING_DTYPES:
            raise ExportError(f"{source}: {KEY_EMBEDDING} dtype {embedding.get('dtype')!r} is not one of {', '.join(EMBEDDING_DTYPES)}")
        return cls(
            labels=tuple(json.loads(metadata[KEY_LABELS])),
            model_name=metadata[KEY_MODEL_NAME],
            model_version=metadata[KEY_MODEL_VERSION],
            sample_rate=sample_rate,
            clip_samples=clip_samples,
            family=metadata.get(KEY_FAMILY, "paper" if version == 1 else ""),
            preprocessing=preprocessing,
            training_data_hash=metadata.get(KEY_DATA_HASH, ""),
            git_commit=metadata.get(KEY_GIT_COMMIT, ""),
            test_metrics=json.loads(metadata.get(KEY_METRICS) or "{}"),
            contract_version=version,
            quantization=metadata.get(KEY_QUANTIZATION) or FLOAT32,
            derived_from=metadata.get(KEY_DERIVED_FROM, ""),
            drift_reference=json.loads(metadata.get(KEY_DRIFT_REFERENCE) or "{}"),
            calibration=json.loads(metadata.get(KEY_CALIBRATION) or "{}"),
            track_calibration=json.loads(metadata.get(KEY_TRACK_CALIBRATION) or "{}"),
            embedding_dim=int(embedding.get("dim", 0)),
            embedding_dtype=embedding.get("dtype", ""),
            open_set=OpenSet.from_dict(json.loads(metadata.get(KEY_OPEN_SET) or "{}")),
        )


def track_probabilities(window_probabilities: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """THE aggregation of a track's windows (tagger, ``predict``, evaluation, the track calibration's fit):
    float64 [K] = ``softmax(log(max(mean_n p_n, PROBABILITY_FLOOR)) / temperature)`` from float [n, K]
    window probabilities (rows of a softmax, label order); float [B, n, K] (B tracks of n windows each)
    gives [B, K]. The mean of the windows' probabilities decides the genre, so the top-1 class never
    depends on ``temperature``; the temperature (``genretag.track_calibration``, fitted at track level by
    :func:`genretag.evaluation.calibration.calibrate_tracks`; Guo et al. 2017, section 4.2, applied to
    the averaged probabilities) only rescales the confidence. T = 1 returns the mean itself (renormalised).
    Mirrored by the handoff clients (genretag_reference.py, .mjs). Raises ValueError for no windows or a
    temperature that is not finite and > 0.
    """
    import numpy as np

    windows = np.asarray(window_probabilities, dtype=np.float64)
    if windows.ndim < 2 or windows.shape[-2] == 0:
        raise ValueError(f"window probabilities of shape {windows.shape}: expected [n >= 1, K]")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"track temperature {temperature!r}: must be finite and > 0")
    scaled = np.log(np.maximum(windows.mean(axis=-2), PROBABILITY_FLOOR)) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def read_contract(onnx_path: str | Path) -> ModelContract:
    """Read the contract from an ONNX file's metadata_props (the weights are not loaded).

    Raises :class:`~genretag.errors.ExportError` for a missing, unreadable or non-genretag file.
    """
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX model ({exc})") from exc
    return ModelContract.from_metadata({p.key: p.value for p in model.metadata_props}, source=str(path))


def require_v2(contract: ModelContract, *, source: str) -> ModelContract:
    """Return ``contract`` when it is contract v2; raise a one-line ExportError for a v1 (image-input) model."""
    if contract.contract_version != CONTRACT_VERSION:
        raise ExportError(
            f"{source}: model {contract.model_name} {contract.model_version} uses the v{contract.contract_version} "
            f"image contract (input {V1_INPUT_NAME}), which this genretag no longer feeds; {REEXPORT_HINT}"
        )
    return contract


def write_contract(model: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """Replace the model's genretag metadata with ``contract`` (other keys are kept)."""
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("genretag.")]
    del model.metadata_props[:]
    for key, value in [*kept, *contract.to_metadata().items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


CUDNN_MAX_ELEMENTS = 2**31 - 1
"""cuDNN rejects a tensor of 2^31 elements or more (CUDNN_STATUS_NOT_SUPPORTED)."""


def largest_activation(model: onnx.ModelProto) -> int:
    """Elements per input clip of the model's largest tensor, by ONNX shape inference (0: unknown)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    largest = 0
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim[1:]  # the first dimension is the batch
        if dims and all(d.HasField("dim_value") for d in dims):
            largest = max(largest, math.prod(d.dim_value for d in dims))
    return largest


def cuda_batch_limit(model: onnx.ModelProto) -> int:
    """Most clips one CUDA run may hold: the largest tensor must stay under cuDNN's limit.

    The paper's exp8 at 128x128 has a 128x128x128 activation per clip, so 1,024 clips make
    a 2^31-element tensor and its first MaxPool fails on the GPU (seen on an H100); 1,023 run.
    """
    largest = largest_activation(model)
    return max(1, CUDNN_MAX_ELEMENTS // largest) if largest else 0


LIVE_ACTIVATIONS = 4
"""Copies of the largest activation a CPU session holds at its peak, per clip: an operator's input and
output, plus onnxruntime's convolution workspace (im2col) and the arena's rounding; measured peaks of
musicnn-msd and the paper's CNNs stay under it (bench/early_exit.py --memory prints the check)."""


def memory_batch_limit(model: onnx.ModelProto, *, budget_mb: int) -> int:
    """Most clips per session run whose activations fit ``budget_mb`` MB (2^20 bytes): budget //
    (LIVE_ACTIVATIONS x 4 bytes x the largest activation's elements per clip, :func:`largest_activation`).
    0 (no limit) when the budget is 0 or the shapes are unknown; at least 1."""
    largest = largest_activation(model) if budget_mb else 0
    return max(1, budget_mb * 2**20 // (LIVE_ACTIVATIONS * 4 * largest)) if largest else 0


@dataclass(frozen=True)
class Prediction:
    """``probabilities`` float32 [n, K] (softmax, label order) and ``embedding`` float32 [n, D]."""

    probabilities: np.ndarray
    embedding: np.ndarray
