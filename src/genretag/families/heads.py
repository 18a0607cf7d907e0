"""The trained head shared by feature-based families: StandardScaler + multinomial LogisticRegression.

Fitted on per-clip feature vectors (an embedding or MFCC statistics) with scikit-learn and
exported with skl2onnx as ``features`` float32 [N, D] -> ``probabilities`` float32 [N, K]
(no ZipMap, so the output is a plain tensor in label order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import onnx.compose
import onnx.helper
from pydantic import BaseModel, ConfigDict, Field

from genretag.onnx.contract import EMBEDDING_NAME, OUTPUT_NAME

HEAD_INPUT = "features"
MIN_VARIANCE = 1e-6
"""Features whose training variance is below this are dropped: a frozen extractor has channels that are
constant up to float32 rounding (musicnn: standard deviations ~1e-12), and scaling them to unit variance
would turn the ~1e-4 rounding gap between ONNX and TensorFlow into whole standard deviations."""
HEAD_OUTPUT = "probabilities"


C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 1, 11))
"""Inverse L2 strengths the head chooses from (1e-4 to 10, half-decade steps)."""
INNER_FOLDS = 5
"""Folds of the inner cross-validation that chooses ``C`` (fewer when a genre has fewer training tracks)."""
DEFAULT_C = 1.0
"""scikit-learn's default, used when there are too few training tracks per genre for an inner cross-validation."""


@dataclass
class LinearHead:
    """VarianceThreshold -> StandardScaler -> LogisticRegression (lbfgs, multinomial, L2 strength ``1/C``, balanced class weights).

    ``n_classes``: K, the number of labels; :meth:`predict_proba` always returns K columns.
    ``C``: the inverse L2 strength; None chooses it in :meth:`fit` from :data:`C_GRID` by an inner
    cross-validation over the training clips grouped by track (so the clips of one track never sit
    on both sides of an inner split), scored by multinomial log loss (a proper scoring rule: the
    track decision averages clip probabilities, so their calibration matters, and log loss does
    not tie the way accuracy does on a few dozen tracks).
    """

    n_classes: int
    C: float | None = None
    max_iter: int = 2000

    def __post_init__(self) -> None:
        self.pipeline = None

    def fit(self, features: np.ndarray, labels: np.ndarray, *, seed: int, groups: np.ndarray | None = None) -> dict[str, Any]:
        """Fit on float32 [n, D] features and int labels in [0, K); returns facts (chosen C and how, iterations, classes seen,
        ``cv_curve``: :func:`choose_C`'s curve, [] for a fixed C).

        ``groups``: [n] track id of each clip, needed when ``C`` is None (inner cross-validation,
        :func:`choose_C`). Class weights are ``balanced`` (inverse class frequency), so unbalanced
        genres do not tilt the head. Raises ValueError when ``labels`` holds fewer than two classes
        (scikit-learn cannot fit that) or when ``C`` is None and ``groups`` is missing.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.int64)
        if self.C is None:
            if groups is None:
                raise ValueError("choosing the head's C needs the track of every training clip (groups)")
            chosen, how, curve = choose_C(features, labels, groups=np.asarray(groups), seed=seed, max_iter=self.max_iter)
        else:
            chosen, how, curve = self.C, "fixed", []
        self.pipeline = make_pipeline(
            *_scaling(),
            LogisticRegression(C=chosen, max_iter=self.max_iter, class_weight="balanced", random_state=seed),
        )
        self.pipeline.fit(features, labels)
        classifier = self.pipeline[-1]
        return {"head": "VarianceThreshold+StandardScaler+LogisticRegression", "features_kept": int(classifier.coef_.shape[1]),
                "head_C": float(chosen), "head_C_choice": how,
                "head_iterations": int(np.max(classifier.n_iter_)), "classes_seen": len(classifier.classes_), "cv_curve": curve}

    @property
    def fitted_C(self) -> float | None:
        """The C of the fitted classifier (None before :meth:`fit`)."""
        return None if self.pipeline is None else float(self.pipeline[-1].C)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """float32 [n, K] probabilities; columns of classes absent from training stay 0."""
        seen = self.pipeline.predict_proba(np.asarray(features, dtype=np.float64))
        out = np.zeros((len(seen), self.n_classes), dtype=np.float32)
        out[:, self.pipeline[-1].classes_] = seen
        return out

    def to_onnx(self, *, n_features: int, opset: int) -> onnx.ModelProto:
        """The fitted head as ONNX: ``features`` [N, D] -> ``probabilities`` [N, K] (skl2onnx, no ZipMap).

        Every class must have been seen in training (else the K columns would not line up): ValueError.
        """
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        if len(self.pipeline[-1].classes_) != self.n_classes:
            raise ValueError(f"the head saw {len(self.pipeline[-1].classes_)} of {self.n_classes} classes in training")
        model = convert_sklearn(
            self.pipeline,
            initial_types=[(HEAD_INPUT, FloatTensorType([None, n_features]))],
            options={id(self.pipeline[-1]): {"zipmap": False}},
            target_opset={"": opset, "ai.onnx.ml": 3},
            final_types=None,
        )
        probability_output = model.graph.output[1].name
        for node in model.graph.node:
            node.output[:] = [HEAD_OUTPUT if o == probability_output else o for o in node.output]
        keep = [o for o in model.graph.output if o.name == probability_output]
        keep[0].name = HEAD_OUTPUT
        del model.graph.output[:]
        model.graph.output.extend(keep)
        return model


def _scaling() -> list:
    """New VarianceThreshold(:data:`MIN_VARIANCE`) and StandardScaler steps: the head's feature scaling."""
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.preprocessing import StandardScaler

    return [VarianceThreshold(MIN_VARIANCE), StandardScaler()]


