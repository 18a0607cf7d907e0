"""Shadow scoring: a challenger re-tags a sample of the catalog before it may replace the champion.

The sample is stratified by the champion's genre (catalog_tags rows of the champion's model
version), so that every genre the catalog holds is seen, in proportion to its tracks (largest
remainder apportionment; Hamilton's method, Balinski & Young 2001, *Fair Representation*, ch. 2),
each genre at least once while the sample allows. The challenger scores those files through the
same path as tagging (:func:`genretag.tagging.scoring.score_files`); the report compares its genre and
confidence with the champion's stored ones: agreement overall and per champion genre, the
old-to-new confusion (counts), and the confidence shift (challenger minus champion confidence of
each track's top genre: mean and median). Files no longer on disk and files the challenger cannot
score are counted, never dropped.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from genretag.core.config import Params
from genretag.core.errors import RegistryError
from genretag.core.paths import display


@dataclass(frozen=True)
class ChampionTag:
    """One catalog_tags row of the champion: the file and what the champion said of it."""

    track_id: str
    path: str
    sha256: str
    genre: str
    confidence: float


def allocate(counts: Mapping[str, int], *, n: int) -> dict[str, int]:
    """Tracks to draw per genre for a sample of ``n`` from ``counts`` (genre -> tracks available).

    Each genre first gets one track (while ``n`` covers every genre), the rest is shared in
    proportion to the genres' sizes by largest remainder (ties: larger genre, then name); no genre
    gets more than it holds. The result sums to min(n, total).
    """
    available = {genre: int(count) for genre, count in counts.items() if count > 0}
    n = min(max(int(n), 0), sum(available.values()))
    genres = sorted(available, key=lambda g: (-available[g], g))
    chosen = dict.fromkeys(genres, 0)
    if n >= len(genres):
        chosen = dict.fromkeys(genres, 1)
    while sum(chosen.values()) < n:
        left = n - sum(chosen.values())
        room = {g: available[g] - chosen[g] for g in genres if available[g] > chosen[g]}
        total = sum(room.values())
        quotas = {g: left * room[g] / total for g in room}
        floors = {g: min(int(q), room[g]) for g, q in quotas.items()}
        extra = left - sum(floors.values())
        order = sorted(room, key=lambda g: (-(quotas[g] - int(quotas[g])), -available[g], g))
        for g in order:
            if extra <= 0:
                break
            if floors[g] < room[g]:
                floors[g] += 1
                extra -= 1
        for g, k in floors.items():
            chosen[g] += k
    return {g: k for g, k in chosen.items() if k}


def stratified_sample(tags: Sequence[ChampionTag], *, n: int, seed: int) -> list[ChampionTag]:
    """``n`` rows of ``tags`` (all when fewer), stratified by champion genre (:func:`allocate`),
    drawn without replacement with numpy's seeded generator; ordered by genre, then sha256."""
    by_genre: dict[str, list[ChampionTag]] = {}
    for tag in sorted(tags, key=lambda t: (t.genre, t.sha256)):
        by_genre.setdefault(tag.genre, []).append(tag)
    rng = np.random.default_rng(seed)
    sample: list[ChampionTag] = []
    for genre, k in sorted(allocate({g: len(rows) for g, rows in by_genre.items()}, n=n).items()):
        picked = sorted(rng.choice(len(by_genre[genre]), size=k, replace=False))
        sample += [by_genre[genre][i] for i in picked]
    return sample


