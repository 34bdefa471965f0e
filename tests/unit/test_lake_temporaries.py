"""Writes go to a hidden temporary and are renamed into place; a write sweeps its directory
of temporaries left by dead writers, never the one another run in flight is writing."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vigil.lake import TEMPORARY_GRACE, Lake

DIRECTORY = "raw/logs/date=2026-11-25/hour=05"


def _table(n: int) -> pa.Table:
    return pa.table({"event_id": [f"e{i}" for i in range(n)]})


def test_a_write_removes_a_dead_writers_temporary_and_keeps_a_live_one(tmp_path: Path) -> None:
    lake = Lake(tmp_path.as_uri())
    folder = tmp_path / DIRECTORY
    folder.mkdir(parents=True)
    dead = folder / ".logs+0+1.parquet.0a1b2c3d.tmp"
    live = folder / ".logs+1+1.parquet.4e5f6a7b.tmp"
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    aged = time.time() - TEMPORARY_GRACE.total_seconds() - 60
    os.utime(dead, (aged, aged))

    lake.write(f"{DIRECTORY}/logs+2+1.parquet", _table(3))

    assert not dead.exists(), "a temporary older than any write is a dead writer's: removed"
    assert live.exists(), "a young temporary may be another run's write in progress: kept"
    assert pq.read_table(folder / "logs+2+1.parquet").num_rows == 3


def test_writers_in_flight_in_one_directory_never_remove_each_others_temporaries(
        tmp_path: Path) -> None:
    """Ingest runs in flight land into the same hour directory at once."""
    lake = Lake(tmp_path.as_uri())
    writes = 150

    def land(writer: int) -> None:
        for i in range(writes):
            lake.write(f"{DIRECTORY}/logs+{writer}+{i}.parquet", _table(2_000))

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(land, writer) for writer in (0, 1)]:
            done.result()  # a removed temporary fails its writer's rename here

    landed = sorted((tmp_path / DIRECTORY).glob("logs+*.parquet"))
    assert len(landed) == 2 * writes
    assert not list((tmp_path / DIRECTORY).glob(".*.tmp"))
