"""Helpers for landing tests: produce known events, drive the sensor, read the lake."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.definitions import defs
from orchestration.sensors import kafka_sensor
from vigil.generate import StreamSpec, SyntheticStream
from vigil.ingest import OffsetRange, ranges_since
from vigil.kafka import high_watermarks
from vigil.lake import Lake, floor_hour
from vigil.produce import EventSender, produce_stream
from vigil.settings import TOPICS, Settings

MALFORMED: list[tuple[str, bytes, str]] = [
    ("logs", b'{"event_id": "x", "level": ', "malformed JSON"),
    ("logs", b"", "empty message"),
    ("metrics", b"\xff\xfe not utf-8", "not valid UTF-8"),
    ("metrics", b'{"event_id":"m","timestamp":"2026-01-01T00:00:00Z","service":"s",'
                b'"host":"h","cpu_percent":NaN}', "field 'cpu_percent' is NaN or infinite"),
    ("transactions", b"[1, 2, 3]", "not a JSON object"),
    ("transactions", b'{"event_id":"t"}', "field 'timestamp' is missing or null"),
    ("transactions", b'{"event_id":"t2","timestamp":"2026-01-01T00:00:00Z","amount":"lots"}',
     "field 'amount': expected a number, got a string"),
]


def produce_events(bootstrap: str, seconds: int, rate: float, seed: int) -> dict[str, int]:
    """A stream whose hours are valid partitions (two hours ago); returns events per topic."""
    start = floor_hour(datetime.now(UTC)) - timedelta(hours=2)
    spec = StreamSpec(seed=seed, start=start, rates=dict.fromkeys(TOPICS, rate),
                      scenarios=(), horizon=seconds)
    report = produce_stream(EventSender(bootstrap), SyntheticStream(spec), list(TOPICS),
                            seconds, None, lambda _labels: None)
    assert report.total(report.failed) == 0
    return dict(report.delivered)


def produce_ranges(bootstrap: str, seconds: int, rate: float, seed: int
                   ) -> tuple[dict[str, int], list[OffsetRange]]:
    """Produce a stream; return events per topic and the exact offset ranges it took."""
    before = high_watermarks(bootstrap, TOPICS)
    produced = produce_events(bootstrap, seconds, rate, seed)
    return produced, ranges_since(bootstrap, before, TOPICS)


def s3_lake(stack: Settings) -> Lake:
    """A fresh prefix in the loopback S3 server's bucket."""
    return Lake.open(dataclasses.replace(
        stack, lake_url=f"s3://vigil-lake/test-{uuid.uuid4().hex[:8]}",
        s3_endpoint_url=f"http://127.0.0.1:{stack.s3_port}", s3_bucket="vigil-lake"))


def produce_malformed(bootstrap: str) -> None:
    sender = EventSender(bootstrap)
    for i, (topic, raw, _reason) in enumerate(MALFORMED):
        sender.send(topic, [raw], [f"bad-{i}".encode()])
    assert sender.flush() == 0


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = kafka_sensor(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def drain(instance: dg.DagsterInstance, cursor: str | None, max_ticks: int = 50
          ) -> tuple[str | None, list[dict[str, Any]]]:
    """Tick and run until a tick requests nothing; returns the cursor and the run configs."""
    configs: list[dict[str, Any]] = []
    job = defs.resolve_job_def("ingest")
    for _ in range(max_ticks):
        result = tick(instance, cursor)
        assert isinstance(result, dg.SensorResult), result
        cursor = result.cursor
        if not result.run_requests:
            assert result.skip_reason is not None
            assert "lag 0" in (result.skip_reason.skip_message or "")
            return cursor, configs
        (request,) = result.run_requests
        outcome = job.execute_in_process(run_config=request.run_config, instance=instance,
                                         tags={**request.tags, "dagster/run_key":
                                               request.run_key or ""})
        assert outcome.success
        configs.append(dict(request.run_config))
    raise AssertionError("the sensor never drained")


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}
