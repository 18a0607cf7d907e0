"""The catalog database's tables (SQLAlchemy 2 Core metadata), the one place the schema is declared.

Every change is additive: a column added later is nullable (rows written before hold NULL) and
:mod:`genretag.tagging.database` adds missing columns to an existing database when the catalog opens it.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

catalog_tags = sa.Table(
    "catalog_tags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("track_id", sa.String(512), nullable=False),
    sa.Column("path", sa.Text, nullable=False),  # absolute; display form (genretag.paths.display)
    sa.Column("path_bytes", sa.LargeBinary, nullable=True),  # the exact bytes when the name is not UTF-8
    sa.Column("sha256", sa.String(80), nullable=False),
    sa.Column("genre", sa.String(128), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("top3", sa.Text, nullable=False),  # JSON [{"genre": ..., "probability": ...}] x 3
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON {label: probability}
    sa.Column("windows_scored", sa.Integer, nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    # Added with contract v2; the server defaults describe rows written before (v1 models, no window skipped).
    sa.Column("contract_version", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("windows_silent", sa.Integer, nullable=False, server_default=sa.text("0")),  # skipped as silent
    # Input audio statistics (genretag.drift.InputStats); empty for rows written before them.
    sa.Column("source_sample_rate", sa.Integer, nullable=True),  # Hz of the file before resampling
    sa.Column("duration_s", sa.Float, nullable=True),
    sa.Column("loudness_dbfs", sa.Float, nullable=True),  # RMS of the scored windows
    # Added with the review loop (genretag.review): old rows are not flagged and have no timeline.
    sa.Column("needs_review", sa.Boolean, nullable=False, server_default=sa.text("false")),  # confidence < score.review_below
    sa.Column("window_probabilities", sa.Text, nullable=True),  # JSON, see window_timeline
    # Added with similarity search (issue 20.4): the track embedding, the mean of the scored windows' embeddings,
    # as little-endian bytes of embedding_dtype (genretag.tagging.rows.encode_embedding); empty for older rows.
    sa.Column("embedding", sa.LargeBinary, nullable=True),
    sa.Column("embedding_dtype", sa.String(16), nullable=True),  # "float16" | "float32"
    # Added with exports that name their run: catalog_runs.run_id of the run that wrote the row (old rows: empty).
    sa.Column("run_id", sa.String(64), nullable=True),
    # Added with early exit (genretag.tagging.early_exit): the non-silent windows the track offered (up to
    # score.max_windows), of which windows_scored were used; empty for rows written before.
    sa.Column("windows_available", sa.Integer, nullable=True),
    # Added with the out-of-taxonomy score (issue 21): the track's score (genretag.onnx.contract.OpenSet.track_score);
    # NULL for a model without one (and rows written before). Past the model's threshold the genre is "unknown" (rows.is_unknown).
    sa.Column("unknown_score", sa.Float, nullable=True),
    sa.UniqueConstraint("sha256", "model_version", name="uq_catalog_tags_sha256_model_version"),
)

catalog_errors = sa.Table(
    "catalog_errors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("track_id", sa.String(512), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("path_bytes", sa.LargeBinary, nullable=True),
    sa.Column("sha256", sa.String(80), nullable=False),  # "unreadable:<hash of the path>" when unread
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("sha256", "model_version", name="uq_catalog_errors_sha256_model_version"),
)

catalog_runs = sa.Table(  # one row per tagging run: what it did, with which model, where, how fast
    "catalog_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("listed", sa.Integer, nullable=False),
    sa.Column("tagged", sa.Integer, nullable=False),
    sa.Column("skipped", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("windows_scored", sa.Integer, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("genre_counts", sa.Text, nullable=False),  # JSON {genre: tracks tagged with it in this run}
    sa.Column("genre_psi", sa.Float, nullable=True),  # PSI of genre_counts against the training tracks' genres (genretag.drift)
    sa.Column("embedding_shift", sa.Float, nullable=True),  # genretag.drift.embedding_shift of the run's mean embedding
    sa.Column("loudness_dbfs", sa.Float, nullable=True),  # mean level of the tagged tracks' scored windows
    sa.Column("drift", sa.Text, nullable=True),  # JSON: every drift measure (genretag.drift.run_drift)
    sa.Column("drift_warnings", sa.Text, nullable=True),  # JSON list of the warnings the run raised ([] none)
    sa.Column("run", sa.String(128), nullable=False),  # "prefect:<flow run id>" or "cli" (no Prefect)
    sa.Column("run_id", sa.String(64), nullable=True),  # the run's own id, on each catalog_tags row it wrote (old runs: empty)
)

# Content identity across tag writing (genretag.tagging.tag_writer): writing tags into a file changes its
# bytes, hence its SHA-256, never its audio. The new hash is recorded as an alias of the content hash the
# catalog knows the track by, and every lookup by hash resolves aliases first (Catalog.canonical).
catalog_aliases = sa.Table(
    "catalog_aliases",
    metadata,
    sa.Column("alias_sha256", sa.String(80), primary_key=True),  # the file's SHA-256 after tags were written
    sa.Column("sha256", sa.String(80), nullable=False, index=True),  # the content hash its catalog rows carry
    sa.Column("path", sa.Text, nullable=False),  # display form of the file written
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

catalog_fingerprints = sa.Table(  # one row per path last seen: its stat fingerprint when its bytes were hashed
    "catalog_fingerprints",
    metadata,
    sa.Column("path", sa.Text, primary_key=True),  # absolute; display form (genretag.paths.display)
    sa.Column("device", sa.BigInteger, nullable=False),  # st_dev, st_ino: unsigned 64-bit, stored as signed (database.signed)
    sa.Column("inode", sa.BigInteger, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),  # bytes
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),  # st_mtime_ns
    sa.Column("sha256", sa.String(80), nullable=False),
    sa.Column("hashed_at", sa.DateTime(timezone=True), nullable=False),  # when the fingerprint was last hashed or matched
    sa.Index("ix_catalog_fingerprints_device_inode", "device", "inode"),  # a moved file is found by its inode
)

catalog_skips = sa.Table(  # one row per file or folder a run skipped, named with the reason (issue 23)
    "catalog_skips",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # catalog_runs.run_id of the run (written chunk by chunk, before the run's row: a killed run's skips have none)
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("path", sa.Text, nullable=False, index=True),  # absolute; display form (genretag.core.paths.display)
    sa.Column("path_bytes", sa.LargeBinary, nullable=True),  # the exact bytes when the name is not UTF-8
    sa.Column("reason", sa.Text, nullable=False),  # "not audio: ...", "macOS metadata ...", "cannot list folder: ...", ...
)

TABLES: dict[str, sa.Table] = {t.name: t for t in (catalog_tags, catalog_errors, catalog_runs, catalog_aliases, catalog_skips)}
