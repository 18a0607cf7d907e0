"""Static, offline-readable report pages (no scripts, no CDN, no external styles).

Great Expectations' Data Docs build their index tables with JavaScript from CDNs, so offline the
index lists nothing, and suite pages show raw ``{'$PARAMETER': name}`` placeholders. The page
here is written beside them from the same validation result and reads in any browser, offline.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

PARAMETER_KEY = "$PARAMETER"  # how GX 1.x marks a value bound at run time (expectation_parameters)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #17692b; font-weight: 600; }
.fail { color: #a4161a; font-weight: 600; }
.warn { color: #8a5a00; font-weight: 600; }
"""


def resolve_parameters(value: Any, parameters: Mapping[str, Any]) -> Any:
    """Replace GX run-time placeholders ``{"$PARAMETER": name}`` (at any depth) by ``parameters[name]``.

    A name missing from ``parameters`` is left as ``<name>`` text. Lists and dicts are walked;
    anything else comes back unchanged.
    """
    if isinstance(value, Mapping):
        if set(value) == {PARAMETER_KEY}:
            name = value[PARAMETER_KEY]
            return parameters.get(name, f"<{name}>")
        return {key: resolve_parameters(item, parameters) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_parameters(item, parameters) for item in value]
    return value


def _cell(value: Any, *, numeric: bool = False) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kwargs_text(kwargs: Mapping[str, Any]) -> str:
    shown = {key: value for key, value in kwargs.items() if key not in ("batch_id", "result_format")}
    return ", ".join(f"{key}={value!r}" for key, value in shown.items())


def validation_summary_html(document: Mapping[str, Any], *, parameters: Mapping[str, Any], title: str) -> str:
    """One self-contained HTML page from a validation result document.

    ``document``: ``genretag.validation.result_document`` (keys ``success``, ``summary``,
    ``warnings``, ``quarantine`` (records with source_path, track_id, genre, reason) and ``suites``
    (suite name -> GX ``ExpectationSuiteValidationResult.to_json_dict()``)). ``parameters``: the
    suites' run-time parameters, shown in place of their placeholders. Returns UTF-8 text with
    inline CSS only.
    """
    verdict = "pass" if document.get("success") else "fail"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p>Batch verdict: <span class="{verdict}">{verdict.upper()}</span>. '
        "Great Expectations' own Data Docs: <a href=\"index.html\">index.html</a> (needs network for its tables).</p>",
        "<h2>Summary</h2>",
        _table(["measure", "value"], [[_cell(key), _cell(value, numeric=True)] for key, value in document.get("summary", {}).items()]),
    ]
    warnings = document.get("warnings") or []
    parts.append("<h2>Warnings</h2>")
    parts.append("<ul>" + "".join(f'<li class="warn">{html.escape(w)}</li>' for w in warnings) + "</ul>" if warnings else "<p>None.</p>")
    quarantine = document.get("quarantine") or []
    parts.append(f"<h2>Quarantined files ({len(quarantine)})</h2>")
    parts.append(
        _table(["track_id", "genre", "source_path", "reason"],
               [[_cell(row.get(key, "")) for key in ("track_id", "genre", "source_path", "reason")] for row in quarantine])
        if quarantine else "<p>None.</p>"
    )
    for name, suite in (document.get("suites") or {}).items():
        statistics = suite.get("statistics", {})
        ok = statistics.get("successful_expectations", 0)
        total = statistics.get("evaluated_expectations", 0)
        parts.append(f"<h2>Suite {html.escape(name)}: {ok} of {total} expectations met</h2>")
        rows = []
        for result in suite.get("results", []):
            config = result.get("expectation_config", {})
            outcome = result.get("result", {})
            passed = bool(result.get("success"))
            rows.append([
                _cell((config.get("meta") or {}).get("check", "")),
                _cell(config.get("type", "")),
                _cell(_kwargs_text(resolve_parameters(config.get("kwargs", {}), parameters))),
                f'<td class="{"pass" if passed else "fail"}">{"met" if passed else "not met"}</td>',
                _cell(outcome.get("element_count", ""), numeric=True),
                _cell(outcome.get("unexpected_count", ""), numeric=True),
            ])
        parts.append(_table(["check", "expectation", "arguments", "outcome", "rows", "unexpected"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)
