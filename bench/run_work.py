"""An ingest run's work as the lake fills: landing a sensor-sized batch vs. detecting it.

Produces --minutes of event time at --rate events/s (every scenario; timestamps ending now),
then lands it the way the sensor cuts it (--batch offsets per run, one run after another) and,
after each landing, detects what it touched exactly as an ingest run does (`detect_recent`).
Prints, per minute of event time already in the lake, the median seconds of the two steps
side by side and their ratio: landing costs the same per batch; detection grows until the
lake holds the rules' windows (5 minutes), then stays level as the hour fills (0.7-0.9x the
landing at 17-30 minutes of a 30-minute run), higher while scenarios run (1.2-2.1x: the
long look-backs of the entities near firing): a run reads the batch and, before it, only
the past of the entities in it that may fire, each read opening only the files that may
hold its span, and continues the stored anomalies rather than re-reading whole re-alert
buckets and hour-long look-backs. `--profile FROM-TO` prints where detection's time went
in those minutes of event time (cProfile, cumulative).
Run: .venv/bin/python bench/run_work.py [--minutes 10 --rate 20000 --batch 120000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._stack import kafka_for_bench
from vigil.cliargs import DEFAULT_MIX
from vigil.cursor import Cursor, IngestPolicy, plan_next
from vigil.detect.hours import detect_recent
from vigil.detect.rules import load_rules
from vigil.generate import SCENARIOS, StreamSpec, SyntheticStream
from vigil.ingest import land_offset_ranges
from vigil.kafka import ensure_topics, topic_watermarks
from vigil.lake import Lake
from vigil.migrate import migrate
from vigil.produce import EventSender, produce_stream
from vigil.settings import TOPICS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="minutes of event time")
    parser.add_argument("--rate", type=float, default=20_000.0, help="events/s across topics")
    parser.add_argument("--batch", type=int, default=120_000, help="offsets per ingest run")
    parser.add_argument("--profile", metavar="FROM-TO", default=None,
                        help="profile detection of runs in these minutes of event time (e.g. "
                             "11-16) and print where its time went")
    args = parser.parse_args()
    profiled = profile_window(args.profile)
    profiler = cProfile.Profile()
    with kafka_for_bench() as settings:
        migrate(settings.database_url)
        ensure_topics(settings.kafka_bootstrap, TOPICS, settings.kafka_partitions)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=args.minutes)
        spec = StreamSpec(seed=11, start=start, scenarios=tuple(SCENARIOS),
                          horizon=args.minutes * 60.0,
                          rates={t: args.rate * share for t, share in DEFAULT_MIX.items()})
        print(f"producing {args.minutes} min of event time at {args.rate:,.0f} events/s ...",
              flush=True)
        produce_stream(EventSender(settings.kafka_bootstrap), SyntheticStream(spec),
                       list(TOPICS), args.minutes * 60, None, lambda _labels: None)
        lake, rules = Lake.open(settings), load_rules()
        cursor: Cursor = {}
        policy = IngestPolicy(args.batch, "earliest")
        land_s: dict[int, list[float]] = defaultdict(list)
        detect_s: dict[int, list[float]] = defaultdict(list)
        with psycopg.connect(settings.database_url) as conn:
            while True:
                plan = plan_next(cursor, topic_watermarks(settings.kafka_bootstrap, TOPICS),
                                 policy)
                if not plan.ranges:
                    break
                cursor = plan.cursor
                began = time.perf_counter()
                report = land_offset_ranges(lake, settings.kafka_bootstrap, plan.ranges,
                                            datetime.now(UTC))
                landed_at = time.perf_counter()
                spans = {t: (x.first_event, x.last_event) for t, x in report.topics.items()
                         if x.first_event is not None and x.last_event is not None}
                newest = max((last for _first, last in spans.values()), default=start)
                minute = int((newest - start).total_seconds() // 60)
                if minute in profiled:
                    profiler.enable()
                detect_recent(lake, rules, conn, spans)
                profiler.disable()
                done = time.perf_counter()
                if not spans:
                    continue
                land_s[minute].append(landed_at - began)
                detect_s[minute].append(done - landed_at)
        print(f"\nan ingest run's work as the lake fills ({args.rate:,.0f} events/s, "
              f"{args.batch:,} offsets per run, one run after another)")
        print("| event time in the lake | runs | land (s) | detect (s) | detect / land |")
        print("|------------------------|------|----------|------------|---------------|")
        for minute in sorted(land_s):
            land, detect = (statistics.median(land_s[minute]),
                            statistics.median(detect_s[minute]))
            print(f"| {minute:>2}-{minute + 1:<2} min{'':13} | {len(land_s[minute]):>4} | "
                  f"{land:8.2f} | {detect:10.2f} | {detect / land:12.1f}x |")
    if profiled:
        print(f"\nwhere detection's time went in minutes {args.profile} (cumulative, top 40)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def profile_window(text: str | None) -> range:
    if text is None:
        return range(0)
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


if __name__ == "__main__":
    main()
