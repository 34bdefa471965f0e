"""Sensor -> ingest runs -> Parquet: exact, effectively-once landing, shown by breaking it."""

from __future__ import annotations

import json
import os
import pstats
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from orchestration.definitions import defs
from tests.conftest import stack_env
from tests.integration.landing_helpers import (
    MALFORMED,
    drain,
    file_hashes,
    produce_events,
    produce_malformed,
    produce_ranges,
    tick,
)
from vigil import services
from vigil.events import EVENT_TYPES, encode_batch, encode_keys
from vigil.generate import StreamSpec, SyntheticStream
from vigil.ingest import OffsetRange, land_offset_ranges
from vigil.kafka import committed_offsets, ensure_topics, watermarks
from vigil.lake import TEMPORARY_GRACE, Lake, floor_hour
from vigil.migrate import migrate
from vigil.produce import EventSender
from vigil.settings import PROJECT_ROOT, TOPICS, Settings


@pytest.fixture
def lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "lake"
    monkeypatch.setenv("VIGIL_LAKE_URL", root.as_uri())
    monkeypatch.setenv("VIGIL_INGEST_START", "latest")  # ignore what other tests produced
    monkeypatch.setenv("VIGIL_DEPLOYMENT", f"test-{uuid.uuid4().hex[:8]}")
    return root


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _all_raw(lake: Lake) -> dict[str, pa.Table]:
    return {topic: lake.read_all("raw", topic) for topic in TOPICS}


