"""Validate data/raw against its manifest with Great Expectations 1.x; quarantine the bad files.

Three suites, declared below as data (``Check`` rows):

* ``genretag.manifest`` runs on the manifest: labels, decode errors, duration, silence, non-finite
  samples, unique track ids and audio content. Of several copies the one kept is otherwise fine, a
  reviewed label (provenance ``review:...``) before a corpus one, then the first in track_id order:
  a reviewer's correction of a corpus track wins over the corpus label (:func:`_kept_copy`).
* ``genretag.audio`` runs on what the not-yet-rejected WAVs in data/raw really hold (header and
  samples read with soundfile): 22,050 Hz, mono, PCM-16, frames, finite, duration, and the samples'
  hash equal to the manifest's ``content_sha256``.
* ``genretag.balance`` runs on the per-genre counts of the tracks that passed: a dataset-level
  *warning* (largest genre / each genre <= ``max_class_imbalance``), never a quarantine.

Which rows fail comes from GX's unexpected index lists (``result_format="COMPLETE"``); a row that
fails several expectations gets every reason, joined by "; ".
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from genretag.audio import decoding as audio
from genretag.core.atomic import replace_dir, write_csv, write_json, write_text
from genretag.core.config import Layout, Params
from genretag.data.ingest import MANIFEST_COLUMNS, read_table  # the manifest contract lives with ingest
from genretag.core.errors import ConfigError, ValidationFailed
from genretag.data.reports import validation_summary_html
from genretag.data.web_assets import link_summary, localize_pages

log = logging.getLogger(__name__)

NUMERIC_COLUMNS: tuple[str, ...] = ("original_sample_rate", "channels", "duration_s", "rms_dbfs", "peak", "nonfinite_samples")
QUARANTINE_COLUMNS: tuple[str, ...] = ("source_path", "track_id", "genre", "reason")

MANIFEST_SUITE = "genretag.manifest"
AUDIO_SUITE = "genretag.audio"
BALANCE_SUITE = "genretag.balance"
REPORT_FOLDER = "validation"
RESULT_FILE = "validation_result.json"
SUMMARY_PAGE = "summary.html"  # static, offline-readable (genretag.reports), beside GX's Data Docs
DOCS_SITE = "genretag"  # the Data Docs site (built into reports/validation)
SUMMARY_LINK = "Summary of this validation: quarantined files and every expectation, on one page (summary.html)"
_SOURCE = "genretag"  # the GX pandas data source that every suite's frame goes through

Row = Mapping[str, Any]


def _p(name: str) -> dict[str, str]:
    """A GX suite parameter: the value comes from params.yaml when the suite runs."""
    return {"$PARAMETER": name}


def _recorded(column: str) -> gxe.Expectation:
    """``column`` must hold a value on every row that ingest decoded (undecodable rows have none)."""
    return gxe.ExpectColumnValuesToNotBeNull(column=column, row_condition="error.isna()", condition_parser="pandas")


@dataclass(frozen=True)
class Check:
    """One expectation and how a row that fails it is described in quarantine.csv.

    ``reason`` gets the failing row merged with the suite parameters (and, for ``keep_first``
    checks, ``original``: the track_id of the copy that is kept, :func:`_kept_copy`).
    """

    name: str
    expectation: Callable[[], gxe.Expectation]
    reason: Callable[[Row], str]
    keep_first: str | None = None  # uniqueness over this column: one copy passes (_kept_copy)


def _num(value: Any, digits: int = 1) -> str:
    return f"{float(value):.{digits}f}"


def _decode_reason(row: Row) -> str:
    error = str(row["error"])
    return error if error.lower().startswith("cannot decode") else f"cannot decode: {error}"


def _duration_reason(row: Row, *, where: str = "duration") -> str:
    value = float(row["duration_s"])
    side = f"below {_num(row['min_duration_s'])}" if value < row["min_duration_s"] else f"above {_num(row['max_duration_s'])}"
    return f"{where} {_num(value)} s {side} s"


MANIFEST_CHECKS: tuple[Check, ...] = (
    Check("track_id_present", lambda: gxe.ExpectColumnValuesToNotBeNull(column="track_id"),
          lambda r: "no track_id in the manifest"),
    Check("genre_present", lambda: gxe.ExpectColumnValuesToNotBeNull(column="genre"),
          lambda r: "no genre label"),
    Check("genre_known", lambda: gxe.ExpectColumnValuesToBeInSet(column="genre", value_set=_p("genres")),
          lambda r: f"genre label {r['genre']!r} is not one of params.genres"),
    Check("decoded", lambda: gxe.ExpectColumnValuesToBeNull(column="error"), _decode_reason),
    Check("duration", lambda: gxe.ExpectColumnValuesToBeBetween(
        column="duration_s", min_value=_p("min_duration_s"), max_value=_p("max_duration_s")), _duration_reason),
    Check("not_silent", lambda: gxe.ExpectColumnValuesToBeBetween(column="rms_dbfs", min_value=_p("silence_rms_dbfs")),
          lambda r: f"silent: RMS {_num(r['rms_dbfs'])} dBFS below {_num(r['silence_rms_dbfs'])}"),
    Check("finite", lambda: gxe.ExpectColumnValuesToBeInSet(column="nonfinite_samples", value_set=[0]),
          lambda r: f"{int(r['nonfinite_samples'])} non-finite samples"),
    Check("duration_recorded", lambda: _recorded("duration_s"), lambda r: "manifest has no numeric duration_s"),
    Check("rms_recorded", lambda: _recorded("rms_dbfs"), lambda r: "manifest has no numeric rms_dbfs"),
    Check("nonfinite_recorded", lambda: _recorded("nonfinite_samples"),
          lambda r: "manifest has no numeric nonfinite_samples"),
    Check("content_recorded", lambda: _recorded("content_sha256"), lambda r: "manifest has no content_sha256"),
    Check("unique_track_id", lambda: gxe.ExpectColumnValuesToBeUnique(column="track_id"),
          lambda r: f"duplicate track_id {r['track_id']} (an earlier row is kept)", keep_first="track_id"),
    Check("unique_content", lambda: gxe.ExpectColumnValuesToBeUnique(column="content_sha256"),
          lambda r: f"duplicate of {r['original']} (same audio content)", keep_first="content_sha256"),
)

AUDIO_CHECKS: tuple[Check, ...] = (
    Check("readable", lambda: gxe.ExpectColumnValuesToBeNull(column="read_error"),
          lambda r: f"cannot read {r['path']}: {r['read_error']}"),
    Check("sample_rate", lambda: gxe.ExpectColumnValuesToBeInSet(column="sample_rate", value_set=_p("sample_rate_set")),
          lambda r: f"WAV on disk is {int(r['sample_rate'])} Hz, expected {r['sample_rate_set'][0]} Hz"),
    Check("mono", lambda: gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1]),
          lambda r: f"WAV on disk has {int(r['channels'])} channels, expected mono"),
    Check("pcm16", lambda: gxe.ExpectColumnValuesToBeInSet(column="subtype", value_set=["PCM_16"]),
          lambda r: f"WAV on disk is {r['subtype']}, expected PCM_16"),
    Check("has_frames", lambda: gxe.ExpectColumnValuesToBeBetween(column="frames", min_value=1),
          lambda r: "WAV on disk holds no audio frames"),
    Check("finite_on_disk", lambda: gxe.ExpectColumnValuesToBeInSet(column="finite", value_set=[True]),
          lambda r: f"WAV on disk holds {int(r['nonfinite_samples'])} non-finite samples"),
    Check("duration_on_disk", lambda: gxe.ExpectColumnValuesToBeBetween(
        column="duration_s", min_value=_p("min_duration_s"), max_value=_p("max_duration_s")),
          lambda r: _duration_reason(r, where="WAV on disk lasts")),
    Check("content_matches_manifest", lambda: gxe.ExpectColumnPairValuesToBeEqual(
        column_A="content_sha256", column_B="manifest_content_sha256", ignore_row_if="either_value_is_missing"),
          lambda r: "WAV on disk does not match the manifest's content_sha256"),
)

BALANCE_CHECKS: tuple[Check, ...] = (
    Check("class_balance", lambda: gxe.ExpectColumnValuesToBeBetween(
        column="imbalance", max_value=_p("max_class_imbalance"), severity="warning"),
          lambda r: (f"class imbalance: genre {r['genre']} has {int(r['tracks'])} passing tracks, the largest genre "
                     f"{int(r['largest'])} (ratio {_num(r['imbalance'])} > {_num(r['max_class_imbalance'])})")),
)


@dataclass
class ValidationOutcome:
    """What validation decided; ``write_validation_outputs`` turns it into files."""

    passed: pd.DataFrame  # manifest rows that passed (manifest columns, text as in the CSV)
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS, one row per rejected file
    summary: dict[str, float]  # flat numbers -> metrics/validation.json
    results: dict[str, ExpectationSuiteValidationResult]  # suite name -> GX result
    warnings: list[str]  # dataset-level findings that do not quarantine (class balance)
    reason_counts: dict[str, int]  # check name -> rows quarantined for it
    context: Any = field(default=None, repr=False)  # the GX context that holds suites and results
    parameters: dict[str, Any] = field(default_factory=dict)  # the suites' run-time parameters (_suite_parameters)


# ---------------------------------------------------------------- GX plumbing


def _new_context() -> Any:
    """An in-memory GX context: no project folder, no progress bars, no default docs site."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.data_sources.add_pandas(_SOURCE)
    return context


