"""A detection run's scans of the lake as the hour fills: one dataset of the run's widest
span vs. `RawFiles` (each scan opens only the files its part of the span may be in).

Lands --minutes of logs the way ingest runs do (a file per partition per run, named with its
event times), then times, at several points of the hour, the scans a run makes: its batch
(the last run's seconds, dictionary columns), the past of the batch's entities (5 minutes,
narrowed to --entities user ids) and a baseline (the whole span for 5 users, which must open
every file either way). Before, every scan of a run visited each file of the span (a
user_log_spike baseline reaches an hour back), so a run's cost grew with the hour's files.
Files hold --rows events each (fewer than at 20,000 events/s, ~13,000: the cost compared
is per file, and the batch's rows are the same for both).
Run: .venv/bin/python bench/lake_scan.py [--minutes 60 --run-seconds 4 --partitions 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from vigil.detect.reads import entity_filter
from vigil.lake import Lake, RawFiles, epoch_us, file_name, hour_dir, raw_schema, scan_events

COLUMNS = ["timestamp", "service", "level", "user_id", "message", "event_id"]
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
Scans = dict[str, Callable[[], object]]  # a run's scans by name, each ready to time


def land(lake: Lake, minutes: int, run_seconds: float, partitions: int, rows: int,
         population: int = 200_000) -> None:
    schema, rng = raw_schema("logs"), np.random.default_rng(7)
    runs = int(minutes * 60 / run_seconds)
    for run in range(runs):
        for partition in range(partitions):
            first = START + timedelta(seconds=run * run_seconds)
            micros = epoch_us(first) + np.sort(rng.integers(0, int(run_seconds * 1e6), rows))
            stamps = pa.array(micros, pa.int64()).cast(schema.field("timestamp").type)
            users = pa.array([f"u{u}" for u in rng.integers(0, population, rows)])
            offset = (run * partitions + partition) * rows
            table = pa.table({
                "event_id": [f"e{offset + i}" for i in range(rows)], "timestamp": stamps,
                "service": pa.array(np.array(["api", "auth", "billing"])[rng.integers(0, 3, rows)]),
                "host": ["h1"] * rows, "level": ["INFO"] * rows, "message": ["ok"] * rows,
                "user_id": users, "ip": [None] * rows, "trace_id": [None] * rows,
                "_partition": pa.array([partition] * rows, pa.int32()),
                "_offset": pa.array(np.arange(offset, offset + rows)),
                "_kafka_timestamp": stamps, "_ingested_at": stamps}, schema=schema)
            name = file_name("logs", partition, offset, (int(micros[0]), int(micros[-1])))
            lake.write(f"{hour_dir('raw', 'logs', first)}/{name}", table)


def best_of(times: int, work: Callable[[], object]) -> float:
    took = []
    for _ in range(times):
        began = time.perf_counter()
        work()
        took.append(time.perf_counter() - began)
    return min(took)


def run_scans(batch: Callable[[], pa.Table], plain: Callable[[datetime, datetime], pads.Dataset],
              head: datetime, end: datetime, entities: int) -> Scans:
    """The three scans of one run, each as a thunk; `batch` gives the batch's table."""
    users = {"user_id": batch().column("user_id").unique().dictionary_decode()[:entities]}
    few = {"user_id": users["user_id"][:5]}
    hour = end - timedelta(hours=1)
    return {
        "batch": batch,
        "past": lambda: scan_events(plain(head - timedelta(minutes=5), head),
                                    head - timedelta(minutes=5), head, COLUMNS,
                                    where=entity_filter(users)),
        "baseline": lambda: scan_events(plain(hour, head), hour, head, COLUMNS,
                                        where=entity_filter(few)),
    }


def scans_at(lake: Lake, end: datetime, head: datetime, entities: int
             ) -> tuple[int, Scans, Scans]:
    """(files in the run's span, its scans as before, its scans with RawFiles) for a run
    whose batch is [head, end) and whose span reaches 65 minutes back (user_log_spike)."""
    span = (end - timedelta(minutes=65), end)
    # Before: one dataset of the span (each footer parsed once), scanned by every read.
    whole, whole_plain = (lake.raw_dataset("logs", *span, dictionary=True),
                          lake.raw_dataset("logs", *span))
    before = run_scans(lambda: scan_events(whole, head, end, COLUMNS, dictionary=True),
                       lambda _s, _e: whole_plain, head, end, entities)
    parts = RawFiles(lake, "logs", *span)
    after = run_scans(lambda: scan_events(parts.dataset(head, end, dictionary=True),
                                          head, end, COLUMNS, dictionary=True),
                      parts.dataset, head, end, entities)
    return len(whole.files), before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60, help="minutes of logs landed")
    parser.add_argument("--run-seconds", type=float, default=4.0, help="event time per run")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000, help="events per file")
    parser.add_argument("--entities", type=int, default=500, help="user ids in a batch's past")
    args = parser.parse_args()
    header = "| lake | files in span | scan     | one dataset | RawFiles | one dataset / RawFiles |"
    with tempfile.TemporaryDirectory(prefix="vigil-lake-scan-") as root:
        lake = Lake(Path(root).as_uri())
        print(f"landing {args.minutes} min of logs: a file per partition every "
              f"{args.run_seconds:g} s ...", flush=True)
        land(lake, args.minutes, args.run_seconds, args.partitions, args.rows)
        points = sorted({m for m in (5, 15, 30, 45, 60) if m <= args.minutes} | {args.minutes})
        print(f"\na detection run's scans of logs, seconds (best of 3), {args.partitions} files "
              f"every {args.run_seconds:g} s, the span reaching 65 minutes back")
        print(header)
        print("|------|---------------|----------|-------------|----------|------------------------|")
        for minutes in points:
            end = START + timedelta(minutes=minutes)
            head = end - timedelta(seconds=args.run_seconds)
            files, before, after = scans_at(lake, end, head, args.entities)
            for scan in before:
                old, new = best_of(3, before[scan]), best_of(3, after[scan])
                print(f"| {minutes:>2} m | {files:>13,} | {scan:<8} | {old:11.3f} | "
                      f"{new:8.3f} | {old / new:21.1f}x |", flush=True)


if __name__ == "__main__":
    main()
