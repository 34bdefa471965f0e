"""A raw file's name says which event times it holds: reads of a span open only the files
that may hold it; files named before names carried times are always read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from vigil.lake import (
    Lake,
    RawFiles,
    epoch_us,
    file_name,
    hour_dir,
    may_hold,
    raw_schema,
    scan_events,
)

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def _metrics(first_offset: int, seconds: list[float]) -> pa.Table:
    n = len(seconds)
    stamps = [T0 + timedelta(seconds=s) for s in seconds]
    return pa.table({
        "event_id": [f"e{first_offset + i}" for i in range(n)], "timestamp": stamps,
        "service": ["api"] * n, "host": ["h1"] * n, "cpu_percent": [50.0] * n,
        "memory_percent": [None] * n, "latency_ms": [None] * n,
        "requests_per_sec": [None] * n, "error_rate": [None] * n, "region": [None] * n,
        "_partition": [0] * n, "_offset": list(range(first_offset, first_offset + n)),
        "_kafka_timestamp": stamps, "_ingested_at": stamps}, schema=raw_schema("metrics"))


def test_a_name_says_its_event_times_and_bounds_are_inclusive() -> None:
    name = file_name("logs", 2, 901935, (epoch_us(T0), epoch_us(T0 + timedelta(seconds=5))))
    assert name == f"logs+2+901935+t{epoch_us(T0)}_{epoch_us(T0) + 5_000_000}.parquet"
    assert may_hold(name, T0 + timedelta(seconds=5), T0 + timedelta(seconds=9))  # last event
    assert not may_hold(name, T0 + timedelta(seconds=5.000001), T0 + timedelta(seconds=9))
    assert not may_hold(name, T0 - timedelta(seconds=9), T0)  # end is exclusive
    assert may_hold(name, T0 - timedelta(seconds=9), T0 + timedelta(microseconds=1))
    assert may_hold(file_name("logs", 2, 901935), T0 - timedelta(days=9), T0)  # no times


def test_a_read_of_a_span_opens_only_files_that_may_hold_it(tmp_path: Path) -> None:
    lake = Lake(tmp_path.as_uri())
    directory = hour_dir("raw", "metrics", T0)
    for k in range(6):  # a minute each, 10:00-10:06
        table = _metrics(100 * k, [60.0 * k + s for s in range(0, 60, 5)])
        span = (epoch_us(T0 + timedelta(minutes=k)),
                epoch_us(T0 + timedelta(minutes=k, seconds=55)))
        lake.write(f"{directory}/{file_name('metrics', 0, 100 * k, span)}", table)
    legacy = _metrics(1000, [125.0])  # landed before names carried times: 10:02:05
    lake.write(f"{directory}/{file_name('metrics', 0, 1000)}", legacy)

    start, end = T0 + timedelta(minutes=2, seconds=30), T0 + timedelta(minutes=3, seconds=10)
    dataset = lake.raw_dataset("metrics", start, end)
    assert sorted(Path(f).name.split("+t")[0] for f in dataset.files) == [
        "metrics+0+1000.parquet", "metrics+0+200", "metrics+0+300"]
    read = scan_events(dataset, start, end, ["timestamp", "_offset"])
    assert read.column("_offset").to_pylist() == [*range(206, 212), *range(300, 302)]
    # A whole-hour read still sees every row, the file without times included.
    everything = lake.read_events("metrics", T0, T0 + timedelta(hours=1))
    assert everything.num_rows == 6 * 12 + 1


def test_scans_of_parts_of_a_span_open_only_the_files_of_their_part(tmp_path: Path) -> None:
    lake = Lake(tmp_path.as_uri())
    directory = hour_dir("raw", "metrics", T0)
    for k in range(6):  # a minute each, 10:00-10:05:55
        span = (epoch_us(T0 + timedelta(minutes=k)),
                epoch_us(T0 + timedelta(minutes=k, seconds=55)))
        lake.write(f"{directory}/{file_name('metrics', 0, 100 * k, span)}",
                   _metrics(100 * k, [60.0 * k + s for s in range(0, 60, 5)]))
    lake.write(f"{directory}/{file_name('metrics', 0, 1000)}", _metrics(1000, [125.0]))

    files = RawFiles(lake, "metrics", T0, T0 + timedelta(hours=1))
    for start_s, end_s, names in [
        (300, 330, ["metrics+0+1000.parquet", "metrics+0+500"]),  # the last seconds
        (0, 60, ["metrics+0+0", "metrics+0+1000.parquet"]),
        (56, 60, ["metrics+0+1000.parquet"]),  # between files: only the one without times
        (0, 3600, ["metrics+0+0", "metrics+0+100", "metrics+0+1000.parquet", "metrics+0+200",
                   "metrics+0+300", "metrics+0+400", "metrics+0+500"]),
    ]:
        start, end = T0 + timedelta(seconds=start_s), T0 + timedelta(seconds=end_s)
        for dictionary in (False, True):
            dataset = files.dataset(start, end, dictionary)
            assert sorted(Path(f).name.split("+t")[0] for f in dataset.files) == names
            read = scan_events(dataset, start, end, ["timestamp", "_offset", "host"],
                               dictionary)
            whole = lake.read_events("metrics", start, end, ["timestamp", "_offset", "host"],
                                     dictionary)
            assert read.equals(whole)
            assert pa.types.is_dictionary(read.schema.field("host").type) == dictionary