def _run_suite(
    context: Any, name: str, frame: pd.DataFrame, checks: Sequence[Check], parameters: Mapping[str, Any]
) -> ExpectationSuiteValidationResult:
    """Validate ``frame`` with the suite made of ``checks``; the result is kept in the context."""
    source = context.data_sources.get(_SOURCE)
    batch_definition = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    expectations = []
    for check in checks:
        expectation = check.expectation()
        expectation.meta = {"check": check.name}
        expectations.append(expectation)
    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_definition, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": frame}, expectation_parameters=dict(parameters), result_format="COMPLETE"
    )
    for item in result.results:
        if item.exception_info.get("raised_exception"):
            raise ValidationFailed(
                f"suite {name}: expectation {item.expectation_config.meta.get('check')} could not run: "
                f"{item.exception_info.get('exception_message')}"
            )
    return result


def _unexpected(result: ExpectationSuiteValidationResult) -> dict[str, list[Any]]:
    """Check name -> index labels of the rows GX found unexpected."""
    return {
        item.expectation_config.meta["check"]: list(item.result.get("unexpected_index_list") or [])
        for item in result.results
    }


REVIEWED = "review:"  # provenance prefix of a label a reviewer gave (genretag.data.ingest.feedback_sources)


def _kept_copy(frame: pd.DataFrame, copies: Sequence[Any], *, already_bad: set[Any]) -> Any:
    """Which of ``copies`` (row labels of ``frame`` in track_id order, one track's audio or id) passes.

    Preference: a copy no other check failed, then a reviewed label (provenance ``review:...``) over a
    corpus one, then the first in track_id order. A reviewer's correction must reach training even when
    its genre, and so its track_id ``<genre>.review-...``, sorts after the corpus track's.
    """
    def rank(label: Any) -> tuple[bool, bool]:
        return label in already_bad, not str(frame.at[label, "provenance"] or "").startswith(REVIEWED)

    return min(copies, key=rank)  # min keeps the first of equal ranks: track_id order


