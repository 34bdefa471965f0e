"""vigil produce at max rate vs. the ceiling: a plain confluent-kafka loop of pre-serialised bytes.

Both send the same events (same seed, same topics, same producer settings) to the same broker,
alternating, three rounds each; the table shows medians and the ratio to the ceiling.
The vigil path includes everything `vigil produce --speed max` does per event: generating the
stream with its scenarios, JSON encoding, keys, and counted delivery.

Run: .venv/bin/python bench/produce.py [--events 600000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import kafka_for_bench
from vigil.cliargs import DEFAULT_MIX
from vigil.events import encode_batch, encode_keys, event_type
from vigil.generate import SCENARIOS, StreamSpec, SyntheticStream
from vigil.kafka import ensure_topics
from vigil.produce import EventSender, produce_stream
from vigil.settings import TOPICS

SECONDS = 5


def spec_for(events: int) -> StreamSpec:
    total_rate = events / SECONDS
    return StreamSpec(seed=1, start=datetime(2026, 11, 24, 12, tzinfo=UTC),
                      rates={t: total_rate * share for t, share in DEFAULT_MIX.items()},
                      scenarios=tuple(SCENARIOS), horizon=SECONDS)


def vigil_path(bootstrap: str, spec: StreamSpec) -> tuple[int, float]:
    sender = EventSender(bootstrap)
    started = time.perf_counter()
    report = produce_stream(sender, SyntheticStream(spec), list(TOPICS), SECONDS, None,
                            lambda _labels: None)
    elapsed = time.perf_counter() - started
    assert report.total(report.failed) == 0
    return report.total(report.delivered), elapsed


def ceiling(bootstrap: str, prepared: list[tuple[str, list[bytes], list[bytes | None]]]
            ) -> tuple[int, float]:
    sender = EventSender(bootstrap)  # same producer settings as vigil's path
    producer = sender.producer
    started = time.perf_counter()
    count = 0
    for topic, values, keys in prepared:
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        count += len(values)
    producer.flush(120)
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = spec_for(args.events)
    stream = SyntheticStream(spec)
    prepared = []
    for k in range(SECONDS):
        for topic in TOPICS:
            table = stream.slice(topic, k)
            kind = event_type(topic)
            prepared.append((topic, encode_batch(table, kind), encode_keys(table, kind)))
    with kafka_for_bench() as settings:
        ensure_topics(settings.kafka_bootstrap, TOPICS, settings.kafka_partitions)
        vigil_path(settings.kafka_bootstrap, spec_for(30_000))  # warm up broker and client
        results: dict[str, list[tuple[int, float]]] = {"ceiling": [], "vigil": []}
        for _ in range(args.rounds):
            results["ceiling"].append(ceiling(settings.kafka_bootstrap, prepared))
            results["vigil"].append(vigil_path(settings.kafka_bootstrap, spec))
    rates = {name: statistics.median(n / s for n, s in runs) for name, runs in results.items()}
    print(f"\nproduce benchmark: {results['vigil'][0][0]:,} events per run "
          f"(logs/metrics/transactions 50/20/30 %, every scenario), {args.rounds} rounds, "
          "medians")
    print(f"| {'path':<58} | {'events/s':>10} | {'vs ceiling':>10} |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 12}|")
    rows = [("ceiling: plain produce() loop of pre-serialised bytes", "ceiling"),
            ("vigil produce --speed max (generate + encode + send)", "vigil")]
    for label, name in rows:
        print(f"| {label:<58} | {rates[name]:>10,.0f} | {rates[name] / rates['ceiling']:>9.2f}x |")


if __name__ == "__main__":
    main()
