"""Rule detection throughput: vigil's engine vs. a per-event loop vs. the same windows in DuckDB.

One hour of generated events (default 10,000,000; logs/metrics/transactions 50/20/30 %,
every scenario) is run through
  (a) the engine (`vigil/detect/engine.py`, rules.yaml) — firings and anomalies;
  (b) a per-event loop in the style of the original consumer: one event at a time, a deque
      per key for each window — on a time-ordered sample (it is slow), reporting its rate;
  (c) the same windows as DuckDB SQL over the same Arrow tables (window functions with
      RANGE frames; gaps-and-islands for the sustained rule), anomalies counted per bucket.
The anomaly counts of (a) and (c) are printed side by side as a cross-check.
Run: .venv/bin/python bench/detect.py [--events 10000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import pandas as pd
import pyarrow as pa

from vigil.cliargs import DEFAULT_MIX
from vigil.detect.engine import detect
from vigil.detect.rules import load_rules
from vigil.generate import SCENARIOS, StreamSpec, SyntheticStream

START = datetime(2026, 11, 24, 10, tzinfo=UTC)
END = START + timedelta(hours=1)


def generate(events: int) -> dict[str, pa.Table]:
    spec = StreamSpec(seed=5, start=START, scenarios=tuple(SCENARIOS), horizon=3600,
                      rates={t: events / 3600 * share for t, share in DEFAULT_MIX.items()})
    stream = SyntheticStream(spec)
    # One contiguous table per topic, as a lake read of an hour returns (few large chunks).
    return {topic: pa.concat_tables([stream.slice(topic, k) for k in range(3600)])
            .combine_chunks() for topic in spec.rates}


def as_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Events as the original consumer received them: one dict each, as json.loads gives
    them, with the ISO 8601 timestamp string of the wire format."""
    out = frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return out.to_dict("records")  # type: ignore[return-value]


