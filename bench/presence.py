"""A user new to the kept long pasts, as when it first nears a per-user spike: its hour of
logs read through the past cache with presence filters (only the files that may hold it
opened) vs. without (every file of the hour scanned, as before them).

Lands --minutes of logs the way ingest runs do (`bench/lake_scan.py`: a file per partition
per run, named with its event times; user ids drawn from a population scaled to traffic,
as `vigil produce` does), a spike user's events in its last seconds, and keeps ten users'
pasts. Then, side
by side (best of 3 each), the run that adds the spike user, and the cost a run pays before
the detection lock to give its new files their filters (--partitions files).
Run: .venv/bin/python bench/presence.py [--minutes 60 --run-seconds 2.74 --rows 6000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa

from bench.lake_scan import START, land
from vigil.detect.past_cache import MARGIN, PastCache
from vigil.detect.reads import TopicReads
from vigil.detect.rules import load_rules
from vigil.lake import Lake, RawFiles, epoch_us, file_name, hour_dir, raw_schema

RULE = next(r for r in load_rules() if r.name == "user_log_spike")
SPIKE = "u-spike"


def land_spike(lake: Lake, minutes: int, run_seconds: float, partition: int,
               seconds: float) -> None:
    """The spike user's 40 events a minute over the last `seconds`, one file per run on a
    partition of their own (the other users' files as `lake_scan.land` lands them)."""
    schema, rng = raw_schema("logs"), np.random.default_rng(11)
    end = START + timedelta(minutes=minutes)
    first = end - timedelta(seconds=seconds)
    offset = 0
    while first < end:
        n = max(1, rng.poisson(40 / 60 * run_seconds))
        micros = epoch_us(first) + np.sort(rng.integers(0, int(run_seconds * 1e6), n))
        stamps = pa.array(micros, pa.int64()).cast(schema.field("timestamp").type)
        table = pa.table({
            "event_id": [f"s{offset + i}" for i in range(n)], "timestamp": stamps,
            "service": ["api"] * n, "host": ["h1"] * n, "level": ["INFO"] * n,
            "message": ["ok"] * n, "user_id": [SPIKE] * n, "ip": [None] * n,
            "trace_id": [None] * n, "_partition": pa.array([partition] * n, pa.int32()),
            "_offset": pa.array(np.arange(offset, offset + n)),
            "_kafka_timestamp": stamps, "_ingested_at": stamps}, schema=schema)
        name = file_name("logs", partition, offset, (int(micros[0]), int(micros[-1])))
        lake.write(f"{hour_dir('raw', 'logs', first)}/{name}", table)
        offset, first = offset + n, first + timedelta(seconds=run_seconds)


def add_spike(lake: Lake, template: Path, work: Path, end: datetime, presence: bool
              ) -> tuple[float, int, int]:
    """(seconds, files opened for the spike user's look-back, rows) for the run adding it
    to the kept users, from a copy of the same kept state."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    cache = PastCache(work, lake.url, presence=presence)
    start, head = end - timedelta(seconds=RULE.lookback), end - timedelta(seconds=3)
    reads = TopicReads(lake, {"logs": (start, end)}, cache)
    began = time.perf_counter()
    rows = reads.past([RULE], start, end, {"user_id": pa.array([SPIKE])}, head)
    took = time.perf_counter() - began
    assert cache.added == 1, "the spike user was not added to the kept rows"
    # The kept rows end MARGIN before the batch; what landed after is read for all users.
    opened = cache.presence.opened if cache.presence else len(RawFiles(
        lake, "logs", start, end).names(start, head - MARGIN))
    return took, opened, rows.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--run-seconds", type=float, default=2.74, help="event time per run")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rows", type=int, default=6_000, help="events per file")
    parser.add_argument("--population", type=int, default=6_700_000,
                        help="distinct users (vigil produce: 1,000 per event/s of logs)")
    parser.add_argument("--spike-seconds", type=float, default=60,
                        help="how long the user has been spiking (40/min: over the rule's "
                             "30 in 5 minutes after ~45 s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-presence-") as root:
        lake = Lake((Path(root) / "lake").as_uri())
        print(f"landing {args.minutes} min of logs: {args.partitions} files of {args.rows:,} "
              f"events every {args.run_seconds:g} s ...", flush=True)
        land(lake, args.minutes, args.run_seconds, args.partitions, args.rows, args.population)
        land_spike(lake, args.minutes, args.run_seconds, args.partitions, args.spike_seconds)
        end = START + timedelta(minutes=args.minutes)
        start, head = end - timedelta(seconds=RULE.lookback), end - timedelta(seconds=3)
        files = RawFiles(lake, "logs", start, end)
        template = Path(root) / "kept"
        cache = PastCache(template, lake.url)
        # The users already kept (near firing earlier): read once, as a run would.
        TopicReads(lake, {"logs": (start, end)}, cache).past(
            [RULE], start, end, {"user_id": pa.array([f"u{u}" for u in range(10)])}, head)
        began, runs = time.perf_counter(), 0
        while cache.index("logs", "user_id", files, start, end) or runs == 0:
            runs += 1
        assert cache.presence is not None
        indexed, building = cache.presence.indexed, time.perf_counter() - began
        per_run = building / indexed * args.partitions
        fixed = min(_timed(lambda: cache.index("logs", "user_id", files, start, end))
                    for _ in range(3))

        timings: dict[bool, list[tuple[float, int, int]]] = {False: [], True: []}
        for _ in range(3):
            for presence in (False, True):
                timings[presence].append(add_spike(lake, template, Path(root) / "work", end,
                                                   presence))
        (old, old_files, old_rows), (new, new_files, new_rows) = (
            min(timings[False]), min(timings[True]))
        assert old_rows == new_rows > 0, (old_rows, new_rows)
        refresh = per_run + fixed
        print(f"\nadding a user new to the kept pasts (spiking for {args.spike_seconds:g} s): "
              f"its {RULE.lookback / 60:.0f}-minute look-back over "
              f"{len(files.names(start, end)):,} files, best of 3")
        rows = [("add the user, every file scanned (before)", old_files, 1.0),
                ("add the user, presence filters (now)", new_files, new / old),
                (f"a run's filters for its {args.partitions} new files (no lock)",
                 args.partitions, refresh / old)]
        print(f"| {'step':<48} | files read | time / before |")
        print(f"|{'-' * 50}|------------|---------------|")
        for step, count, share in rows:
            print(f"| {step:<48} | {count:>10,} | {share:13.2f} |")
        print(f"\nbefore / now: {old / new:.1f}x for the read under the lock; the filters of "
              f"{indexed:,} files took {runs} refreshes, each run's "
              f"{refresh / old:.1%} of the read it saves")


def _timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
