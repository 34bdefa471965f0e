"""An ingest run's work as the lake fills: landing a sensor-sized batch vs. detecting it.

Produces --minutes of event time at --rate events/s (every scenario; timestamps ending now),
then lands it the way the sensor cuts it (--batch offsets per run, one run after another) and,
after each landing, detects what it touched exactly as an ingest run does (`detect_recent`),
twice, side by side, each into its own database: reading the pasts from the lake in every
run, and from the rows earlier runs kept, as ingest runs do: the few entities' long
look-backs (a user's baseline hour, a sustained run's start, an open anomaly's bucket:
past_cache.py) and the window's last minutes of every entity in the batch (recent_rows.py).
Prints,
per minute of event time already in the lake, the median seconds of landing and of each way
of detecting, and their ratios. A run reads the batch and, before it, only the past of the
entities in it that may fire, each read opening only the files that may hold its span, and
continues the stored anomalies rather than re-reading whole re-alert buckets.
`--profile FROM-TO` prints where detection's time went (kept pasts) in those minutes of
event time (cProfile, cumulative).
Run: .venv/bin/python bench/run_work.py [--minutes 10 --rate 20000 --batch 120000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._stack import kafka_for_bench
from vigil.cliargs import DEFAULT_MIX
from vigil.cursor import Cursor, IngestPolicy, plan_next
from vigil.detect.hours import detect_recent
from vigil.detect.past_cache import PastCache
from vigil.detect.recent_rows import RecentRows
from vigil.detect.rules import load_rules
from vigil.generate import SCENARIOS, StreamSpec, SyntheticStream
from vigil.ingest import land_offset_ranges
from vigil.kafka import ensure_topics, topic_watermarks
from vigil.lake import Lake
from vigil.migrate import migrate
from vigil.produce import EventSender, produce_stream
from vigil.settings import TOPICS

WAYS = ("lake", "kept")


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
        detect_s: dict[str, dict[int, list[float]]] = {way: defaultdict(list) for way in WAYS}
        # Each way detects into its own database: neither sees the other's anomalies.
        urls = {"lake": settings.database_url, "kept": second_database(settings.database_url)}
        kept_dir = Path(tempfile.mkdtemp(prefix="vigil-kept-"))
        pasts = PastCache(kept_dir / "entity-pasts", lake.url)
        recent = RecentRows(kept_dir / "recent-rows", lake.url)
        with psycopg.connect(urls["lake"]) as lake_conn, \
                psycopg.connect(urls["kept"]) as kept_conn:
            conns = {"lake": lake_conn, "kept": kept_conn}
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
                if not spans:
                    continue
                land_s[minute].append(landed_at - began)
                # Side by side, the first by turns (the page cache favours the second).
                turn = WAYS if len(land_s[minute]) % 2 else WAYS[::-1]
                for way in turn:
                    began = time.perf_counter()
                    if minute in profiled and way == "kept":
                        profiler.enable()
                    if way == "kept":
                        detect_recent(lake, rules, conns[way], spans, pasts, recent)
                    else:
                        detect_recent(lake, rules, conns[way], spans)
                    profiler.disable()
                    detect_s[way][minute].append(time.perf_counter() - began)
        print(f"\nan ingest run's work as the lake fills ({args.rate:,.0f} events/s, "
              f"{args.batch:,} offsets per run, one run after another); detection reading "
              "the pasts (windows' last minutes, the few entities' long look-backs) from the "
              "lake every run vs. from the rows kept by earlier runs (median seconds)")
        print("| event time in the lake | runs | land (s) | detect, lake | detect, kept | "
              "lake / kept | kept / land |")
        print("|------------------------|------|----------|--------------|--------------|"
              "-------------|-------------|")
        for minute in sorted(land_s):
            land = statistics.median(land_s[minute])
            lake_s, kept_s = (statistics.median(detect_s[way][minute]) for way in WAYS)
            print(f"| {minute:>2}-{minute + 1:<2} min{'':13} | {len(land_s[minute]):>4} | "
                  f"{land:8.2f} | {lake_s:12.2f} | {kept_s:12.2f} | {lake_s / kept_s:10.1f}x"
                  f" | {kept_s / land:10.1f}x |")
        totals = {way: sum(sum(v) for v in detect_s[way].values()) for way in WAYS}
        print(f"detection in all, seconds: lake every run {totals['lake']:.1f}, kept "
              f"{totals['kept']:.1f} ({totals['lake'] / totals['kept']:.2f}x); slowest run: "
              f"lake {max(max(v) for v in detect_s['lake'].values()):.2f}, kept "
              f"{max(max(v) for v in detect_s['kept'].values()):.2f}")
        print(f"windows' pasts served by kept rows: {recent.hits}, read from the lake: "
              f"{recent.misses}; long look-backs served by kept rows: {pasts.hits}, read from "
              f"the lake: {pasts.misses}")
        same = {way: anomaly_rows(url) for way, url in urls.items()}
        print(f"anomaly_events after the last run: lake every run {len(same['lake'])} rows, "
              f"kept {len(same['kept'])}; "
              + ("identical" if same["lake"] == same["kept"] else "DIFFERENT (a bug)"))
    if profiled:
        print(f"\nwhere detection's time went in minutes {args.profile} (cumulative, top 40)")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def anomaly_rows(url: str) -> list[tuple[object, ...]]:
    """What a user sees of each anomaly: both ways of detecting must leave the same."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, timestamp, alert_type, alert_level, alert_title, "
                            "entity, window_start, window_end, metrics, evidence "
                            "FROM anomaly_events ORDER BY id").fetchall()


def second_database(url: str) -> str:
    """A fresh, migrated database beside `url`'s, for the second way of detecting."""
    name = f"vigil_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    other = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    migrate(other)
    return other


def profile_window(text: str | None) -> range:
    if text is None:
        return range(0)
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


if __name__ == "__main__":
    main()
