"""The review loop: low-confidence catalog tags go to people, their corrections come back as training labels.

``export_review`` writes the tags flagged ``needs_review`` (confidence below params score.review_below)
plus a random quality-control sample of the others to a CSV with an empty ``corrected_genre`` column.
``import_review`` checks each filled-in row and merges the good ones into the feedback source
(params ingest.feedback, data/feedback/labels.csv), which the ingest stage reads as extra labelled
tracks (genretag.data.ingest.feedback_sources). A blank ``corrected_genre`` is no label: a reviewer who
agrees with the tag writes the predicted genre there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from genretag.core.atomic import write_csv
from genretag.audio.decoding import file_sha256
from genretag.tagging.store import Catalog
from genretag.data.ingest import FEEDBACK_COLUMNS, read_feedback
from genretag.core.errors import GenretagError, ReviewError
from genretag.core.paths import absolute, display, stored

REVIEW_COLUMNS: tuple[str, ...] = (
    "reason", "sha256", "path", "track_id", "genre", "confidence", "model_version", "corrected_genre",
)
NEEDS_REVIEW, QC_SAMPLE = "needs_review", "qc_sample"


def latest_tags(tags: pd.DataFrame) -> pd.DataFrame:
    """catalog_tags rows (Catalog.read) -> the newest tag of each file content (highest id per sha256)."""
    return tags.sort_values("id").drop_duplicates("sha256", keep="last").reset_index(drop=True)


def review_rows(tags: pd.DataFrame, *, sample: int, seed: int) -> pd.DataFrame:
    """The review sheet of catalog_tags rows: every newest tag flagged needs_review (least confident
    first), then ``sample`` of the unflagged ones drawn at random (numpy default_rng(``seed``)) for
    quality control; columns :data:`REVIEW_COLUMNS`, ``corrected_genre`` empty."""
    newest = latest_tags(tags)
    flagged = newest[newest["needs_review"].astype(bool)].sort_values(["confidence", "sha256"])
    others = newest[~newest["needs_review"].astype(bool)].sort_values("sha256")
    picked = np.random.default_rng(seed).choice(len(others), size=min(sample, len(others)), replace=False)
    qc = others.iloc[np.sort(picked)]
    sheet = pd.concat([flagged.assign(reason=NEEDS_REVIEW), qc.assign(reason=QC_SAMPLE)], ignore_index=True)
    return sheet.assign(corrected_genre="", confidence=sheet["confidence"].round(4))[list(REVIEW_COLUMNS)]


def export_review(database_url: str, *, out: str | Path, sample: int = 0, seed: int = 0) -> pd.DataFrame:
    """Write :func:`review_rows` of the catalog at ``database_url`` to ``out`` (CSV, atomically); return them.

    Raises CatalogError when the database cannot be read, ReviewError when ``out`` cannot be written.
    """
    with Catalog(database_url) as catalog:
        sheet = review_rows(catalog.read("catalog_tags"), sample=sample, seed=seed)
    try:
        write_csv(out, sheet)
    except OSError as exc:
        raise ReviewError(f"cannot write {display(out)}: {exc.strerror or exc}") from exc
    return sheet


@dataclass
class ImportOutcome:
    """What one review import did; ``problems`` holds one line per rejected row."""

    added: int = 0  # new labels in the feedback source
    relabelled: int = 0  # files whose earlier label this review replaced
    unchanged: int = 0  # the same label was already there (a repeated import)
    blank: int = 0  # rows without a corrected_genre: no label
    problems: list[str] = field(default_factory=list)


def _read_review(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise ReviewError(f"{display(path)}: no such review file") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise ReviewError(f"{display(path)}: not a readable review CSV ({exc})") from exc
    missing = [c for c in ("sha256", "path", "corrected_genre") if c not in frame.columns]
    if missing:
        raise ReviewError(f"{display(path)}: the review CSV lacks column(s) {', '.join(missing)}")
    return frame


def reviewed_file(row: Mapping[str, str], *, catalog: pd.DataFrame, sha: str) -> Path:
    """The file a review row is about: the catalog's (by its exact bytes, genretag.paths.stored) when
    the row's ``path`` is blank or is the catalog's display text, else the path the reviewer wrote."""
    written, known = row["path"].strip(), catalog.at[sha, "path"]
    if not written or written == known:
        return absolute(stored(known, catalog.at[sha, "path_bytes"]))
    return absolute(written)


def _row_problem(row: Mapping[str, str], *, genre: str, sha: str, genres: Sequence[str], catalog: pd.DataFrame,
                 aliases: Mapping[str, str]) -> str:
    """Why a filled-in review row (its stripped ``genre`` and lower-case ``sha``) cannot become a label ("" when it can);
    ``aliases``: catalog_aliases (a file whose tags write-tags wrote is still the same track)."""
    if genre not in genres:
        return f"corrected_genre {genre!r} is not one of params.genres ({', '.join(genres)})"
    if not sha:
        return "no sha256"
    if sha not in catalog.index:
        return f"sha256 {sha[:12]} is not in the catalog"
    path = reviewed_file(row, catalog=catalog, sha=sha)
    try:
        found = file_sha256(path)
    except (OSError, GenretagError) as exc:
        return f"{display(path)}: cannot read ({getattr(exc, 'strerror', None) or exc})"
    if aliases.get(found, found) != sha:
        return f"{display(path)}: the file changed since it was tagged (sha256 {found[:12]}, not {sha[:12]})"
    return ""


def import_review(
    review_file: str | Path,
    *,
    database_url: str,
    genres: Sequence[str],
    feedback: str | Path,
    reviewer: str = "",
) -> ImportOutcome:
    """Merge the corrected rows of ``review_file`` into the ``feedback`` CSV (atomically).

    Each row with a ``corrected_genre`` must name one of ``genres``, a sha256 the catalog holds, and
    a file (``path``, else the catalog's) that still hashes to it; genres match without regard to case
    or surrounding spaces. A row that does not, or whose sha256 the sheet labels two ways (every row of
    that sha256 is then refused), gets one line in ``ImportOutcome.problems`` and the good rows still go in. A label is keyed by sha256: the same
    label again changes nothing (importing twice adds no row), another label replaces it (the newest
    review wins). Provenance per label: the review file and its SHA-256, ``reviewer``, the model
    version whose tag was reviewed, the import time (UTC, ISO 8601).
    Raises ReviewError (the review or feedback file as a whole) or CatalogError (the database).
    """
    review_path = Path(review_file)
    sheet = _read_review(review_path)
    review_sha = file_sha256(review_path)
    with Catalog(database_url) as catalog:
        tags = latest_tags(catalog.read("catalog_tags")).set_index("sha256")
        aliases = dict(catalog.read("catalog_aliases")[["alias_sha256", "sha256"]].itertuples(index=False, name=None))
    labels = read_feedback(feedback).set_index("sha256", drop=False)
    outcome = ImportOutcome()
    imported_at = datetime.now(UTC).isoformat(timespec="seconds")
    canonical = {genre.lower(): genre for genre in genres}  # "Rock " is rock
    rows = [(number, row, row["sha256"].strip().lower(), canonical.get(row["corrected_genre"].strip().lower(), row["corrected_genre"].strip()))
            for number, row in enumerate(sheet.to_dict("records"), start=2)]  # line 1 is the header
    labels_of: dict[str, set[str]] = {}
    for _, _, sha, genre in rows:
        if genre:
            labels_of.setdefault(sha, set()).add(genre)
    for number, row, sha, genre in rows:
        if not genre:
            outcome.blank += 1
            continue
        problem = _row_problem(row, genre=genre, sha=sha, genres=genres, catalog=tags, aliases=aliases)
        if not problem and len(labels_of[sha]) > 1:  # the sheet disagrees with itself: no row of that sha wins
            problem = f"sha256 {sha[:12]} has conflicting labels in this sheet ({', '.join(sorted(labels_of[sha]))})"
        if problem:
            outcome.problems.append(f"{display(review_path)} line {number}: {problem}")
            continue
        if sha in labels.index and labels.at[sha, "genre"] == genre:
            outcome.unchanged += 1
            continue
        if sha in labels.index:
            outcome.relabelled += 1
        else:
            outcome.added += 1
        version = row.get("model_version", "").strip() or str(tags.at[sha, "model_version"])
        labels.loc[sha] = {
            "sha256": sha, "path": display(reviewed_file(row, catalog=tags, sha=sha)), "genre": genre,
            "review_file": review_path.name, "review_sha256": review_sha, "reviewer": reviewer,
            "model_version": version, "imported_at": imported_at,
        }
    if outcome.added or outcome.relabelled:
        try:
            write_csv(feedback, labels.sort_index().reset_index(drop=True)[list(FEEDBACK_COLUMNS)])
        except OSError as exc:
            raise ReviewError(f"cannot write {display(feedback)}: {exc.strerror or exc}") from exc
    return outcome
