"""vigil produce and vigil replay against the real broker, read back exactly."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vigil.events import decode_batch
from vigil.kafka import high_watermarks, read_ranges
from vigil.settings import PROJECT_ROOT, TOPICS, Settings

NAB_CPU = (PROJECT_ROOT.parent / "shared" / "datasets" / "nab" / "data" / "realAWSCloudwatch"
           / "ec2_cpu_utilization_825cc2.csv")


def _vigil(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "vigil.cli", *args], capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _marks(stack: Settings) -> dict[tuple[str, int], int]:
    return high_watermarks(stack.kafka_bootstrap, TOPICS)


def _read(stack: Settings, before: dict[tuple[str, int], int],
          after: dict[tuple[str, int], int]) -> dict[tuple[str, int], list[bytes]]:
    ranges = {key: (before.get(key, 0), end) for key, end in after.items()}
    out: dict[tuple[str, int], list[bytes]] = {key: [] for key in ranges}
    for batch in read_ranges(stack.kafka_bootstrap, ranges):
        for msg in batch:
            out[(msg.topic() or "", msg.partition() or 0)].append(msg.value() or b"")
    for key, (start, end) in ranges.items():
        assert len(out[key]) == end - start, key
    return out


def _produce(labels: Path) -> None:
    _vigil("produce", "--rate", "logs=10,metrics=10,transactions=10", "--duration", "1000",
           "--speed", "max", "--scenarios", "all", "--seed", "5",
           "--start", "2026-11-24T00:00:00Z", "--labels", str(labels))


def test_produce_every_scenario_read_back_decoded_labelled_and_deterministic(
        stack: Settings, tmp_path: Path) -> None:
    before = _marks(stack)
    _produce(tmp_path / "labels1.jsonl")
    middle = _marks(stack)
    first = _read(stack, before, middle)

    tables: dict[str, pa.Table] = {}
    for topic in TOPICS:
        values = [v for (t, _p), vs in first.items() if t == topic for v in vs]
        decoded = decode_batch(topic, values)
        assert decoded.rejects == [], decoded.rejects[:3]
        assert decoded.table.num_rows >= 10_000
        tables[topic] = decoded.table

    labels = [json.loads(line) for line in (tmp_path / "labels1.jsonl").read_text().splitlines()]
    assert {label["scenario"] for label in labels} == {
        "error_burst", "failed_login_storm", "user_log_spike", "cpu_sustained",
        "latency_spike", "cpu_latency", "latency_shift", "cpu_creep", "memory_leak",
        "large_amount", "rapid_fire", "card_testing", "unusual_country"}
    for label in labels:
        table = tables[label["topic"]]
        start = dt.datetime.fromisoformat(label["start"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(label["end"].replace("Z", "+00:00"))
        times = table.column("timestamp")
        hits = table.filter(pc.and_(
            pc.equal(table.column(label["entity_field"]), label["entity"]),
            pc.and_(pc.greater_equal(times, pa.scalar(start, times.type)),
                    pc.less_equal(times, pa.scalar(end, times.type)))))
        assert hits.num_rows >= label["details"].get("events", 1), label
        assert start >= dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
        assert end <= dt.datetime(2026, 11, 24, 0, 16, 40, tzinfo=dt.UTC)

    # Large amounts come only from the labelled scenario.
    big = tables["transactions"].filter(pc.greater(tables["transactions"].column("amount"),
                                                   10_000))
    large = next(label for label in labels if label["scenario"] == "large_amount")
    assert big.column("user_id").to_pylist() == [large["entity"]]

    _produce(tmp_path / "labels2.jsonl")
    second = _read(stack, middle, _marks(stack))
    assert second == first, "the same seed must produce byte-identical partitions"
    assert (tmp_path / "labels1.jsonl").read_bytes() == (tmp_path / "labels2.jsonl").read_bytes()


def test_replay_of_a_nab_csv_keeps_every_row_and_its_time(stack: Settings) -> None:
    before = _marks(stack)
    out = _vigil("replay", str(NAB_CPU), "--topic", "metrics", "--map", "value=cpu_percent",
                 "--set", "service=ec2-825cc2")
    assert "every row fit the schema" in out.stdout
    got = _read(stack, before, _marks(stack))
    values = [v for (t, _p), vs in got.items() if t == "metrics" for v in vs]
    table = decode_batch("metrics", values).table
    rows = [line.split(",") for line in NAB_CPU.read_text().splitlines()[1:]]
    assert table.num_rows == len(rows)
    expected = sorted((dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC), float(v))
                      for ts, v in rows)
    actual = sorted(zip(table.column("timestamp").to_pylist(),
                        table.column("cpu_percent").to_pylist(), strict=True))
    assert [a[0] for a in actual] == [e[0] for e in expected]
    assert np.allclose([a[1] for a in actual], [e[1] for e in expected])
    # One service key: every row went to the same partition, in file order.
    partitions = {p for (t, p), vs in got.items() if t == "metrics" and vs}
    assert len(partitions) == 1


def test_replay_strict_sends_nothing_on_a_bad_row(stack: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,value\n2026-01-01 00:00:00,10\n2026-01-01 00:05:00,700\n")
    before = _marks(stack)
    result = subprocess.run([sys.executable, "-m", "vigil.cli", "replay", str(path),
                             "--topic", "metrics", "--map", "value=cpu_percent",
                             "--set", "service=s", "--strict"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "bad.csv line 3: field 'cpu_percent' must be a percentage 0-100" in result.stderr
    assert _marks(stack) == before
