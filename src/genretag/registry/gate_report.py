"""What the gate decided, as data and as text: models/registry.json and models/GATE.md.

Pure functions and records; the register stage (:mod:`genretag.registry.register`) writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
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
        "| model | version | family | rate (Hz) | track accuracy | track macro-F1 | clip accuracy | clip macro-F1 | above chance p | servable | floor |",
        "| --- | --- | --- | ---: | --- | --- | --- | --- | ---: | --- | --- |",
    ]

    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        return "" if not value else f"{100 * value['estimate']:.1f} [{100 * value['low']:.1f}, {100 * value['high']:.1f}]"

    for row in registration.candidates:
        p = row.get("chance_p")
        lines.append(
            f"| {row['model']} | {row['version'] or ''} | {row['family']} | {row['sample_rate'] or ''} | {cell(row, 'track_accuracy')} "
            f"| {cell(row, 'track_macro_f1')} | {cell(row, 'clip_accuracy')} | {cell(row, 'clip_macro_f1')} "
            f"| {'' if p is None else f'{p:.3g}'} | {'yes' if row['servable'] else 'no'} | {row['floor']} |"
        )
    return "\n".join(lines) + "\n"


def write_gate_report(registration: Registration, *, record_path: Path, gate_path: Path) -> None:
    """Write models/registry.json (``record_path``) and models/GATE.md (``gate_path``), each atomically."""
    write_json(record_path, asdict(registration))
    write_text(gate_path, gate_markdown(registration))
