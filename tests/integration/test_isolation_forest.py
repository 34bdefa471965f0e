"""The isolation_forest detector over a real lake into a real Postgres: trained on the
history before each hour, it finds the scenarios no threshold is written for, stores one
model per hour, and gives the same rows however the hour was batched."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.integration.lock_helpers import detection_behind_the_lock, wait_until
from vigil.detect.forest import TRAINING_LEAD
from vigil.detect.hours import detect_hour, detect_recent
from vigil.detect.rules import load_rules
from vigil.generate import StreamSpec, SyntheticStream, resolve_scenarios
from vigil.lake import Lake, file_name, hour_dir, raw_schema
from vigil.migrate import migrate

HOUR = datetime(2026, 11, 20, 12, tzinfo=UTC)
RATES = {"metrics": 15.0, "transactions": 15.0}
# Scenarios the forest must catch; no threshold rule catches the first three.
SUBTLE = {"latency_shift", "cpu_creep", "memory_leak", "card_testing"}
UNSEEN_BY_RULES = {"latency_shift", "cpu_creep", "memory_leak"}
SLICE = timedelta(minutes=5)


@pytest.fixture(scope="module")
def streams() -> tuple[dict[str, pa.Table], list[Any]]:
    """Two clean hours, then an hour with every scenario; same world (seed)."""
    history = SyntheticStream(StreamSpec(seed=17, start=HOUR - timedelta(hours=2),
                                         rates=RATES))
    current = SyntheticStream(StreamSpec(seed=17, start=HOUR, rates=RATES, horizon=3600,
                                         scenarios=resolve_scenarios(["all"])))
    tables = {}
    for topic in RATES:
        before = pa.concat_tables([history.slice(topic, k) for k in range(7200)])
        during = pa.concat_tables([current.slice(topic, k) for k in range(3600)])
        tables[topic] = pa.concat_tables([before, during.cast(before.schema)])
    return tables, current.labels(0)


def _land(lake: Lake, tables: dict[str, pa.Table], start: datetime, end: datetime,
          offsets: dict[str, int]) -> dict[str, tuple[datetime, datetime]]:
    """Write events with start <= timestamp < end as landing does, one file per topic and
    hour; returns the event-time span landed per topic."""
    spans = {}
    for topic, table in tables.items():
        stamps = table.column("timestamp")
        part = table.filter(pc.and_(pc.greater_equal(stamps, pa.scalar(start, stamps.type)),
                                    pc.less(stamps, pa.scalar(end, stamps.type))))
        if part.num_rows == 0:
            continue
        first = offsets.get(topic, 0)
        n = part.num_rows
        landed = (part.append_column("_partition", pa.array(np.zeros(n, np.int32)))
                  .append_column("_offset", pa.array(np.arange(first, first + n)))
                  .append_column("_kafka_timestamp", part.column("timestamp"))
                  .append_column("_ingested_at", part.column("timestamp"))
                  .cast(raw_schema(topic)))
        hours = pc.floor_temporal(landed.column("timestamp"), unit="hour")
        for hour in pc.unique(hours).to_pylist():
            rows = landed.filter(pc.equal(hours, pa.scalar(hour, hours.type)))
            lake.write(f"{hour_dir('raw', topic, hour)}/"
                       f"{file_name(topic, 0, rows.column('_offset')[0].as_py())}", rows)
        offsets[topic] = first + n
        times = landed.column("timestamp")
        spans[topic] = (pc.min(times).as_py(), pc.max(times).as_py())
    return spans


def _rows(url: str, detector: str | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, rule, detector, detector_version, alert_level, entity, window_start, "
            "window_end, alert_title, metrics, evidence FROM anomaly_events "
            "WHERE %(d)s::text IS NULL OR detector = %(d)s ORDER BY id",
            {"d": detector}).fetchall()


@pytest.fixture(scope="module")
def full_lake(tmp_path_factory: pytest.TempPathFactory,
              streams: tuple[dict[str, pa.Table], list[Any]]) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("forest-lake").as_uri())
    _land(lake, streams[0], HOUR - timedelta(hours=2), HOUR + timedelta(hours=1), {})
    return lake


def test_the_forest_finds_what_no_threshold_catches_and_nothing_else(
        full_lake: Lake, streams: tuple[dict[str, pa.Table], list[Any]],
        fresh_database: str) -> None:
    tables, labels = streams
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        result = detect_hour(full_lake, load_rules(), conn, HOUR)
        models = conn.execute("SELECT rule, hour, version, training_rows, threshold "
                              "FROM detector_models ORDER BY rule").fetchall()
    assert result.notes == ()
    trained_until = HOUR - TRAINING_LEAD  # so the model can be trained before the hour
    history = {t: int(pc.sum(pc.less(tables[t].column("timestamp"),
                                     pa.scalar(trained_until, tables[t].column("timestamp").type)))
                          .as_py()) for t in RATES}
    assert [(m[0], m[1], m[2], m[3]) for m in models] == [
        ("metrics_isolation_forest", HOUR, "iforest-3", history["metrics"]),
        ("transactions_isolation_forest", HOUR, "iforest-3", history["transactions"])]
    thresholds = {m[0]: m[4] for m in models}

    found = _rows(fresh_database, "isolation_forest")
    by_entity = {label.entity: label for label in labels if label.topic in RATES}
    caught = {by_entity[r[5]].scenario for r in found if r[5] in by_entity}
    assert caught >= SUBTLE, SUBTLE - caught
    # The rules catch none of those: the forest adds what thresholds cannot see.
    rules_caught = {by_entity[r[5]].scenario for r in _rows(fresh_database, "rules")
                    if r[5] in by_entity}
    assert not UNSEEN_BY_RULES & rules_caught
    assert [r[5] for r in found if r[5] not in by_entity] == [], "no false alarm"
    for row in found:
        label = by_entity[row[5]]
        assert label.start - timedelta(minutes=15) <= row[6] <= label.end, row
        assert row[3] == "iforest-3" and row[4] == "info"
        metrics = row[9]
        assert metrics["score"] >= thresholds[row[1]]
        assert metrics["score"] == pytest.approx(metrics["peak"], abs=1e-4)
        assert metrics["peak_feature"] in row[8]  # the title says what was unusual
        assert set(row[10]) == {"first", "last"}  # evidence: Kafka coordinates


def test_an_hour_without_enough_history_is_not_scored_and_says_so(
        full_lake: Lake, fresh_database: str) -> None:
    migrate(fresh_database)
    first_hour = HOUR - timedelta(hours=2)  # nothing landed before it
    with psycopg.connect(fresh_database) as conn:
        result = detect_hour(full_lake, load_rules(), conn, first_hour)
    assert len(result.notes) == 2
    assert all("needs 500: hour not scored" in n for n in result.notes), result.notes
    assert _rows(fresh_database, "isolation_forest") == []


def _comparable(url: str) -> list[tuple[Any, ...]]:
    return [(*r[:9], json.dumps(r[9], sort_keys=True), json.dumps(r[10], sort_keys=True))
            for r in _rows(url)]


def test_twelve_micro_batches_over_a_growing_lake_equal_one_hourly_run(
        tmp_path: Path, full_lake: Lake, streams: tuple[dict[str, pa.Table], list[Any]],
        new_database: Callable[[], str]) -> None:
    tables, _labels = streams
    rules = load_rules()
    batches, hourly = new_database(), new_database()
    for url in (batches, hourly):
        migrate(url)

    growing = Lake(tmp_path.as_uri())
    offsets: dict[str, int] = {}
    _land(growing, tables, HOUR - timedelta(hours=2), HOUR, offsets)  # the history
    with psycopg.connect(batches) as conn:
        for k in range(12):
            start = HOUR + k * SLICE
            landed = _land(growing, tables, start, start + SLICE, offsets)
            detect_recent(growing, rules, conn, landed)
        trained = conn.execute("SELECT count(*) FROM detector_models").fetchone()
    assert trained == (2,), "one model per rule for the hour, trained once, then reused"
    with psycopg.connect(hourly) as conn:
        detect_hour(full_lake, rules, conn, HOUR)
        again = detect_hour(full_lake, rules, conn, HOUR)
    assert again.written == 0 and again.removed == 0  # idempotent, models retrained alike
    hourly_rows = _comparable(hourly)
    assert any(r[2] == "isolation_forest" for r in hourly_rows)
    assert _comparable(batches) == hourly_rows


def test_the_likelihood_detector_runs_in_the_pipeline_when_enabled(
        full_lake: Lake, streams: tuple[dict[str, pa.Table], list[Any]],
        fresh_database: str) -> None:
    # Shipped disabled; switched on, the hourly path runs it from the lake into Postgres
    # with its version, and micro-batches over the hour leave the same rows.
    rule = dataclasses.replace(
        {r.name: r for r in load_rules(include_disabled=True)}["cpu_likelihood"], enabled=True)
    _tables, labels = streams
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        detect_hour(full_lake, [rule], conn, HOUR)
    hourly = _rows(fresh_database, "anomaly_likelihood")
    creep = next(label for label in labels if label.scenario == "cpu_creep")
    assert any(r[5] == creep.entity for r in hourly), "the CPU creep no threshold sees"
    assert {(r[1], r[3], r[4]) for r in hourly} == {("cpu_likelihood", "likelihood-1", "info")}
    with psycopg.connect(fresh_database) as conn:
        conn.execute("DELETE FROM anomaly_events")
        start = HOUR
        while start < HOUR + timedelta(hours=1):
            end = start + SLICE
            detect_recent(full_lake, [rule], conn, {"metrics": (start, end - timedelta(
                microseconds=1))})
            start = end
    assert _rows(fresh_database, "anomaly_likelihood") == hourly


def _models(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT rule, hour, trained_at FROM detector_models "
                            "ORDER BY rule, hour").fetchall()


def test_an_ingest_run_trains_its_models_without_holding_up_other_detections(
        full_lake: Lake, fresh_database: str) -> None:
    """Training reads hours of history: it happens before the run takes the detection lock,
    so the runs queued behind it never wait for it (they wait for detections only)."""
    migrate(fresh_database)
    landed = {topic: (HOUR, HOUR + timedelta(minutes=4)) for topic in RATES}

    with detection_behind_the_lock(fresh_database, lambda conn: detect_recent(
            full_lake, load_rules(), conn, landed)) as held:
        wait_until(lambda: len(_models(fresh_database)) >= 2, 120)
        trained = _models(fresh_database)
    assert [(rule, hour) for rule, hour, _at in trained] == [
        ("metrics_isolation_forest", HOUR), ("transactions_isolation_forest", HOUR)], \
        "the models were not trained while another detection held the lock"
    assert not held.worker.is_alive() and held.outcome["result"].notes == ()


def test_the_schedule_trains_the_next_hours_models_before_it_begins(
        full_lake: Lake, fresh_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from assets.anomalies import train_next_hour_models
    from orchestration.definitions import defs

    migrate(fresh_database)
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.setenv("VIGIL_LAKE_URL", full_lake.url)
    request = train_next_hour_models(dg.build_schedule_context(
        scheduled_execution_time=HOUR - timedelta(minutes=5)))
    assert isinstance(request, dg.RunRequest)
    job = defs.resolve_job_def("train_hour_models")
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(run_config=request.run_config, instance=instance).success
        ahead = _models(fresh_database)
        assert [(rule, hour) for rule, hour, _at in ahead] == [
            ("metrics_isolation_forest", HOUR), ("transactions_isolation_forest", HOUR)]

        # The hour's ingest runs then score with those models: none is trained again.
        with psycopg.connect(fresh_database) as conn:
            detect_recent(full_lake, load_rules(), conn,
                          {topic: (HOUR, HOUR + timedelta(minutes=59)) for topic in RATES})
        assert _models(fresh_database) == ahead
        assert _rows(fresh_database, "isolation_forest"), "the hour was scored"

        failed = job.execute_in_process(
            run_config={"ops": {"train_forest_models": {"config": {"hour": "7 o'clock"}}}},
            instance=instance, raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    assert "hour \"7 o'clock\" is not an ISO 8601 time" in str(failure.step_failure_data.error)
