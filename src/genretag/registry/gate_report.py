"""What the gate decided, as data and as text: models/registry.json and models/GATE.md.

Pure functions and records; the register stage (:mod:`genretag.registry.register`) writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genretag.core.atomic import write_json, write_text
from genretag.onnx.contract import ModelContract

if TYPE_CHECKING:
    from genretag.evaluation.gate import Decision

RECORD_NAME = "registry.json"
GATE_NAME = "GATE.md"
REFUSED = "refused"  # Registration.decision when the gate cannot decide honestly (its baseline is missing or unscorable)


@dataclass(frozen=True)
class Registration:
    """The outcome of one register stage: the gate's decision and every candidate's row."""

    model_name: str
    decision: str  # promote | keep | none | refused
    rule: str
    reason: str
    champion_version: str | None  # after the decision (None: nothing is served)
    champion: str | None  # its candidate id (or ``champion vN`` for an earlier champion; None when not known)
    previous_champion_version: str | None
    alpha: float
    min_improvement: float
    baseline: str | None  # None: the floor checks chance only
    test_tracks: int
    test_clips: int
    test_fingerprint: str
    candidates: list[dict[str, Any]]  # one row per model: id, version, family, sample rate, metrics, floor
    decided_at: str
    protocol: str = "holdout"  # holdout | cross-validated (genretag.evaluation.cv_gate.PROTOCOL_*)
    cv_below_tracks: int = 0  # register.cv_below_tracks: a test split with fewer tracks is cross-validated
    cv_tracks: int = 0  # cross-validated: every labelled track, and their clips
    cv_clips: int = 0
    cv_folds: int = 0
    cv_repeats: int = 0
    cv_skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was compared on the test split instead


@dataclass(frozen=True)
class GateEntry:
    """One model in the gate: a candidate file or the downloaded champion (``version`` None: not registered)."""

    name: str
    version: str | None
    contract: ModelContract | None
    problem: str  # why it could not be registered or scored ("" when fine)


def refusal_line(failures: Mapping[str, str]) -> str:
    """The one line that says why nothing is served (model -> why it failed)."""
    listed = "; ".join(f"{name}: {why}" for name, why in failures.items()) or "no candidate under models/candidates"
    return f"no servable model: every candidate failed the gate ({listed}); see models/GATE.md"


def gate_rows(entries: list[GateEntry], decision: Decision | None) -> list[dict[str, Any]]:
    """The candidates table of :class:`Registration`: one row per entry, with the gate's evidence when it had some."""
    rows = []
    for entry in entries:
        evidence = decision.evidence.get(entry.name) if decision else None
        row: dict[str, Any] = {
            "model": entry.name, "version": entry.version,
            "family": entry.contract.family if entry.contract else "",
            "sample_rate": entry.contract.sample_rate if entry.contract else None,
            "servable": bool(evidence and evidence.servable),
            "floor": evidence.floor if evidence else entry.problem,
            "protocol": decision.protocols.get(entry.name, "holdout") if evidence is not None else "",
            "tracks": evidence.n_tracks if evidence is not None else None,
        }
        if evidence is not None:
            row |= {key: asdict(value) for key, value in evidence.metrics.items()}
            row |= {"chance": evidence.chance, "chance_p": evidence.chance_p,
                    "baseline_p": evidence.baseline_test.p_less if evidence.baseline_test else None}
        comparison = decision.comparisons.get(entry.name) if decision else None
        if comparison is not None:
            row |= {"gain": asdict(comparison.gain), "mcnemar": asdict(comparison.test), "level": comparison.level}
        rows.append(row)
    return rows


