"""An ingest run reopening hosts whose anomalies are still open at its batch's start:
recomputed from their re-alert bucket's start (before) vs. resumed from the carry the run
before stored with each row (now).

--rate metrics/s over --hosts hosts (20,000 events/s at the default mix: 4,000); --open of
them run hot (CPU 95 %, latency up) from 5 minutes before the bucket, so their anomalies stay open.
At each --at minute of the 15-minute bucket, a run whose batch starts --step seconds after
the previous run's start reopens those hosts, for the threshold rule `cpu_sustained` and
the forest `metrics_isolation_forest` (a model trained on two hours of history). Both ways
run side by side, --repeat times, and must leave the same rows. The lake is a frame indexed
by host here, so the table shows the detection work alone; an ingest run also reads those
rows from the lake, which costs the old way more again.
Run: .venv/bin/python bench/reopen.py [--rate 4000 --hosts 100 --open 5 --at 2 7 14]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from vigil.detect import carry, forest
from vigil.detect.engine import decided_firings, recent_reach
from vigil.detect.frames import TopicFrame
from vigil.detect.hours import _reopen, _resume, rule_details
from vigil.detect.rules import Rule, load_rules
from vigil.store import anomaly_rows

BUCKET = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def metrics(start: datetime, seconds: float, rate: float, hosts: int, hot: int, seed: int
            ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    at = np.sort(rng.uniform(0, seconds, n))
    host = rng.integers(0, hosts, n)
    # Hot for the 5 minutes before the bucket too: the sustained run fires from its start.
    heat = (host < hot) & (at >= (BUCKET - timedelta(minutes=5) - start).total_seconds())
    return pd.DataFrame({
        "timestamp": pd.to_datetime(start) + pd.to_timedelta(at, unit="s"),
        "host": np.char.add("h-", host.astype(str)), "service": "api",
        "cpu_percent": np.where(heat, 95.0, rng.normal(40, 8, n).clip(0, 100)),
        "memory_percent": rng.normal(55, 5, n).clip(0, 100),
        "latency_ms": np.where(heat, 2_500.0, rng.lognormal(4.5, 0.3, n)),
        "error_rate": np.where(heat, 0.2, rng.uniform(0, 0.01, n)),
        "_partition": host % 6, "_offset": np.arange(n)})


class Lake:
    """The events by host, each host's rows in time order: a read costs what it returns."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.hosts = {h: g.reset_index(drop=True) for h, g in frame.groupby("host", sort=False)}

    def upto(self, end: datetime) -> Callable[[datetime, pd.DataFrame], pd.DataFrame]:
        end_ts = pd.Timestamp(end)

        def read(start: datetime, only: pd.DataFrame) -> pd.DataFrame:
            parts = []
            for host in only["host"]:
                rows = self.hosts.get(host)
                if rows is None:
                    continue
                times = rows["timestamp"]
                lo, hi = times.searchsorted(pd.Timestamp(start)), times.searchsorted(end_ts)
                parts.append(rows.iloc[lo:hi])
            found = pd.concat(parts, ignore_index=True)
            return found.sort_values("timestamp", kind="stable", ignore_index=True)

        return read