def _seconds(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def per_event(events: dict[str, list[dict[str, Any]]]) -> int:
    """The original consumer's shape: a Python loop, deques per key; returns alerts raised."""
    alerts = 0
    errors: dict[str, deque[float]] = defaultdict(deque)
    user_recent: dict[str, deque[float]] = defaultdict(deque)
    user_history: dict[str, deque[float]] = defaultdict(deque)
    for event in events["logs"]:
        t = _seconds(event)
        if event["level"] in ("ERROR", "CRITICAL"):
            window = errors[event["service"]]
            window.append(t)
            while window[0] <= t - 180:
                window.popleft()
            alerts += len(window) >= 20
        if "failed" in event["message"].lower():
            alerts += 1
        user = event["user_id"]
        if user is not None:
            recent, history = user_recent[user], user_history[user]
            recent.append(t)
            while recent[0] <= t - 300:
                history.append(recent.popleft())
            while history and history[0] <= t - 3900:
                history.popleft()
            alerts += len(recent) >= 30 and len(recent) >= 10 * max(len(history) / 12, 1)
    runs: dict[str, float | None] = {}
    last: dict[str, float] = {}
    for event in events["metrics"]:
        t, host = _seconds(event), event["host"]
        hot = event["cpu_percent"] >= 80
        if not hot or t - last.get(host, -1e18) > 120:
            runs[host] = t if hot else None
        if hot and runs.get(host) is None:
            runs[host] = t
        last[host] = t
        start = runs.get(host)
        alerts += start is not None and t - start >= 180
        alerts += event["latency_ms"] > 1000
        alerts += hot and event["latency_ms"] > 1000
    spends: dict[str, deque[float]] = defaultdict(deque)
    for event in events["transactions"]:
        t = _seconds(event)
        alerts += event["amount"] > 10000
        window = spends[event["user_id"]]
        window.append(t)
        while window[0] <= t - 300:
            window.popleft()
        alerts += len(window) >= 11
    return alerts


def _within(column: str = "timestamp") -> str:
    return (f"{column} >= TIMESTAMPTZ '{START.isoformat()}' "
            f"AND {column} < TIMESTAMPTZ '{END.isoformat()}'")


def _bucketed(firing_sql: str, keys: str, seconds: int) -> str:
    return (f"SELECT count(*) FROM (SELECT DISTINCT {keys}, time_bucket(INTERVAL '{seconds} "
            f"seconds', timestamp) FROM ({firing_sql}) WHERE {_within()})")


def duckdb_sql() -> dict[str, str]:
    def count_window(table: str, keys: str, micros: int, where: str = "true") -> str:
        return (f"SELECT {keys}, timestamp, count(*) OVER (PARTITION BY {keys} ORDER BY "
                f"timestamp RANGE BETWEEN INTERVAL '{micros - 1} microseconds' PRECEDING AND "
                f"CURRENT ROW) AS n FROM {table} WHERE {where}")

    sustained = """
        WITH s AS (SELECT host, timestamp, cpu_percent >= 80 AS hot,
                          lag(timestamp) OVER w AS prev_t, lag(cpu_percent >= 80) OVER w AS prev_hot
                   FROM metrics WINDOW w AS (PARTITION BY host ORDER BY timestamp)),
             r AS (SELECT *, CASE WHEN hot AND NOT (coalesce(prev_hot, false)
                              AND timestamp - prev_t <= INTERVAL 120 SECONDS) THEN 1 ELSE 0 END
                              AS starts FROM s),
             g AS (SELECT *, sum(starts) OVER (PARTITION BY host ORDER BY timestamp
                              ROWS UNBOUNDED PRECEDING) AS run FROM r),
             f AS (SELECT *, min(timestamp) FILTER (WHERE hot) OVER (PARTITION BY host, run)
                              AS run_start FROM g)
        SELECT host, timestamp FROM f
        WHERE hot AND timestamp - run_start >= INTERVAL 180 SECONDS"""
    spike = """
        SELECT user_id, timestamp FROM (
          SELECT user_id, timestamp,
            count(*) OVER (PARTITION BY user_id ORDER BY timestamp RANGE BETWEEN
              INTERVAL '299999999 microseconds' PRECEDING AND CURRENT ROW) AS recent,
            count(*) OVER (PARTITION BY user_id ORDER BY timestamp RANGE BETWEEN
              INTERVAL '3899999999 microseconds' PRECEDING AND
              INTERVAL '300000000 microseconds' PRECEDING) AS history
          FROM logs WHERE user_id IS NOT NULL)
        WHERE recent >= 30 AND recent >= 10 * greatest(history * 300.0 / 3600.0, 1)"""
    return {
        "error_spike": _bucketed(
            "SELECT * FROM (" + count_window("logs", "service", 180_000_000,
                                             "level IN ('ERROR', 'CRITICAL')") + ") WHERE n >= 20",
            "service", 600),
        "failed_message": _bucketed(
            "SELECT service, user_id, timestamp FROM logs WHERE message ILIKE '%failed%'",
            "service, user_id", 600),
        "user_log_spike": _bucketed(spike, "user_id", 900),
        "cpu_sustained": _bucketed(sustained, "host", 900),
        "latency_high": _bucketed("SELECT host, timestamp FROM metrics WHERE latency_ms > 1000",
                                  "host", 600),
        "cpu_and_latency": _bucketed(
            "SELECT host, timestamp FROM metrics WHERE latency_ms > 1000 AND cpu_percent >= 80",
            "host", 600),
        "large_amount": _bucketed(
            "SELECT user_id, timestamp FROM transactions WHERE amount > 10000", "user_id", 60),
        "rapid_transactions": _bucketed(
            "SELECT * FROM (" + count_window("transactions", "user_id", 300_000_000)
            + ") WHERE n >= 11", "user_id", 600),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--sample", type=int, default=300_000,
                        help="events for the per-event loop")
    args = parser.parse_args()
    print(f"generating {args.events:,} events ...", flush=True)
    tables = generate(args.events)
    total = sum(t.num_rows for t in tables.values())
    frames = {topic: table.to_pandas() for topic, table in tables.items()}
    rules = load_rules()

    started = time.perf_counter()
    found = detect(rules, frames, START, END)
    engine_s = time.perf_counter() - started

    sample = {topic: as_records(frame.iloc[: int(args.sample * DEFAULT_MIX[topic])])
              for topic, frame in frames.items()}
    sampled = sum(len(events) for events in sample.values())
    started = time.perf_counter()
    per_event(sample)
    loop_s = time.perf_counter() - started

    con = duckdb.connect()
    for topic, table in tables.items():
        con.register(topic, table)
    started = time.perf_counter()
    sql_counts: dict[str, Any] = {}
    for name, query in duckdb_sql().items():
        sql_counts[name] = con.sql(query).fetchall()[0][0]
    duck_s = time.perf_counter() - started

    rates = {"engine": total / engine_s, "loop": sampled / loop_s, "duckdb": total / duck_s}
    print(f"\ndetection benchmark: {total:,} events (1 h, every scenario, {len(rules)} rules); "
          f"per-event loop on a {sampled:,}-event sample")
    print(f"| {'path':<52} | {'events/s':>11} | {'vs loop':>8} | {'vs DuckDB':>9} |")
    print(f"|{'-' * 54}|{'-' * 13}|{'-' * 10}|{'-' * 11}|")
    for label, name in (("(a) vigil engine (pandas/numpy, vectorised)", "engine"),
                        ("(b) per-event loop with deques (original style)", "loop"),
                        ("(c) DuckDB SQL, same windows", "duckdb")):
        print(f"| {label:<52} | {rates[name]:>11,.0f} | {rates[name] / rates['loop']:>7.1f}x | "
              f"{rates[name] / rates['duckdb']:>8.2f}x |")
    engine_counts = found.groupby("rule").size().to_dict()
    print("\nanomalies per rule (engine vs DuckDB):")
    for name in sql_counts:
        print(f"  {name:<20} {engine_counts.get(name, 0):>5} {sql_counts[name]:>5}")


if __name__ == "__main__":
    main()