@dataclass
class ShadowReport:
    """What the challenger said of the champion's tracks (JSON-ready through :meth:`to_dict`)."""

    registry_version: str
    challenger: str  # model_version of the challenger
    champion: str  # model_version whose catalog tags are compared
    sample_requested: int
    seed: int
    catalog_tracks: int  # champion rows to sample from
    sampled: int = 0
    scored: int = 0
    missing: int = 0  # files no longer on disk
    errors: int = 0  # files the challenger could not score
    agreement: float | None = None  # fraction of scored tracks with the champion's genre (None: none scored)
    agreement_by_genre: dict[str, dict[str, Any]] = field(default_factory=dict)  # champion genre -> tracks, agree, fraction
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # champion genre -> challenger genre -> tracks
    confidence_shift_mean: float | None = None
    confidence_shift_median: float | None = None
    failures: list[dict[str, str]] = field(default_factory=list)  # path, reason (missing or error)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready fields (models/shadow/v<N>.json, genretag.registry.store_shadow_report)."""
        return asdict(self)

    def to_markdown(self, *, max_failures: int = 20) -> str:
        """The report as markdown (models/shadow/v<N>.md, printed by ``genretag registry promote``): the
        counts, agreement overall and per champion genre, the old-to-new confusion, and the first
        ``max_failures`` files not scored (the rest are counted; the JSON lists them all)."""
        def fraction(value: float | None) -> str:
            return "n/a" if value is None else f"{100 * value:.1f} %"

        def signed(value: float | None) -> str:
            return "n/a" if value is None else f"{value:+.4f}"

        new_genres = sorted({g for row in self.confusion.values() for g in row})
        lines = [
            f"# Shadow run: registry v{self.registry_version} ({self.challenger}) against the champion's tags ({self.champion})",
            "",
            f"{self.created_at}; sample of {self.sample_requested} requested from {self.catalog_tracks} champion-tagged tracks "
            f"(seed {self.seed}), stratified by the champion's genre: {self.sampled} sampled, {self.scored} scored, "
            f"{self.missing} missing on disk, {self.errors} errors.",
            "",
            f"Agreement with the champion: **{fraction(self.agreement)}**. Confidence shift (challenger - champion, top genre): "
            f"mean {signed(self.confidence_shift_mean)}, median {signed(self.confidence_shift_median)}.",
            "",
            "| champion genre | tracks | agree | agreement |",
            "| --- | ---: | ---: | ---: |",
            *(f"| {g} | {row['tracks']} | {row['agree']} | {fraction(row['agreement'])} |" for g, row in self.agreement_by_genre.items()),
            "",
            "## Old-to-new confusion (rows: champion, columns: challenger)",
            "",
            "| champion \\ challenger | " + " | ".join(new_genres) + " |",
            "| --- |" + " ---: |" * len(new_genres),
            *(f"| {old} | " + " | ".join(str(row.get(new, 0)) for new in new_genres) + " |" for old, row in self.confusion.items()),
        ]
        if self.failures:
            lines += ["", "## Not scored", "", "| file | reason |", "| --- | --- |"]
            lines += [f"| `{f['path']}` | {f['reason'].replace('|', '/')} |" for f in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                lines.append(f"| ... | {len(self.failures) - max_failures} more in the JSON report |")
        return "\n".join(lines) + "\n"


def shadow_run(
    tags: Sequence[ChampionTag],
    *,
    model: Any,
    registry_version: str,
    champion: str,
    sample: int,
    seed: int,
    max_windows: int = 20,
    batch_size: int = 256,
    workers: int = 0,
    silence_rms_dbfs: float = -60.0,
) -> ShadowReport:
    """Score a stratified ``sample`` of the champion's ``tags`` with ``model`` (an open
    genretag.onnx.session.ScoringModel, the challenger) and compare (see the module docstring).

    ``champion`` is the champion's model_version the tags come from. Files missing on disk are
    not decoded; both they and unscorable files are counted in the report with their reason.
    """
    from genretag.tagging.scoring import score_files

    chosen = stratified_sample(tags, n=sample, seed=seed)
    report = ShadowReport(registry_version=str(registry_version), challenger=model.model_version, champion=champion,
                          sample_requested=sample, seed=seed, catalog_tracks=len(tags), sampled=len(chosen))
    present = []
    for tag in chosen:
        if Path(tag.path).is_file():
            present.append(tag)
        else:
            report.missing += 1
            report.failures.append({"path": display(tag.path), "reason": "missing: no such file"})
    pairs: list[tuple[ChampionTag, str, float]] = []
    for result in score_files(model, ((tag, tag.path) for tag in present), max_windows=max_windows, batch_size=batch_size,
                              workers=workers, silence_rms_dbfs=silence_rms_dbfs, parallel=len(present) > 4):
        if result.score is None:
            report.errors += 1
            report.failures.append({"path": display(result.path), "reason": result.error})
        else:
            pairs.append((result.key, result.score.label, result.score.confidence))
    report.scored = len(pairs)
    compare(report, pairs)
    return report


def compare(report: ShadowReport, pairs: Sequence[tuple[ChampionTag, str, float]]) -> None:
    """Fill ``report``'s agreement, confusion and confidence shift from (champion tag, challenger genre,
    challenger confidence) pairs; None / empty when there are none."""
    if not pairs:
        return
    agree = Counter(old.genre for old, new, _ in pairs if old.genre == new)
    tracks = Counter(old.genre for old, _, _ in pairs)
    report.agreement = round(sum(agree.values()) / len(pairs), 6)
    report.agreement_by_genre = {g: {"tracks": tracks[g], "agree": agree[g], "agreement": round(agree[g] / tracks[g], 6)}
                                 for g in sorted(tracks)}
    confusion: dict[str, Counter[str]] = {}
    for old, new, _ in pairs:
        confusion.setdefault(old.genre, Counter())[new] += 1
    report.confusion = {old: dict(sorted(row.items())) for old, row in sorted(confusion.items())}
    shifts = [confidence - old.confidence for old, _, confidence in pairs]
    report.confidence_shift_mean = round(statistics.fmean(shifts), 6)
    report.confidence_shift_median = round(statistics.median(shifts), 6)


def shadow_version(params: Params, *, root: Path, version: str, database_url: str, sample: int, seed: int,
                   max_windows: int | None) -> tuple[ShadowReport, Path]:
    """Shadow registry version ``version`` (a number or an alias) against the champion on the catalog at
    ``database_url``: read the champion's catalog_tags, score a stratified ``sample`` with the version
    (:func:`shadow_run`; ``max_windows`` None: ``score.max_windows``), store the report with the version
    (:func:`genretag.registry.shadow_reports.store_shadow_report`). Returns (report, its JSON path).

    Raises RegistryError when there is no champion, ``version`` is the champion, or the catalog holds no
    tag of the champion; CatalogError when the catalog cannot be read.
    """
    import os

    from genretag.core.paths import stored
    from genretag.onnx.session import open_model
    from genretag.registry.client import CHAMPION
    from genretag.registry.fetch import resolve_project_model
    from genretag.registry.listing import list_versions, version_number
    from genretag.registry.shadow_reports import store_shadow_report
    from genretag.tagging.store import Catalog

    rows = list_versions(params, root=root)
    number = version_number(params, root=root, ref=version, versions=rows)
    champion = next((row for row in rows if CHAMPION in row.aliases), None)
    if champion is None:
        raise RegistryError(f"registered model {params.registry.model_name!r} has no champion whose catalog tags to compare with")
    if champion.version == number:
        raise RegistryError(f"v{number} is the champion: shadow a challenger against it")
    with Catalog(database_url) as catalog:
        frame = catalog.read("catalog_tags", model_version=champion.model_version)
    tags = [ChampionTag(r.track_id, os.fspath(stored(r.path, r.path_bytes)), r.sha256, r.genre, float(r.confidence))
            for r in frame.itertuples(index=False)]
    if not tags:
        raise RegistryError(f"the catalog holds no tags of the champion v{champion.version} ({champion.model_version}): "
                            "run `genretag tag-catalog` with the champion first")
    model = open_model(resolve_project_model(number, params=params, root=root))
    score = params.score
    report = shadow_run(tags, model=model, registry_version=number, champion=champion.model_version, sample=sample, seed=seed,
                        max_windows=score.max_windows if max_windows is None else max_windows, batch_size=score.batch_size,
                        workers=score.workers, silence_rms_dbfs=params.validation.silence_rms_dbfs)
    path = store_shadow_report(params, root=root, version=number, report=report.to_dict(), markdown=report.to_markdown())
    return report, path
