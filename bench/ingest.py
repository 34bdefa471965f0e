"""Landing throughput: vigil's ingest path vs. a per-message consumer vs. the consume floor.

The same pre-produced events (default 1,200,000: logs/metrics/transactions 50/20/30 %,
3 partitions each) are read three ways from the same broker:

  (a) vigil: `land_offset_ranges` — read exact ranges, batch-decode, write zstd Parquet;
  (b) per-message, the way the original system's backup consumer worked: poll one message,
      json.loads, validate in Python, write each message as its own JSON object under
      PREFIX/YYYYMMDD/<timestamp>.json — on a sample, as it is slow;
  (c) floor: the same ranges consumed in batches and discarded.

(a) and (c) alternate for --rounds rounds; the table shows medians and ratios.
Run: .venv/bin/python bench/ingest.py [--events 1200000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, TopicPartition

from bench._stack import kafka_for_bench
from vigil.cliargs import DEFAULT_MIX
from vigil.generate import StreamSpec, SyntheticStream
from vigil.ingest import OffsetRange, land_offset_ranges, ranges_since
from vigil.kafka import RangeReader, ensure_topics, high_watermarks
from vigil.lake import Lake
from vigil.produce import EventSender, produce_stream
from vigil.settings import TOPICS

_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "logs": {"event_id": str, "timestamp": str, "service": str, "host": str, "level": str,
             "message": str},
    "metrics": {"event_id": str, "timestamp": str, "service": str, "host": str},
    "transactions": {"event_id": str, "timestamp": str, "transaction_id": str,
                     "user_id": str, "amount": (int, float), "currency": str,
                     "merchant_id": str, "country": str, "payment_method": str,
                     "status": str},
}


def produce(bootstrap: str, events: int) -> list[OffsetRange]:
    before = high_watermarks(bootstrap, TOPICS)
    seconds = 10
    spec = StreamSpec(seed=3, start=datetime(2026, 11, 24, 12, tzinfo=UTC),
                      rates={t: events / seconds * share for t, share in DEFAULT_MIX.items()},
                      scenarios=(), horizon=seconds)
    produce_stream(EventSender(bootstrap), SyntheticStream(spec), list(TOPICS), seconds, None,
                   lambda _labels: None)
    return ranges_since(bootstrap, before, TOPICS)


def vigil_path(bootstrap: str, ranges: list[OffsetRange]) -> tuple[int, float]:
    with tempfile.TemporaryDirectory(prefix="vigil-bench-lake-") as root:
        lake = Lake(Path(root).as_uri())
        started = time.perf_counter()
        report = land_offset_ranges(lake, bootstrap, ranges, datetime.now(UTC))
        elapsed = time.perf_counter() - started
    assert report.quarantined == 0
    return report.rows, elapsed


def floor(bootstrap: str, ranges: list[OffsetRange]) -> tuple[int, float]:
    count = 0
    started = time.perf_counter()
    with RangeReader(bootstrap, batch=25_000) as reader:
        for r in ranges:
            for batch in reader.read(r.topic, r.partition, r.start, r.end):
                count += len(batch.messages)
    return count, time.perf_counter() - started


def per_message(bootstrap: str, ranges: list[OffsetRange], sample: int) -> tuple[int, float]:
    """The original backup consumer's shape, on the first `sample` messages of each range."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-per-message",
                         "enable.auto.commit": False})
    done = 0
    with tempfile.TemporaryDirectory(prefix="vigil-bench-json-") as root:
        prefix = Path(root) / "backup"
        per_range = max(1, sample // len(ranges))
        started = time.perf_counter()
        for r in ranges:
            consumer.assign([TopicPartition(r.topic, r.partition, r.start)])
            taken = 0
            while taken < min(per_range, r.end - r.start):
                msg = consumer.poll(1.0)
                if msg is None or msg.error():
                    continue
                event = json.loads(msg.value() or b"null")
                for name, kind in _REQUIRED[r.topic].items():
                    if not isinstance(event.get(name), kind):
                        raise ValueError(f"{name} missing or mistyped")
                when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                folder = prefix / when.strftime("%Y%m%d")
                folder.mkdir(parents=True, exist_ok=True)
                stamp = f"{when:%Y%m%dT%H%M%S%f}-{r.topic}-{r.partition}-{msg.offset()}"
                (folder / f"{stamp}.json").write_text(json.dumps(event))
                taken += 1
            done += taken
        elapsed = time.perf_counter() - started
    consumer.close()
    return done, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=30_000,
                        help="messages for the per-message consumer")
    args = parser.parse_args()
    with kafka_for_bench() as settings:
        bootstrap = settings.kafka_bootstrap
        ensure_topics(bootstrap, TOPICS, settings.kafka_partitions)
        print(f"producing {args.events:,} events ...", flush=True)
        ranges = produce(bootstrap, args.events)
        total = sum(r.end - r.start for r in ranges)
        floor(bootstrap, ranges)  # warm the broker's page cache for every path alike
        runs: dict[str, list[tuple[int, float]]] = {"vigil": [], "floor": []}
        for _ in range(args.rounds):
            runs["vigil"].append(vigil_path(bootstrap, ranges))
            runs["floor"].append(floor(bootstrap, ranges))
        slow = per_message(bootstrap, ranges, args.sample)
    for name, results in runs.items():
        assert all(n == total for n, _ in results), (name, results, total)
    rate = {name: statistics.median(n / s for n, s in results) for name, results in runs.items()}
    rate["per_message"] = slow[0] / slow[1]
    print(f"\ningest benchmark: {total:,} events in {len(ranges)} partition ranges, "
          f"{args.rounds} rounds (medians); per-message on a {slow[0]:,}-message sample")
    print(f"| {'path':<62} | {'events/s':>10} | {'vs per-message':>14} | {'vs floor':>8} |")
    print(f"|{'-' * 64}|{'-' * 12}|{'-' * 16}|{'-' * 10}|")
    rows = [("(a) vigil: exact ranges -> batch decode -> zstd Parquet", "vigil"),
            ("(b) per-message: poll, json.loads, validate, one JSON file each", "per_message"),
            ("(c) floor: consume in batches, discard", "floor")]
    for label, name in rows:
        print(f"| {label:<62} | {rate[name]:>10,.0f} | "
              f"{rate[name] / rate['per_message']:>13.1f}x | "
              f"{rate[name] / rate['floor']:>7.2f}x |")


if __name__ == "__main__":
    main()