def _reasons(
    frame: pd.DataFrame, checks: Sequence[Check], unexpected: Mapping[str, list[Any]], parameters: Mapping[str, Any]
) -> dict[Any, dict[str, str]]:
    """Row label -> {check name: reason}, from GX's unexpected index lists."""
    failed: dict[Any, dict[str, str]] = {}

    def fail(label: Any, check: Check, **extra: Any) -> None:
        row = {**frame.loc[label].to_dict(), **parameters, **extra}
        failed.setdefault(label, {})[check.name] = check.reason(row)

    for check in checks:
        if not check.keep_first:
            for label in unexpected.get(check.name, []):
                fail(label, check)
    already_bad = set(failed)
    for check in checks:
        if not check.keep_first:
            continue
        column = check.keep_first
        labels = sorted(unexpected.get(check.name, []), key=frame.index.get_loc)
        groups: dict[Any, list[Any]] = {}
        for label in labels:
            groups.setdefault(frame.at[label, column], []).append(label)
        for copies in groups.values():
            original = _kept_copy(frame, copies, already_bad=already_bad)
            for label in copies:
                if label != original:
                    fail(label, check, original=frame.at[original, "track_id"])
    return failed


# ---------------------------------------------------------------- frames


def read_manifest(path: str | Path) -> pd.DataFrame:
    """data/raw/manifest.csv with every column as text (empty cells stay empty strings)."""
    path = Path(path)
    if not path.is_file():
        raise ValidationFailed(f"{path}: no manifest; run the ingest stage first")
    manifest = read_table(path)
    missing = [column for column in MANIFEST_COLUMNS if column not in manifest.columns]
    if missing:
        raise ValidationFailed(f"{path}: manifest lacks column(s) {', '.join(missing)}")
    return manifest


