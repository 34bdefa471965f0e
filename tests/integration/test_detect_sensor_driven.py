"""Sensor-driven detection end to end: Kafka -> kafka_sensor -> ingest runs (land + detect)
-> anomaly_events in Postgres. Every threshold scenario is found with its rule, entity and
time; a clean stream of the same size raises no critical anomaly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from tests.integration.landing_helpers import drain, tick
from tests.integration.test_detect_hours import THRESHOLD_SCENARIOS
from vigil.generate import StreamSpec, SyntheticStream, resolve_scenarios
from vigil.lake import floor_hour
from vigil.migrate import migrate
from vigil.produce import EventSender, produce_stream
from vigil.settings import TOPICS, Settings

RATES = {"logs": 20.0, "metrics": 12.0, "transactions": 12.0}
SECONDS = 1800


@pytest.fixture
def pipeline(stack: Settings, fresh_database: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """Ingest runs of this test land into their own lake and detect into their own database."""
    migrate(fresh_database)
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.setenv("VIGIL_LAKE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("VIGIL_INGEST_START", "latest")  # ignore what other tests produced
    monkeypatch.setenv("VIGIL_INGEST_MAX_RECORDS", "20000")  # several runs
    monkeypatch.setenv("VIGIL_DEPLOYMENT", f"test-{uuid.uuid4().hex[:8]}")
    with dg.instance_for_test() as instance:
        yield instance


def _produce(stack: Settings, start: datetime, scenarios: list[str], seed: int) -> list[Any]:
    spec = StreamSpec(seed=seed, start=start, rates=RATES, horizon=SECONDS,
                      scenarios=resolve_scenarios(scenarios) if scenarios else ())
    stream = SyntheticStream(spec)
    report = produce_stream(EventSender(stack.kafka_bootstrap), stream, list(TOPICS), SECONDS,
                            None, lambda _labels: None)
    assert report.total(report.failed) == 0
    return stream.labels(0)


def _anomalies(url: str, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT alert_type, alert_level, entity, timestamp FROM anomaly_events "
            "WHERE window_start >= %s AND window_start < %s", (start, end)).fetchall()


def test_sensor_driven_runs_find_every_threshold_scenario_and_a_clean_stream_pages_nobody(
        stack: Settings, fresh_database: str, pipeline: dg.DagsterInstance) -> None:
    first = tick(pipeline, None)
    assert isinstance(first, dg.SensorResult) and not first.run_requests
    # Two half hours far enough apart that neither's look-back reaches the other, and clear
    # of the hours other tests produce into.
    noisy_start = floor_hour(datetime.now(UTC)) - timedelta(hours=6)
    clean_start = noisy_start - timedelta(hours=3)
    labels = _produce(stack, noisy_start, ["all"], seed=31)
    assert _produce(stack, clean_start, [], seed=32) == []
    _cursor, runs = drain(pipeline, first.cursor)
    assert len(runs) >= 3

    found = _anomalies(fresh_database, noisy_start, noisy_start + timedelta(hours=1))
    checked = set()
    for label in labels:
        rule = THRESHOLD_SCENARIOS.get(label.scenario)
        if rule is None:
            continue
        hits = [a for a in found if a[0] == rule and label.entity in a[2]
                and label.start - timedelta(minutes=1) <= a[3] <= label.end
                + timedelta(minutes=1)]
        assert hits, (label.scenario, label.entity, sorted({a[0] for a in found}))
        checked.add(label.scenario)
    assert checked == set(THRESHOLD_SCENARIOS)

    clean = _anomalies(fresh_database, clean_start, clean_start + timedelta(hours=1))
    assert [a for a in clean if a[1] == "critical"] == []