def gate_markdown(registration: Registration) -> str:
    """models/GATE.md: the decision with its rule and numbers, and the candidates table (intervals at 1 - alpha)."""
    confidence = 100 * (1 - registration.alpha)
    if registration.champion_version is None:
        champion = "none: nothing is served"
    else:
        champion = f"v{registration.champion_version}" + (f" ({registration.champion})" if registration.champion else "")
    baseline = f"`{registration.baseline}`" if registration.baseline else "none (chance only)"
    lines = [
        "## Champion gate", "",
        f"Decision: **{registration.decision}** (rule `{registration.rule}`); champion after it: **{champion}**.", "",
        registration.reason, "",
        f"Test split {registration.test_fingerprint}: {registration.test_tracks} tracks, {registration.test_clips} clips, scored from "
        f"audio through each model's ONNX graph at its own sample rate. alpha {registration.alpha:g}, min_improvement "
        f"{registration.min_improvement:g}, baseline {baseline}. Intervals: {confidence:g} % paired bootstrap over "
        "test tracks (Efron & Tibshirani 1993); comparisons: exact McNemar on paired track outcomes (McNemar 1947; Dietterich 1998).", "",
        *_protocol_lines(registration, confidence),
        "| model | version | family | rate (Hz) | track accuracy | track macro-F1 | clip accuracy | clip macro-F1 | above chance p | servable | floor | protocol (tracks) |",
        "| --- | --- | --- | ---: | --- | --- | --- | --- | ---: | --- | --- | --- |",
    ]

    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "" if not value else f"{100 * value['estimate']:.1f} [{100 * value['low']:.1f}, {100 * value['high']:.1f}]"

    def tracks(row: dict) -> str:
        return f" ({row['tracks']})" if row.get("tracks") else ""

    for row in registration.candidates:
        p = row.get("chance_p")
        lines.append(
            f"| {row['model']} | {row['version'] or ''} | {row['family']} | {row['sample_rate'] or ''} | {cell(row, 'track_accuracy')} "
            f"| {cell(row, 'track_macro_f1')} | {cell(row, 'clip_accuracy')} | {cell(row, 'clip_macro_f1')} "
            f"| {'' if p is None else f'{p:.3g}'} | {'yes' if row['servable'] else 'no'} | {row['floor']} "
            f"| {row.get('protocol') or ''}{tracks(row)} |"
        )
    return "\n".join(lines) + "\n"


def _protocol_lines(registration: Registration, confidence: float) -> list[str]:
    """GATE.md's statement of the protocol that decided and how many tracks each comparison used."""
    if registration.protocol != "cross-validated":
        below = (f" (register.cv_below_tracks {registration.cv_below_tracks}: the test split is large enough)"
                 if registration.cv_below_tracks else " (register.cv_below_tracks 0: never cross-validated)")
        return [f"Protocol: **holdout** on the {registration.test_tracks} test tracks{below}.", ""]
    skipped = "; ".join(f"`{c}`: {why}" for c, why in registration.cv_skipped.items())
    return [
        f"Protocol: **cross-validated**: the test split holds {registration.test_tracks} tracks, fewer than register.cv_below_tracks "
        f"{registration.cv_below_tracks}, so the candidates that refit cheaply were evaluated by {registration.cv_repeats} x "
        f"{registration.cv_folds}-fold repeated stratified track-level cross-validation over all {registration.cv_tracks} labelled "
        f"tracks ({registration.cv_clips} clips: train, validation and test), each fold's model fitted on the other folds. Their "
        f"track accuracy is the mean over the {registration.cv_repeats * registration.cv_folds} folds with a {confidence:g} % interval "
        "and their comparisons (floor and promotion) are the corrected repeated k-fold t-test on per-fold differences "
        "(Nadeau & Bengio 2003; Bouckaert & Frank 2004); a comparison involving a model that was not cross-validated is exact "
        f"McNemar on the {registration.test_tracks} test tracks. The model served after a promotion is the chosen family refitted "
        "on every labelled track. Clip metrics are not cross-validated (blank).", "",
        *([f"Not cross-validated (holdout on the test split): {skipped}.", ""] if skipped else []),
    ]


def write_gate_report(registration: Registration, *, record_path: Path, gate_path: Path) -> None:
    """Write models/registry.json (``record_path``) and models/GATE.md (``gate_path``), each atomically."""
    write_json(record_path, asdict(registration))
    write_text(gate_path, gate_markdown(registration))