def test_sensor_runs_land_every_good_event_once_and_quarantine_the_rest(
        stack: Settings, lake_dir: Path, instance: dg.DagsterInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_INGEST_MAX_RECORDS", "2500")  # several runs, partial ranges
    first = tick(instance, None)
    assert isinstance(first, dg.SensorResult) and not first.run_requests
    produced = produce_events(stack.kafka_bootstrap, seconds=100, rate=30, seed=21)
    produce_malformed(stack.kafka_bootstrap)
    cursor, runs = drain(instance, first.cursor)
    assert len(runs) >= 4

    lake = Lake(lake_dir.as_uri())
    raw = _all_raw(lake)
    for topic in TOPICS:
        table = raw[topic]
        assert table.num_rows == produced[topic], topic
        coordinates = pc.binary_join_element_wise(
            pc.cast(table.column("_partition"), pa.string()),
            pc.cast(table.column("_offset"), pa.string()), ":")
        assert len(pc.unique(coordinates)) == table.num_rows, "duplicate (partition, offset)"
        assert len(pc.unique(table.column("event_id"))) == table.num_rows
        assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    quarantine = pa.concat_tables([lake.read_all("quarantine", t) for t in TOPICS])
    assert quarantine.num_rows == len(MALFORMED)
    got = sorted(zip(quarantine.column("topic").to_pylist(),
                     quarantine.column("raw").to_pylist(),
                     quarantine.column("reason").to_pylist(), strict=True))
    for topic, raw_bytes, reason in MALFORMED:
        match = [g for g in got if g[0] == topic and g[1] == raw_bytes]
        assert match and reason in match[0][2], (topic, raw_bytes, match)

    # The deployment's consumer group sits exactly at the landed cursor.
    settings = Settings.from_env()
    marks = {(t, p): hi for t in TOPICS
             for p, (_lo, hi) in watermarks(settings.kafka_bootstrap, t).items()}
    committed = committed_offsets(settings.kafka_bootstrap, settings.deployment, marks)
    assert committed == marks
    assert json.loads(cursor or "{}") == {t: {str(p): o for (tt, p), o in marks.items()
                                              if tt == t} for t in TOPICS}

    # `vigil status` reads the same group: nothing left to land.
    status = subprocess.run([sys.executable, "-m", "vigil.cli", "status"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    lag_rows = [line.split() for line in status.stdout.splitlines()
                if line.split() and line.split()[0] in TOPICS]
    assert len(lag_rows) == len(marks)
    assert all(row[-1] == "0" for row in lag_rows)
    assert status.stdout.splitlines()[-1].split() == ["total", "0"]

    # The Dagster UI sees hourly materialisations whose rows add up to what landed.
    for topic in TOPICS:
        records = instance.fetch_materializations(dg.AssetKey(f"raw_{topic}"),
                                                  limit=1000).records
        assert records, topic
        rows = sum(int(r.asset_materialization.metadata["rows"].value)  # type: ignore
                   for r in records)
        assert rows == produced[topic]

    # Re-executing a finished run rewrites the same files with the same bytes.
    before = file_hashes(lake_dir)
    again = defs.resolve_job_def("ingest").execute_in_process(run_config=runs[0],
                                                              instance=instance)
    assert again.success
    assert file_hashes(lake_dir) == before
    # Its log says where detection's time went (bench/latency.py reads it back).
    (told,) = [e.user_message for e in instance.all_logs(again.run_id)
               if e.user_message.startswith("detection:")]
    assert re.search(r"; seconds: models \d+\.\d\d, lock_wait \d+\.\d\d, detect \d+\.\d\d, "
                     r"alerts \d+\.\d\d$", told), told
    assert {t: _all_raw(lake)[t].num_rows for t in TOPICS} == produced


_KILL_SCRIPT = """
import json, sys
from datetime import datetime
from vigil.ingest import OffsetRange, land_offset_ranges, ranges_since
from vigil.lake import Lake, floor_hour
from vigil.produce import EventSender
args = json.loads(sys.argv[1])
land_offset_ranges(Lake(args["lake"]), args["bootstrap"],
                   [OffsetRange(**r) for r in args["ranges"]],
                   datetime.fromisoformat(args["at"]))
"""


def test_sigkill_mid_write_leaves_no_readable_partial_and_a_rerun_is_exact(
        stack: Settings, tmp_path: Path) -> None:
    produced, ranges = produce_ranges(stack.kafka_bootstrap, seconds=20, rate=20_000, seed=33)
    lake_root = tmp_path / "lake"
    args = json.dumps({"lake": lake_root.as_uri(), "bootstrap": stack.kafka_bootstrap,
                       "ranges": [r.to_dict() for r in ranges],
                       "at": datetime.now(UTC).isoformat()})
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, args], cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(lake_root.rglob("*.parquet")):
        assert proc.poll() is None, "the landing finished before it could be killed"
        time.sleep(0.005)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    visible = list(lake_root.rglob("*.parquet"))
    assert visible, "the kill came after at least one file"
    for path in visible:
        if not path.name.startswith("."):
            pq.read_metadata(path)  # every visible data file is complete
    lake = Lake(lake_root.as_uri())
    assert sum(_all_raw(lake)[t].num_rows for t in TOPICS) < sum(produced.values())
    # The killed writer's temporaries, once older than any write could take, are a dead
    # writer's (younger ones may be a run in flight's, and are left).
    aged = time.time() - TEMPORARY_GRACE.total_seconds() - 60
    for leftover in lake_root.rglob(".*.tmp"):
        os.utime(leftover, (aged, aged))

    land_offset_ranges(lake, stack.kafka_bootstrap, ranges, datetime.now(UTC))
    raw = _all_raw(lake)
    assert {t: raw[t].num_rows for t in TOPICS} == produced
    assert not [p for p in lake_root.rglob("*.tmp")], "temporaries are cleaned on re-run"


def test_re_landing_files_named_before_they_carried_times_keeps_one_copy(
        stack: Settings, tmp_path: Path) -> None:
    produced, ranges = produce_ranges(stack.kafka_bootstrap, seconds=5, rate=2_000, seed=35)
    lake_root = tmp_path / "lake"
    lake = Lake(lake_root.as_uri())
    land_offset_ranges(lake, stack.kafka_bootstrap, ranges, datetime.now(UTC))
    named = list((lake_root / "raw").rglob("*.parquet"))
    assert named and all("+t" in p.name for p in named)
    for path in named:  # as an earlier version named them
        path.rename(path.with_name(path.name.split("+t")[0] + ".parquet"))

    land_offset_ranges(lake, stack.kafka_bootstrap, ranges, datetime.now(UTC))
    raw = _all_raw(lake)
    assert {t: raw[t].num_rows for t in TOPICS} == produced
    assert sorted(p.name for p in (lake_root / "raw").rglob("*.parquet")) == sorted(
        p.name for p in named)


def test_transactional_topic_lands_committed_records_only(stack: Settings,
                                                          tmp_path: Path) -> None:
    topic = "transactions"
    before = watermarks(stack.kafka_bootstrap, topic)
    stream = SyntheticStream(StreamSpec(5, datetime(2026, 1, 1, tzinfo=UTC), {topic: 100.0}))
    table = stream.slice(topic, 0)
    values = encode_batch(table, EVENT_TYPES[topic])
    keys = encode_keys(table, EVENT_TYPES[topic])
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap,
                         "transactional.id": f"test-{uuid.uuid4()}"})
    producer.init_transactions(30)
    committed_ids = []
    for lo, hi, commit in ((0, 40, True), (40, 70, False), (70, 100, True)):
        producer.begin_transaction()
        for value, key in zip(values[lo:hi], keys[lo:hi], strict=True):
            producer.produce(topic, value, key)
        if commit:
            producer.commit_transaction(30)
            committed_ids += table.column("event_id").to_pylist()[lo:hi]
        else:
            producer.flush(30)
            producer.abort_transaction(30)
    after = watermarks(stack.kafka_bootstrap, topic)
    ranges = [OffsetRange(topic, p, before[p][1], after[p][1]) for p in after]
    assert sum(r.end - r.start for r in ranges) > 100, "markers and aborted records take offsets"
    lake = Lake((tmp_path / "lake").as_uri())
    report = land_offset_ranges(lake, stack.kafka_bootstrap, ranges, datetime.now(UTC))
    landed = lake.read_all("raw", topic)
    assert report.rows == landed.num_rows == 70
    assert sorted(landed.column("event_id").to_pylist()) == sorted(committed_ids)
    assert report.quarantined == 0


