"""Per-point cost of the metric detectors, side by side in one run: the threshold rules, the
anomaly_likelihood detector (rolling median/MAD + likelihood + alert policy, per host) and the
isolation forest's scoring (its model trained once beforehand, outside the timing).

Every detector goes through the engine's `firings` on the same frame of generated metrics
(default 1,000,000 points over ~72 hosts, every scenario), as an ingest run would call it.
Prints points/s per detector and its cost relative to the threshold rule.
Run: .venv/bin/python bench/metric_detectors.py [--points 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from vigil.detect import forest
from vigil.detect.engine import firings, to_frame
from vigil.detect.frames import TopicFrame
from vigil.detect.rules import Rule, load_rules
from vigil.generate import SCENARIOS, StreamSpec, SyntheticStream

START = datetime(2026, 11, 24, 10, tzinfo=UTC)


def metrics(points: int, seconds: int = 3600) -> pd.DataFrame:
    spec = StreamSpec(seed=11, start=START, scenarios=tuple(SCENARIOS), horizon=seconds,
                      rates={"metrics": points / seconds})
    stream = SyntheticStream(spec)
    frame = to_frame(stream.span("metrics", seconds))
    frame["_partition"], frame["_offset"] = 0, range(len(frame))
    return frame


def best_of(runs: int, work: object) -> tuple[float, int]:
    times, fired = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        fired = len(work())  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times), fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    rules = {r.name: r for r in load_rules(include_disabled=True) if r.topic == "metrics"}
    print(f"generating {args.points:,} metric points ...", file=sys.stderr)
    frame = metrics(args.points)
    hosts = frame["host"].nunique()
    history = metrics(args.points // 2)  # the forest's training history (shape only)
    history["timestamp"] = history["timestamp"] - timedelta(hours=1)
    model = forest.train(rules["metrics_isolation_forest"], history, START)
    assert not isinstance(model, str), model
    prepared = TopicFrame(frame)

    def run(rule: Rule) -> object:
        models = [model] if rule.forest is not None else []
        return lambda: firings(rule, prepared, models)

    rows = []
    for name in ("latency_high", "cpu_and_latency", "cpu_sustained", "cpu_likelihood",
                 "metrics_isolation_forest"):
        seconds, fired = best_of(args.runs, run(rules[name]))
        rows.append((name, rules[name].type, seconds, fired))
    base = rows[0][2]
    print(f"\nmetric detectors on {len(frame):,} points ({hosts} hosts, 1 h, every scenario), "
          f"engine firings, best of {args.runs}")
    print("| detector | type | points/s | cost vs threshold rule | firings |")
    print("|---|---|---|---|---|")
    for name, kind, seconds, fired in rows:
        print(f"| {name} | {kind} | {len(frame) / seconds:,.0f} | {seconds / base:.1f}x "
              f"| {fired:,} |")


if __name__ == "__main__":
    main()