def stored_rows(rule: Rule, found: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Rows as Postgres gives them back to the next run (carry.stored_anomalies)."""
    return {row["id"]: carry.as_stored(row)
            for row in anomaly_rows(found, {rule.name: rule_details(rule)})}


def stored_before(rule: Rule, lake: Lake, models: dict[str, list[forest.ForestModel]],
                  previous: datetime, start: datetime) -> dict[str, dict[str, Any]]:
    """What the run before (batch from `previous`) stored, its bucket recomputed whole."""
    window = (BUCKET, BUCKET + timedelta(seconds=rule.realert))
    # It landed events past the next batch's start (partitions drift apart in event time):
    # its anomalies still open end after that start.
    before = lake.upto(start + timedelta(seconds=2))
    everything = pd.DataFrame({"host": list(lake.hosts)})
    earlier = decided_firings(rule, TopicFrame(before(BUCKET - timedelta(
        seconds=recent_reach(rule)), everything)), before, BUCKET, models.get(rule.name, ()))
    return stored_rows(rule, carry.fold(rule, earlier, window, None, previous))


def run(rule: Rule, lake: Lake, models: dict[str, list[forest.ForestModel]],
        stored: dict[str, dict[str, Any]], start: datetime, end: datetime, resume: bool
        ) -> tuple[float, list[dict[str, Any]], int]:
    """One ingest run at [start, end) after the one that stored `stored`: (its seconds, its
    rows, the hosts reopened)."""
    window = (BUCKET, BUCKET + timedelta(seconds=rule.realert))
    everything = pd.DataFrame({"host": list(lake.hosts)})
    read = lake.upto(end)
    began = time.perf_counter()
    batch = read(start - timedelta(seconds=recent_reach(rule)), everything)
    fired = decided_firings(rule, TopicFrame(batch), read, start, models.get(rule.name, ()))
    reopened = carry.reopened(rule, stored, start)
    if not resume:  # as before: no carry to resume from
        reopened = carry.Reopened(pd.concat([reopened.whole, reopened.resumed]),
                                  reopened.resumed.iloc[:0], {})
    kept, again = carry.split(rule, stored, reopened.whole)
    if again:
        fired = _reopen(rule, fired, reopened.whole, read, window[0], models)
    if reopened.carries:
        fired = _resume(rule, fired, reopened, read, start, models)
        kept = {i: a for i, a in kept.items() if i not in reopened.carries}
    found = carry.fold(rule, fired, window, kept, start)
    seconds = time.perf_counter() - began
    rows = anomaly_rows(found, {rule.name: rule_details(rule)})
    return seconds, sorted(({k: v for k, v in r.items() if k != "carry"} for r in rows),
                           key=lambda r: r["id"]), len(reopened)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=4_000.0)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--open", type=int, default=5)
    parser.add_argument("--at", type=float, nargs="+", default=[2.0, 7.0, 14.0])
    parser.add_argument("--step", type=float, default=4.0)
    parser.add_argument("--batch-s", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rules = {r.name: r for r in load_rules()}
    chosen = [rules["cpu_sustained"], rules["metrics_isolation_forest"]]
    history = metrics(BUCKET - timedelta(hours=2, minutes=10), 7_200, args.rate / 20,
                      args.hosts, 0, 1)
    model = forest.train(rules["metrics_isolation_forest"], history, BUCKET)
    assert isinstance(model, forest.ForestModel), model
    models = {"metrics_isolation_forest": [model]}
    last = max(args.at) * 60 + args.batch_s + 1
    lake = Lake(pd.concat([
        metrics(BUCKET - timedelta(minutes=35), 35 * 60, args.rate, args.hosts, args.open, 2),
        metrics(BUCKET, last, args.rate, args.hosts, args.open, 3)], ignore_index=True))
    print(f"\n{args.rate:,.0f} metrics/s over {args.hosts} hosts, {args.open} hot from 5 "
          f"minutes before the bucket; a run's batch: {args.batch_s:g} s, starting {args.step:g} s "
          f"after the previous run's; detection seconds, median of {args.repeat}")
    print("| rule                     | minute | reopened | from bucket start (before) "
          "| from carry (now) | before / now |")
    print("|--------------------------|--------|----------|----------------------------"
          "|------------------|--------------|")
    for rule in chosen:
        for minute in args.at:
            start = BUCKET + timedelta(minutes=minute)
            stored = stored_before(rule, lake, models, start - timedelta(seconds=args.step),
                                   start)
            end = start + timedelta(seconds=args.batch_s)
            timings: dict[bool, list[float]] = {False: [], True: []}
            rows: dict[bool, list[dict[str, Any]]] = {}
            for _ in range(args.repeat):
                for resume in (False, True):
                    seconds, rows[resume], reopened = run(rule, lake, models, stored,
                                                          start, end, resume)
                    timings[resume].append(seconds)
            assert rows[False] == rows[True], f"{rule.name} at minute {minute}: rows differ"
            assert rows[True], f"{rule.name}: the hot hosts' anomalies were not found"
            was, now = statistics.median(timings[False]), statistics.median(timings[True])
            print(f"| {rule.name:<24} | {minute:6g} | {reopened:8d} | {was:26.3f} "
                  f"| {now:16.3f} | {was / now:11.1f}x |")


if __name__ == "__main__":
    main()