def test_broker_restart_between_ticks_loses_nothing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    instance: dg.DagsterInstance) -> None:
    env = stack_env(tmp_path / "private")
    for name in ("VIGIL_STATE_DIR", "VIGIL_CACHE_DIR", "VIGIL_KAFKA_PORT",
                 "VIGIL_KAFKA_CONTROLLER_PORT", "POSTGRES_PORT"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("VIGIL_LAKE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("VIGIL_INGEST_MAX_RECORDS", "1500")
    settings = Settings.from_env()
    services.up(settings, report=lambda _line: None)
    migrate(settings.database_url)  # the ingest run detects into anomaly_events
    try:
        first = produce_events(settings.kafka_bootstrap, seconds=20, rate=20, seed=1)
        result = tick(instance, None)
        assert isinstance(result, dg.SensorResult) and result.run_requests
        cursor = result.cursor
        job = defs.resolve_job_def("ingest")
        assert job.execute_in_process(run_config=result.run_requests[0].run_config,
                                      instance=instance).success

        second = produce_events(settings.kafka_bootstrap, seconds=20, rate=20, seed=2)
        pending = tick(instance, cursor)
        assert isinstance(pending, dg.SensorResult) and pending.run_requests
        cursor = pending.cursor
        request = pending.run_requests[0]

        services.down(settings, only=["kafka"], report=lambda _line: None)
        down_tick = tick(instance, cursor)
        assert isinstance(down_tick, dg.SkipReason)
        assert "unreachable" in (down_tick.skip_message or "")
        # A run that starts while the broker is down waits for it and completes.
        outcome: list[bool] = []
        runner = threading.Thread(target=lambda: outcome.append(job.execute_in_process(
            run_config=request.run_config, instance=instance).success))
        runner.start()
        time.sleep(2)
        services.up(settings, report=lambda _line: None)
        runner.join(180)
        assert outcome == [True]

        # A partition added later is picked up from its start (earliest).
        ensure_topics(settings.kafka_bootstrap, ["logs"], settings.kafka_partitions + 1)
        extra = EventSender(settings.kafka_bootstrap)
        late = encode_batch(SyntheticStream(StreamSpec(
            9, floor_hour(datetime.now(UTC)), {"logs": 5.0})).slice("logs", 0), EVENT_TYPES["logs"])
        for value in late:
            extra.producer.produce("logs", value, partition=settings.kafka_partitions)
        assert extra.flush() == 0
        second["logs"] += len(late)

        cursor, _runs = drain(instance, cursor)
        raw = _all_raw(Lake((tmp_path / "lake").as_uri()))
        for topic in TOPICS:
            assert raw[topic].num_rows == first[topic] + second[topic], topic
            assert len(pc.unique(raw[topic].column("event_id"))) == raw[topic].num_rows
        new_partition = pc.equal(raw["logs"].column("_partition"), settings.kafka_partitions)
        assert pc.sum(new_partition).as_py() == len(late)
    finally:
        services.down(settings, report=lambda _line: None)


def test_sensor_backpressure_and_the_record_cap(
        stack: Settings, lake_dir: Path, instance: dg.DagsterInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_INGEST_MAX_IN_FLIGHT", "2")
    monkeypatch.setenv("VIGIL_INGEST_MAX_RECORDS", "100")
    start = tick(instance, None)
    assert isinstance(start, dg.SensorResult)
    produce_events(stack.kafka_bootstrap, seconds=10, rate=30, seed=12)

    # Two ingest runs in flight: the sensor waits and leaves the cursor alone.
    job = defs.resolve_job_def("ingest")
    for _ in range(2):
        instance.create_run_for_job(job, run_config={"ops": {"land_ranges": {"config": {
            "ranges": [], "requested_at": datetime.now(UTC).isoformat()}}}},
            status=dg.DagsterRunStatus.STARTED)
    waiting = tick(instance, start.cursor)
    assert isinstance(waiting, dg.SkipReason)
    assert "backpressure: 2 ingest runs queued or running" in (waiting.skip_message or "")
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        instance.report_run_failed(run)

    # The cap holds per run, shared across partitions.
    capped = tick(instance, start.cursor)
    assert isinstance(capped, dg.SensorResult) and capped.run_requests
    config = capped.run_requests[0].run_config["ops"]["land_ranges"]["config"]
    assert sum(r["end"] - r["start"] for r in config["ranges"]) == 100
    assert len(config["ranges"]) == 9


def test_profile_dir_gets_each_ingest_runs_detection_profile(
        stack: Settings, lake_dir: Path, instance: dg.DagsterInstance, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    monkeypatch.setenv("VIGIL_PROFILE_DIR", str(profiles))
    monkeypatch.setenv("VIGIL_INGEST_MAX_RECORDS", "200")
    start = tick(instance, None)
    assert isinstance(start, dg.SensorResult)
    produce_events(stack.kafka_bootstrap, seconds=4, rate=100, seed=31)
    _, configs = drain(instance, start.cursor)

    runs = instance.get_runs(dg.RunsFilter(job_name="ingest"))
    assert len(configs) >= 2 and len(runs) == len(configs)
    assert sorted(p.name for p in profiles.iterdir()) == sorted(
        f"detect-{run.run_id}.prof" for run in runs)
    for path in profiles.iterdir():
        timed = {name for (_file, _line, name) in pstats.Stats(str(path)).stats}  # type: ignore[attr-defined]
        assert {"detect_recent", "with_past"} <= timed, path.name
