"""The parity gate: an ONNX graph must reproduce its family's own framework (the reference forward pass)
on the same waveforms before it is written.

:func:`check_parity` runs both on the test clips and on :func:`synthetic_clips` (music-like signals,
noise, silence, clipping, quiet music) and passes when the top-1 class agrees on every clip (reference
top-two gaps under :data:`TIE_GAP` excepted and counted) and max |probability difference| <= the
tolerance; otherwise :class:`~genretag.core.errors.ExportError` in one line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnx

from genretag.core.errors import ExportError
from genretag.onnx.contract import Prediction
from genretag.onnx.session import cpu_session, predict_waveforms

if TYPE_CHECKING:
    from genretag.families import ClipSet

RANDOM_SEED = 2021
DEFAULT_TOLERANCE = 1e-3  # issue 10: max |probability difference| of the ONNX graph vs the framework
TIE_GAP = 1e-6  # reference top-two gap below which the top-1 class is a tie and not compared
SYNTHETIC_KINDS: tuple[str, ...] = ("music-rock", "music-jazz", "music-classical", "noise", "silence", "clipping", "quiet-music")


@dataclass(frozen=True)
class TestClips:
    """One split's labelled clips as waveforms at one sample rate (the test split for parity, the
    validation split for calibration)."""

    __test__ = False  # not a pytest test class, whatever its name

    waveforms: np.ndarray  # float32 (n, S)
    genres: tuple[str, ...]  # true genre of each clip
    clip_ids: tuple[str, ...]
    sample_rate: int
    track_ids: tuple[str, ...] = ()  # the track of each clip (() when not known)

    def __len__(self) -> int:
        return len(self.clip_ids)

    @classmethod
    def from_clip_set(cls, clips: ClipSet, *, labels: Sequence[str]) -> TestClips:
        """A decoded split (:class:`genretag.families.ClipSet`, integer labels into ``labels``) as TestClips."""
        return cls(waveforms=clips.waveforms, genres=tuple(labels[i] for i in clips.labels), clip_ids=clips.clip_ids,
                   sample_rate=clips.sample_rate, track_ids=tuple(clips.track_ids))

    def fingerprint(self) -> str:
        """Hash of which clips (and labels) form the split: equal fingerprints, same test set."""
        digest = hashlib.sha256()
        for clip_id, genre in sorted(zip(self.clip_ids, self.genres)):
            digest.update(f"{clip_id}\t{genre}\n".encode())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX graph reproduces the framework on the same waveforms."""

    tolerance: float
    test_clips: int
    synthetic_clips: int
    max_abs_diff_test: float
    max_abs_diff_synthetic: float
    max_abs_diff_embedding: float  # reported, not gated (embeddings are not probabilities)
    top1_mismatches: int
    near_ties: int  # clips whose reference top-two gap is under TIE_GAP (top-1 not compared)
    onnx_test_accuracy: float

    @property
    def max_abs_diff(self) -> float:
        return max(self.max_abs_diff_test, self.max_abs_diff_synthetic)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.top1_mismatches == 0


class Exportable(Protocol):
    """What :func:`genretag.training.export.export_candidate` needs of a model (every :class:`genretag.families.Family` has it)."""

    def to_onnx(self) -> onnx.ModelProto:
        """The contract-v2 graph, without metadata."""

    def predict(self, waveforms: np.ndarray) -> Prediction:
        """The framework's forward pass on float32 [n, S]."""


def _music(style: str, *, sample_rate: int, clip_samples: int, rng: np.random.Generator) -> np.ndarray:
    """float64 [clip_samples], peak 0.8: a few seconds of music-like sound in ``style`` ("rock", "jazz",
    "classical"): drum hits, a bass line and chords built from sines, square waves and decaying noise, the
    spectra and transients a front end sees in music. Seeded by ``rng``; not a genre recipe (parity only
    needs realistic inputs, not separable ones)."""
    t = np.arange(clip_samples) / sample_rate

    def tone(hz: np.ndarray | float, harmonics: int = 1) -> np.ndarray:
        phase = 2 * np.pi * np.cumsum(np.broadcast_to(hz, t.shape)) / sample_rate
        return sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))

    def hits(period_s: float, decay_s: float, offset_s: float = 0.0) -> np.ndarray:
        return np.exp(-((t - offset_s) % period_s) / decay_s)

    notes = 110.0 * 2 ** (rng.integers(0, 12, size=int(t[-1] / 0.4) + 2) / 12)  # a random line, one note per 0.4 s
    line = notes[(t / 0.4).astype(int)]
    if style == "rock":  # 120 bpm kick and snare, a square-wave power chord, the bass line
        signal = (0.8 * np.sin(2 * np.pi * 55 * t) * hits(0.5, 0.08) + 0.4 * rng.standard_normal(t.shape) * hits(0.5, 0.05, 0.25)
                  + 0.25 * sum(np.sign(np.sin(2 * np.pi * hz * t)) for hz in (82.41, 123.47, 164.81)) / 3 + 0.4 * tone(line, 3))
    elif style == "jazz":  # bright ride in swung eighths, a walking bass, a soft major-seventh chord
        ride = np.diff(rng.standard_normal(len(t) + 1)) * (hits(0.6, 0.03) + 0.6 * hits(0.6, 0.03, 0.4))
        signal = 0.15 * ride + 0.5 * tone(line / 2, 2) + 0.1 * sum(tone(261.63 * r, 4) for r in (1, 5 / 4, 3 / 2, 15 / 8))
    else:  # sustained bowed chords with vibrato and slow attacks, one chord a second
        root = 196.0 * 2 ** (rng.integers(0, 7, size=int(t[-1]) + 2) / 12)[t.astype(int)]
        vibrato = 1 + 0.003 * np.sin(2 * np.pi * 5.5 * t)
        attack = np.minimum(1.0, (t % 1.0) / 0.3)
        signal = attack * sum(tone(root * r * vibrato, 6) for r in (1, 5 / 4, 3 / 2, 2))
    return 0.8 * signal / max(float(np.abs(signal).max()), 1e-9)