def choose_C(features: np.ndarray, labels: np.ndarray, *, groups: np.ndarray, seed: int,
             max_iter: int = 2000) -> tuple[float, str, list[dict[str, float]]]:
    """The head's C from :data:`C_GRID` by grouped inner cross-validation on the training clips only.

    ``features`` float [n, D], ``labels`` int [n], ``groups`` [n] track ids. Folds:
    scikit-learn's StratifiedGroupKFold (shuffled with ``seed``), ``min(INNER_FOLDS, fewest
    training tracks of a genre)`` of them; LogisticRegressionCV scores every C of the grid by
    multinomial log loss on the held-out tracks' clips, on features scaled once on all training
    clips; ``max_iter``: lbfgs iterations per fit. Returns (C, how it was chosen, the curve: one row per C of the grid,
    ascending, ``{"C": C, "log_loss": mean held-out log loss over the folds}``); with fewer than 2 tracks in some genre
    there is no inner split and the answer is (:data:`DEFAULT_C`, the reason, []).
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline

    tracks_per_class = [len(np.unique(groups[labels == k])) for k in np.unique(labels)]
    folds = min(INNER_FOLDS, min(tracks_per_class))
    if folds < 2:
        return DEFAULT_C, f"default {DEFAULT_C} (a genre has fewer than 2 training tracks: no inner cross-validation)", []
    scaled = make_pipeline(*_scaling()).fit_transform(features)
    splits = list(StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(scaled, labels, groups))
    search = LogisticRegressionCV(Cs=list(C_GRID), cv=splits, scoring="neg_log_loss", class_weight="balanced",
                                  max_iter=max_iter, random_state=seed, l1_ratios=(0.0,), use_legacy_attributes=False).fit(scaled, labels)
    losses = -np.asarray(search.scores_).reshape(folds, -1, len(search.Cs_))[:, 0, :].mean(axis=0)  # [folds, l1_ratios, Cs]
    curve = [{"C": float(c), "log_loss": float(loss)} for c, loss in zip(search.Cs_, losses, strict=True)]
    return float(search.C_), f"inner {folds}-fold cross-validation grouped by track, log loss", curve


def attach_head(network: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """``network`` (one output ``embedding``) followed by ``head`` (``features`` -> ``probabilities``).

    The result keeps the network's input and has outputs ``probabilities`` and ``embedding``
    (contract v2 names); head tensors are prefixed ``head/``. Both models must share an IR version
    (the head is set to the network's).
    """
    from genretag.onnx.graph import rename_tensor

    network, head = (onnx.ModelProto.FromString(m.SerializeToString()) for m in (network, head))
    head.ir_version = network.ir_version
    versions: dict[str, int] = {}  # skl2onnx and tf2onnx pick different (compatible) opsets per domain
    for entry in (*network.opset_import, *head.opset_import):
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    for model in (network, head):
        del model.opset_import[:]
        model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    merged = onnx.compose.merge_models(
        network, head, io_map=[(EMBEDDING_NAME, HEAD_INPUT)], prefix2="head/",
        outputs=[f"head/{HEAD_OUTPUT}", EMBEDDING_NAME],
    )
    rename_tensor(merged.graph, f"head/{HEAD_OUTPUT}", OUTPUT_NAME)
    ordered = [onnx.ValueInfoProto.FromString(v.SerializeToString())  # contract order: probabilities, embedding
               for v in sorted(merged.graph.output, key=lambda value: value.name != OUTPUT_NAME)]
    del merged.graph.output[:]
    merged.graph.output.extend(ordered)
    return merged


class HeadOptions(BaseModel):
    """A feature-head family's params.yaml section ``families.<name>``: ``C`` the head's inverse L2 strength
    (null: chosen per fit by grouped inner cross-validation, :func:`choose_C`), ``batch_size`` clips per embedding batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    C: float | None = Field(None, gt=0)
    batch_size: int = Field(64, ge=1)


class FeatureHeadFamily:
    """A family whose only trained part is a :class:`LinearHead` over a fixed per-clip embedding.

    Subclasses set ``name``, ``sample_rate``, ``clip_samples`` and provide :meth:`embed` (the numpy/TF
    reference of the frozen part, float32 [n, S] -> [n, D]), :meth:`frontend` and
    :meth:`embedding_network` (its ONNX form: ``waveform`` -> X and X -> ``embedding``, joined by
    :func:`genretag.graph.compose`), :meth:`preprocessing` and :meth:`describe_frozen`.
    """

    name: ClassVar[str]
    options: ClassVar[type[HeadOptions]] = HeadOptions
    dvc_params: ClassVar[tuple[str, ...]] = ()  # the embedding's rate and clip length are the family's own
    variants: ClassVar[tuple[str, ...]] = ()
    sample_rate: int
    clip_samples: int
    HEAD_FILE: ClassVar[str] = "head.joblib"

    @classmethod
    def from_params(cls, options: HeadOptions, *, params, variant: str | None = None) -> FeatureHeadFamily:
        """The family with ``options`` (its section) and ``export.opset`` of ``params`` (:class:`~genretag.core.config.Params`)."""
        return cls(opset=params.export.opset, **options.model_dump())

    def __init__(self, *, C: float | None = None, opset: int = 17, batch_size: int = 64) -> None:
        """``C``: the head's inverse L2 strength; None (the default) chooses it per fit by grouped inner cross-validation."""
        self.head = LinearHead(n_classes=0, C=C)
        self.labels: tuple[str, ...] = ()
        self.opset = opset
        self.batch_size = batch_size
        self.embedding_size = 0

    # -- subclass hooks
    def embed(self, waveforms: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def frontend(self) -> onnx.ModelProto:
        raise NotImplementedError

    def embedding_network(self) -> onnx.ModelProto:
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe_frozen(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- the Family protocol
    def fit(self, train, validation, *, labels: tuple[str, ...], seed: int, log: Callable[[str], None]) -> dict[str, Any]:
        """Embed the train clips once, fit the head (C chosen on the train tracks unless fixed); report train and validation clip accuracy."""
        self.labels = tuple(labels)
        self.head = LinearHead(n_classes=len(labels), C=self.head.C)
        features = self.embed(train.waveforms)
        self.embedding_size = int(features.shape[1])
        facts = self.head.fit(features, train.labels, seed=seed, groups=np.asarray(train.track_ids))
        facts["train_accuracy"] = float(np.mean(self.head.predict_proba(features).argmax(1) == train.labels))
        if len(validation):
            predicted = self.predict(validation.waveforms).probabilities.argmax(1)
            facts["validation_accuracy"] = float(np.mean(predicted == validation.labels))
        log(f"{self.name}: head fitted on {len(train)} clips ({self.embedding_size}-d embedding), C {facts['head_C']:g} ({facts['head_C_choice']}), "
            f"train accuracy {facts['train_accuracy']:.3f}, validation {facts.get('validation_accuracy', float('nan')):.3f}")
        return facts

    def predict(self, waveforms: np.ndarray):
        from genretag.onnx.contract import Prediction

        embedding = self.embed(waveforms)
        return Prediction(probabilities=self.head.predict_proba(embedding), embedding=embedding)

    def to_onnx(self) -> onnx.ModelProto:
        from genretag.onnx.graph import compose

        network = attach_head(self.embedding_network(), self.head.to_onnx(n_features=self.embedding_size, opset=self.opset))
        return compose(self.frontend(), network)

    def describe(self) -> dict[str, Any]:
        return {**self.describe_frozen(), "head": "StandardScaler + LogisticRegression (scikit-learn, balanced class weights)",
                "head_C": self.head.fitted_C, "trained_parameters": self.trained_parameters()}

    def trained_parameters(self) -> int:
        """Scaler means/scales plus the classifier's weights and biases (0 before :meth:`fit`)."""
        if self.head.pipeline is None:
            return 0
        classifier = self.head.pipeline[-1]
        return int(2 * classifier.coef_.shape[1] + classifier.coef_.size + classifier.intercept_.size)

    def save(self, directory: Path) -> None:
        """``head.joblib``: the fitted scikit-learn pipeline with the labels and embedding size (joblib)."""
        import joblib

        from genretag.core.atomic import atomic_path

        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / self.HEAD_FILE) as tmp:
            joblib.dump({"pipeline": self.head.pipeline, "labels": list(self.labels), "C": self.head.fitted_C,
                         "embedding_size": self.embedding_size}, tmp)

    def load(self, directory: Path) -> None:
        """Read what :meth:`save` wrote; raises :class:`~genretag.errors.TrainingDataError` when unusable."""
        import joblib

        from genretag.core.errors import TrainingDataError

        path = directory / self.HEAD_FILE
        try:
            state = joblib.load(path)
        except (OSError, EOFError, KeyError, ValueError) as exc:
            raise TrainingDataError(f"{path}: cannot read the trained head ({exc})") from exc
        self.labels = tuple(state["labels"])
        self.head = LinearHead(n_classes=len(self.labels), C=state["C"])
        self.head.pipeline = state["pipeline"]
        self.embedding_size = int(state["embedding_size"])
