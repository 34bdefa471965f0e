"""Reading the lake by time range, on local disk and S3, through Arrow and DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tests.integration.landing_helpers import produce_ranges, s3_lake
from vigil.ingest import land_offset_ranges
from vigil.lake import Lake, floor_hour, query_events
from vigil.settings import TOPICS, Settings


def test_landing_and_time_range_reads_match_on_disk_and_s3_and_through_duckdb(stack: Settings,
                                                                   tmp_path: Path) -> None:
    _produced, ranges = produce_ranges(stack.kafka_bootstrap, seconds=120, rate=20, seed=44)
    at = datetime.now(UTC)
    local = Lake((tmp_path / "lake").as_uri())
    remote = s3_lake(stack)
    for lake in (local, remote):
        land_offset_ranges(lake, stack.kafka_bootstrap, ranges, at)
    order = [("_partition", "ascending"), ("_offset", "ascending")]
    for topic in TOPICS:  # the same landing on S3 and on local disk holds the same rows
        on_disk = local.read_all("raw", topic).sort_by(order)
        assert on_disk.num_rows > 0
        assert on_disk.equals(remote.read_all("raw", topic).sort_by(order)), topic

    stream_start = floor_hour(datetime.now(UTC)) - timedelta(hours=2)
    start, end = stream_start + timedelta(seconds=30), stream_start + timedelta(seconds=90)
    everything = local.read_all("raw", "metrics")
    times = everything.column("timestamp")
    expected = everything.filter(pc.and_(
        pc.greater_equal(times, pa.scalar(start, times.type)),
        pc.less(times, pa.scalar(end, times.type))))
    assert 0 < expected.num_rows < everything.num_rows

    got = local.read_events("metrics", start, end)
    assert got.num_rows == expected.num_rows
    assert pc.all(pc.greater_equal(got.column("timestamp").slice(1),
                                   got.column("timestamp").slice(0, got.num_rows - 1))).as_py()
    assert remote.read_events("metrics", start, end).equals(got)
    frame = local.read_events("metrics", start, end, columns=["timestamp", "host",
                                                              "cpu_percent"]).to_pandas()
    assert list(frame.columns) == ["timestamp", "host", "cpu_percent"]
    assert len(frame) == expected.num_rows

    sql = "SELECT host, count(*) AS n FROM events GROUP BY host ORDER BY host"
    by_duckdb = query_events(local, "metrics", start, end, sql)
    assert by_duckdb.equals(query_events(remote, "metrics", start, end, sql))
    counts = expected.group_by("host").aggregate([("host", "count")]).sort_by("host")
    assert by_duckdb.column("n").to_pylist() == counts.column("host_count").to_pylist()

    # A range with no landed hours reads as an empty table with the schema.
    empty = local.read_events("metrics", datetime(2001, 1, 1, tzinfo=UTC),
                              datetime(2001, 1, 2, tzinfo=UTC))
    assert empty.num_rows == 0 and "cpu_percent" in empty.column_names