def synthetic_clips(*, sample_rate: int, clip_samples: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """float32 (len(SYNTHETIC_KINDS), clip_samples), in :data:`SYNTHETIC_KINDS` order: parity inputs beside
    the test clips, where a front end's dB floor, max reference and colour table are most likely to part
    from the reference.

    Music-like rock, jazz and classical (:func:`_music`, each from ``np.random.default_rng([seed, i])``),
    white noise (sd 0.3), silence, a 110 Hz sine at 3x full scale clipped to +-1, and the rock clip 60 dB down.
    """
    t = np.arange(clip_samples) / sample_rate
    music = [_music(style, sample_rate=sample_rate, clip_samples=clip_samples, rng=np.random.default_rng([seed, index]))
             for index, style in enumerate(("rock", "jazz", "classical"))]
    noise = np.random.default_rng(seed).standard_normal(clip_samples) * 0.3
    clipping = np.clip(3.0 * np.sin(2 * np.pi * 110.0 * t), -1.0, 1.0)
    return np.stack([*music, noise, np.zeros(clip_samples), clipping, music[0] * 1e-3]).astype(np.float32)


def check_parity(
    candidate: Exportable,
    onnx_bytes: bytes,
    *,
    test: TestClips,
    labels: tuple[str, ...],
    tolerance: float = DEFAULT_TOLERANCE,
    synthetic: np.ndarray | None = None,
) -> ParityReport:
    """Compare the ONNX graph with ``candidate.predict`` on the test clips and ``synthetic`` clips
    (default :func:`synthetic_clips`); raise ExportError naming every gap."""
    if not len(test):
        raise ExportError("the test split holds no clips: nothing to check the ONNX export against")
    if synthetic is None:
        synthetic = synthetic_clips(sample_rate=test.sample_rate, clip_samples=test.waveforms.shape[1])
    session = cpu_session(onnx_bytes)
    reference_test, reference_synthetic = candidate.predict(test.waveforms), candidate.predict(synthetic)
    _check_probabilities(reference_test.probabilities, n_classes=len(labels))
    # Odd batch sizes on purpose: the batch dimension must really be dynamic.
    onnx_test, onnx_synthetic = predict_waveforms(session, test.waveforms, batch_size=37), predict_waveforms(session, synthetic, batch_size=5)

    mismatches = ties = 0
    for reference, candidate_out in ((reference_test, onnx_test), (reference_synthetic, onnx_synthetic)):
        top_two = np.sort(reference.probabilities, axis=1)[:, -2:]
        tied = (top_two[:, 1] - top_two[:, 0]) < TIE_GAP
        ties += int(tied.sum())
        mismatches += int(((reference.probabilities.argmax(axis=1) != candidate_out.probabilities.argmax(axis=1)) & ~tied).sum())
    predicted = np.asarray(labels)[onnx_test.probabilities.argmax(axis=1)]
    embedding_gap = max(
        float(np.abs(o.embedding - r.embedding).max()) if o.embedding.shape == r.embedding.shape else float("inf")
        for o, r in ((onnx_test, reference_test), (onnx_synthetic, reference_synthetic))
    )
    report = ParityReport(
        tolerance=tolerance,
        test_clips=len(test),
        synthetic_clips=len(synthetic),
        max_abs_diff_test=float(np.abs(onnx_test.probabilities - reference_test.probabilities).max()),
        max_abs_diff_synthetic=float(np.abs(onnx_synthetic.probabilities - reference_synthetic.probabilities).max()),
        max_abs_diff_embedding=embedding_gap,
        top1_mismatches=mismatches,
        near_ties=ties,
        onnx_test_accuracy=float(np.mean(predicted == np.asarray(test.genres))),
    )
    if not report.passed:
        problems = [
            f"max |diff| {diff:.3g} on {count} {what}"
            for diff, count, what in (
                (report.max_abs_diff_test, report.test_clips, "test clips"),
                (report.max_abs_diff_synthetic, report.synthetic_clips, "synthetic clips"),
            )
            if not diff <= tolerance
        ]
        if mismatches:
            problems.append(f"top-1 class differs on {mismatches} clip(s)")
        raise ExportError(
            f"ONNX export does not match the framework (tolerance {tolerance:g}): {'; '.join(problems)}. Nothing written."
        )
    return report


def _check_probabilities(outputs: np.ndarray, *, n_classes: int) -> None:
    if outputs.ndim != 2 or outputs.shape[1] != n_classes:
        raise ExportError(f"model output has shape {outputs.shape}, expected (N, {n_classes}) for params.genres")
    if outputs.min() < -1e-6 or not np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        raise ExportError(
            "model output is not a probability distribution (rows must be >= 0 and sum to 1): "
            "the last layer must be a softmax"
        )
