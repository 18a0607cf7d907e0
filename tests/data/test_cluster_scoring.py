"""Scoring on the Dask workers (genretag.tagging.cluster) into PostgreSQL: each worker with its own session,
a worker SIGKILLed in the middle of a chunk, and every track with exactly one row."""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from genretag.onnx.session import open_model
from genretag.tagging.run import run_steps, tag_catalog
from genretag.tagging.run_state import TaggingRun
from genretag.tagging.store import Catalog
from tests.conftest import tone, write_audio
from tests.tagging_support import make_onnx_model, sessions_here

pytestmark = pytest.mark.postgres


def kill_this_worker_once(path: Path, *, marker: Path, victim: str) -> None:
    """before_decode on a worker: the first time ``victim`` is about to be read, anywhere, SIGKILL this process."""
    if path.name != victim:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    marker.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _database(server: str, name: str) -> str:
    admin = sa.create_engine(server.format(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.format(database=name)


def test_a_worker_killed_mid_chunk_loses_no_row_and_writes_none_twice(postgres_server: str, tmp_path: Path) -> None:
    from distributed import LocalCluster

    from genretag.tagging.cluster import cluster_scorer

    folder = tmp_path / "music"
    names = [f"t{i:02d}.wav" for i in range(12)]
    for i, name in enumerate(names):
        write_audio(folder / name, tone(4.0 + i % 3, frequency=150.0 + 70 * i, seed=i))
    model = open_model(make_onnx_model(tmp_path / "m.onnx", version="1"), prefer_gpu=False)
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    tag_catalog(folder, model=model, database_url=local_url, max_windows=4, workers=1)
    url = _database(postgres_server, "cluster_kill")
    marker = tmp_path / "killed"
    # t05 is the 2nd file of the 2nd chunk (3 per chunk): its worker has scored t03, t04 when it dies
    drill = functools.partial(kill_this_worker_once, marker=marker, victim="t05.wav")

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        pids_before = set(cluster.get_client().run(os.getpid).values())
        scorer = cluster_scorer(model, address=cluster.scheduler_address, chunk=3, max_windows=4, batch_size=8,
                                silence_rms_dbfs=-60.0, session_threads=1, before_decode=drill)
        summary = run_steps(TaggingRun(folder, model=model, database_url=url, scorer=scorer, commit_every=2))
        client = cluster.get_client()
        pids_after = set(client.run(os.getpid).values())
        sessions = client.run(sessions_here)

    killed = int(marker.read_text())
    assert killed in pids_before and killed not in pids_after  # the nanny restarted the killed worker
    assert all(len(keys) == 1 for keys in sessions.values())  # the restarted worker opened its session again
    assert (summary.tagged, summary.failed) == (len(names), 0)
    with Catalog(url) as catalog, Catalog(local_url) as local:
        rows, expected = catalog.read(), local.read()
        assert catalog.read("catalog_errors").empty
    assert sorted(rows["track_id"]) == sorted(n.removesuffix(".wav") for n in names)  # every track, exactly once
    assert rows["track_id"].is_unique and rows["sha256"].is_unique
    merged = rows.merge(expected, on="track_id", suffixes=("", "_local"))
    assert (merged["genre"] == merged["genre_local"]).all()
    assert (merged["confidence"] - merged["confidence_local"]).abs().max() < 1e-5