def _typed(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest for GX: empty text -> null, numeric columns as numbers (garbage -> null)."""
    typed = manifest.copy()
    for column in manifest.columns:
        if column in NUMERIC_COLUMNS:
            typed[column] = pd.to_numeric(manifest[column], errors="coerce")
        else:
            text = manifest[column].astype(str).str.strip()
            typed[column] = text.where(text != "", None)
    return typed


AUDIO_FACT_COLUMNS: tuple[str, ...] = (
    "read_error", "sample_rate", "channels", "subtype", "frames", "duration_s", "finite", "nonfinite_samples",
    "content_sha256",
)


def audio_facts(path: Path) -> dict[str, Any]:
    """What one WAV in data/raw really holds: header, frames, non-finite samples, samples' hash.

    A file that cannot be read gives ``read_error`` and nulls elsewhere (GX skips nulls).
    """
    facts: dict[str, Any] = dict.fromkeys(AUDIO_FACT_COLUMNS)
    if not path.is_file():
        return facts | {"read_error": "no such file"}
    try:
        with sf.SoundFile(path) as handle:
            facts.update(sample_rate=handle.samplerate, channels=handle.channels, subtype=handle.subtype)
            if handle.subtype in ("FLOAT", "DOUBLE"):
                samples = handle.read(dtype="float32", always_2d=False)
                nonfinite = int(np.count_nonzero(~np.isfinite(samples)))
                pcm = audio.to_pcm16(samples)
            else:
                pcm, nonfinite = handle.read(dtype="int16", always_2d=False), 0
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        return dict.fromkeys(AUDIO_FACT_COLUMNS) | {"read_error": str(exc) or type(exc).__name__}
    frames = int(pcm.shape[0])
    return facts | {
        "frames": frames, "duration_s": frames / facts["sample_rate"], "finite": nonfinite == 0,
        "nonfinite_samples": nonfinite, "content_sha256": audio.pcm_sha256(pcm),
    }


def _audio_frame(typed: pd.DataFrame, labels: Sequence[Any], *, root: Path) -> pd.DataFrame:
    """One row per label (same index as the manifest): what ``root/<path>`` holds."""
    rows = []
    for label in labels:
        relative = typed.at[label, "path"]
        if pd.isna(relative):
            facts = dict.fromkeys(AUDIO_FACT_COLUMNS) | {"read_error": "the manifest gives no path"}
        else:
            facts = audio_facts(root / str(relative))
        rows.append({"track_id": typed.at[label, "track_id"], "path": "" if pd.isna(relative) else relative,
                     "manifest_content_sha256": typed.at[label, "content_sha256"], **facts})
    frame = pd.DataFrame(
        rows, index=pd.Index(list(labels), dtype="int64"),
        columns=["track_id", "path", "manifest_content_sha256", *AUDIO_FACT_COLUMNS],
    )
    for column in ("sample_rate", "channels", "frames", "duration_s", "nonfinite_samples"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["finite"] = frame["finite"].astype(object)
    return frame


def _balance_frame(passed: pd.DataFrame, genres: Sequence[str]) -> pd.DataFrame:
    """Per genre: passing tracks, the largest genre's count and their ratio (inf when none pass)."""
    counts = passed["genre"].value_counts()
    tracks = [int(counts.get(genre, 0)) for genre in genres]
    largest = max(tracks, default=0)
    ratio = [largest / count if count else math.inf for count in tracks]
    return pd.DataFrame({"genre": list(genres), "tracks": tracks, "largest": largest, "imbalance": ratio})


def _suite_parameters(params: Params) -> dict[str, Any]:
    v = params.validation
    return {
        "genres": list(params.genres),
        "min_duration_s": float(v.min_duration_s),
        "max_duration_s": float(v.max_duration_s),
        "silence_rms_dbfs": float(v.silence_rms_dbfs),
        "sample_rate_set": [int(params.audio.sample_rate)],
        "max_class_imbalance": float(v.max_class_imbalance),
    }


# ---------------------------------------------------------------- public API


def validate_manifest(manifest: pd.DataFrame, *, root: Path, params: Params) -> ValidationOutcome:
    """Run the manifest, audio and balance suites; split the manifest into passed and quarantined.

    Pure: reads the WAVs under ``root`` but writes nothing (see ``write_validation_outputs``).
    """
    missing = [column for column in MANIFEST_COLUMNS if column not in manifest.columns]
    if missing:
        raise ValidationFailed(f"manifest lacks column(s) {', '.join(missing)}")
    manifest = manifest.sort_values("track_id", kind="stable", na_position="last").reset_index(drop=True)
    typed = _typed(manifest)
    parameters = _suite_parameters(params)
    context = _new_context()

    manifest_result = _run_suite(context, MANIFEST_SUITE, typed, MANIFEST_CHECKS, parameters)
    failed = _reasons(typed, MANIFEST_CHECKS, _unexpected(manifest_result), parameters)

    still_good = [label for label in typed.index if label not in failed]
    on_disk = _audio_frame(typed, still_good, root=Path(root))
    audio_result = _run_suite(context, AUDIO_SUITE, on_disk, AUDIO_CHECKS, parameters)
    for label, reasons in _reasons(on_disk, AUDIO_CHECKS, _unexpected(audio_result), parameters).items():
        failed.setdefault(label, {}).update(reasons)

    passed = manifest.drop(index=list(failed)).reset_index(drop=True)
    balance = _balance_frame(passed, params.genres)
    balance_result = _run_suite(context, BALANCE_SUITE, balance, BALANCE_CHECKS, parameters)
    warnings = [
        reason for reasons in _reasons(balance, BALANCE_CHECKS, _unexpected(balance_result), parameters).values()
        for reason in reasons.values()
    ]

    quarantine = pd.DataFrame(
        [
            {"source_path": manifest.at[label, "source_path"], "track_id": manifest.at[label, "track_id"],
             "genre": manifest.at[label, "genre"], "reason": "; ".join(reasons.values())}
            for label, reasons in sorted(failed.items())
        ],
        columns=list(QUARANTINE_COLUMNS),
    )
    reason_counts = Counter(name for reasons in failed.values() for name in reasons)
    results = {MANIFEST_SUITE: manifest_result, AUDIO_SUITE: audio_result, BALANCE_SUITE: balance_result}
    summary = _summary(
        tracks_in=len(manifest), quarantined=len(quarantine), balance=balance, results=results,
        reason_counts=reason_counts, params=params,
    )
    return ValidationOutcome(
        passed=passed, quarantine=quarantine, summary=summary, results=results, warnings=warnings,
        reason_counts=dict(reason_counts), context=context, parameters=parameters,
    )


def _summary(
    *, tracks_in: int, quarantined: int, balance: pd.DataFrame, results: Mapping[str, ExpectationSuiteValidationResult],
    reason_counts: Mapping[str, int], params: Params,
) -> dict[str, float]:
    """Flat numbers for metrics/validation.json (``dvc metrics diff``)."""
    worst = float(balance["imbalance"].max()) if len(balance) else math.inf
    summary: dict[str, float] = {
        "tracks_in": tracks_in,
        "tracks_passed": tracks_in - quarantined,
        "tracks_quarantined": quarantined,
        "bad_fraction": round(quarantined / tracks_in, 6) if tracks_in else 0.0,
        "max_bad_fraction": params.validation.max_bad_fraction,
        "class_balance_ok": int(bool(results[BALANCE_SUITE].success)),
        "genres_without_tracks": int((balance["tracks"] == 0).sum()),
    }
    if math.isfinite(worst):
        summary["class_imbalance"] = round(worst, 4)
    for suite, result in results.items():
        key = suite.split(".")[-1]
        summary[f"{key}_expectations_evaluated"] = int(result.statistics["evaluated_expectations"])
        summary[f"{key}_expectations_successful"] = int(result.statistics["successful_expectations"])
    for check in (*MANIFEST_CHECKS, *AUDIO_CHECKS):
        summary[f"quarantined_{check.name}"] = int(reason_counts.get(check.name, 0))
    return summary


def _gate_problem(outcome: ValidationOutcome, *, max_bad_fraction: float) -> str | None:
    """Why the batch as a whole fails (None when it may go on)."""
    s = outcome.summary
    tracks_in, bad, fraction = int(s["tracks_in"]), int(s["tracks_quarantined"]), float(s["bad_fraction"])
    where = "see data/quarantine.csv and reports/validation/summary.html"
    top = ", ".join(f"{name} x{count}" for name, count in Counter(outcome.reason_counts).most_common(3))
    if tracks_in == 0:
        return f"validation failed: the manifest lists no tracks; {where}"
    if fraction > max_bad_fraction:
        return (f"validation failed: {bad} of {tracks_in} tracks quarantined, bad fraction {fraction:.3f} > "
                f"validate.max_bad_fraction {max_bad_fraction}; top reasons: {top}; {where}")
    if bad == tracks_in:
        return f"validation failed: none of {tracks_in} tracks passed; top reasons: {top}; {where}"
    return None


def check_bad_fraction(outcome: ValidationOutcome, *, max_bad_fraction: float) -> None:
    """Raise ValidationFailed when more of the batch than ``max_bad_fraction`` was quarantined."""
    if problem := _gate_problem(outcome, max_bad_fraction=max_bad_fraction):
        raise ValidationFailed(problem)


def result_document(outcome: ValidationOutcome) -> dict[str, Any]:
    """Everything validation found, as JSON: summary, warnings, quarantine and the GX results."""
    return {
        "success": _gate_problem(outcome, max_bad_fraction=outcome.summary["max_bad_fraction"]) is None,
        "summary": outcome.summary,
        "warnings": outcome.warnings,
        "quarantine": outcome.quarantine.to_dict("records"),
        "suites": {name: result.to_json_dict() for name, result in outcome.results.items()},
    }


def write_validation_outputs(outcome: ValidationOutcome, *, layout: Layout) -> None:
    """Write tracks.csv, quarantine.csv, metrics/validation.json and reports/validation/: the result
    JSON, an offline summary page (summary.html) and GX Data Docs (index.html, linking the summary;
    its scripts and styles copied in from the npm assets, :mod:`genretag.data.web_assets`, so
    that it opens offline)."""
    write_csv(layout.quarantine, outcome.quarantine)
    write_csv(layout.tracks, outcome.passed)
    write_json(layout.metrics_dir / "validation.json", outcome.summary)

    def build(folder: Path) -> None:
        document = result_document(outcome)
        write_json(folder / RESULT_FILE, document)
        write_text(folder / SUMMARY_PAGE, validation_summary_html(
            document, parameters=outcome.parameters, title="genretag data validation"))
        if outcome.context is None:
            return
        outcome.context.variables.data_docs_sites = {
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
            }
        }
        outcome.context.build_data_docs(site_names=[DOCS_SITE])
        link_summary(folder / "index.html", summary=SUMMARY_PAGE, label=SUMMARY_LINK)
        try:
            left = localize_pages(folder)
        except ConfigError as missing:  # no `make` here: the pages still work online
            log.warning("%s; the Data Docs in %s load their scripts and styles from CDNs", missing, folder)
            return
        if left:
            log.warning("Data Docs in %s still load %s", folder, ", ".join(left))

    replace_dir(layout.reports_dir / REPORT_FOLDER, build)


def run_validation(*, params: Params, layout: Layout) -> ValidationOutcome:
    """The whole stage without Prefect: read, validate, write, then enforce max_bad_fraction."""
    outcome = validate_manifest(read_manifest(layout.manifest), root=layout.root, params=params)
    write_validation_outputs(outcome, layout=layout)
    check_bad_fraction(outcome, max_bad_fraction=params.validation.max_bad_fraction)
    return outcome
