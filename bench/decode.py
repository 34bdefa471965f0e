"""The landing decoder: vigil's batch decode vs. per-message json.loads into Arrow.

Both turn the same generated Kafka message values (every topic) into the topic's Arrow
table plus rejects; the per-message path is the obvious one: json.loads each message,
validate its fields in Python, Table.from_pylist. Clean batches, and batches with 0.1 %
malformed messages mixed in. Medians of --rounds runs.
Run: .venv/bin/python bench/decode.py [--events 200000]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa

from vigil.events import EVENT_TYPES, EventType, decode_batch, encode_batch
from vigil.generate import StreamSpec, SyntheticStream


def per_message(kind: EventType, messages: list[bytes]) -> tuple[pa.Table, int]:
    rows: list[dict[str, Any]] = []
    rejected = 0
    for raw in messages:
        try:
            event = json.loads(raw)
            for field in kind.fields:
                value = event.get(field.name)
                if value is None:
                    if field.required:
                        raise ValueError(field.name)
                elif pa.types.is_floating(field.type):
                    if not isinstance(value, int | float) or not math.isfinite(value):
                        raise ValueError(field.name)
                elif pa.types.is_timestamp(field.type):
                    event[field.name] = datetime.fromisoformat(value.replace("Z", "+00:00"))
                elif not isinstance(value, str):
                    raise ValueError(field.name)
            rows.append({f.name: event.get(f.name) for f in kind.fields})
        except (ValueError, AttributeError):
            rejected += 1
    return pa.Table.from_pylist(rows, schema=kind.schema), rejected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="per topic")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = StreamSpec(seed=4, start=datetime(2026, 11, 24, 12, tzinfo=UTC),
                      rates=dict.fromkeys(EVENT_TYPES, float(args.events)))
    stream = SyntheticStream(spec)
    print(f"| {'topic':<13} | {'bad':>5} | {'vigil events/s':>14} | {'per-message':>12} | "
          f"{'speed-up':>8} |")
    print(f"|{'-' * 15}|{'-' * 7}|{'-' * 16}|{'-' * 14}|{'-' * 10}|")
    for topic, kind in EVENT_TYPES.items():
        clean = encode_batch(stream.slice(topic, 0), kind)
        dirty = list(clean)
        for i in range(0, len(dirty), 1000):
            dirty[i] = b'{"event_id": "broken", '
        for label, messages in (("0 %", clean), ("0.1 %", dirty)):
            fast, slow = [], []
            for _ in range(args.rounds):
                started = time.perf_counter()
                decoded = decode_batch(topic, messages)
                fast.append(len(messages) / (time.perf_counter() - started))
                started = time.perf_counter()
                table, rejected = per_message(kind, messages)
                slow.append(len(messages) / (time.perf_counter() - started))
                assert table.num_rows == decoded.table.num_rows
                assert rejected == len(decoded.rejects)
            v, p = statistics.median(fast), statistics.median(slow)
            print(f"| {topic:<13} | {label:>5} | {v:>14,.0f} | {p:>12,.0f} | {v / p:>7.1f}x |")


if __name__ == "__main__":
    main()
