"""Detect hours from a real lake into a real Postgres: scenarios found, idempotent, rebuildable."""

from __future__ import annotations

import dataclasses
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from psycopg.types.json import Jsonb

from tests.integration.lock_helpers import detection_behind_the_lock, wait_until
from vigil.detect import carry
from vigil.detect.engine import anomalies, epoch_us, floor_to
from vigil.detect.hours import (
    DETECTION_LOCK,
    detect_hour,
    detect_recent,
    detection_lock,
    rule_details,
)
from vigil.detect.past_cache import PastCache
from vigil.detect.recent_rows import RecentRows
from vigil.detect.rules import load_rules
from vigil.generate import StreamSpec, SyntheticStream, resolve_scenarios
from vigil.ingest import OffsetRange, land_offset_ranges, ranges_since
from vigil.kafka import high_watermarks
from vigil.lake import Lake, file_name, floor_hour, hour_dir, raw_schema
from vigil.migrate import migrate
from vigil.produce import EventSender, produce_stream
from vigil.scenario_score import CAUGHT_BY
from vigil.settings import TOPICS, Settings
from vigil.store import anomaly_rows, replace_windows

THRESHOLD_SCENARIOS = CAUGHT_BY  # scenario -> the rule that must catch it


@pytest.fixture(scope="module")
def produced(stack: Settings) -> tuple[list[OffsetRange], datetime, list[Any]]:
    """An hour of traffic with every scenario, produced through Kafka: its offset ranges."""
    start = floor_hour(datetime.now(UTC)) - timedelta(hours=3)
    spec = StreamSpec(seed=17, start=start, rates={"logs": 25.0, "metrics": 15.0,
                                                   "transactions": 15.0},
                      scenarios=resolve_scenarios(["all"]), horizon=3600)
    stream = SyntheticStream(spec)
    before = high_watermarks(stack.kafka_bootstrap, TOPICS)
    produce_stream(EventSender(stack.kafka_bootstrap), stream, list(TOPICS), 3600, None,
                   lambda _labels: None)
    return ranges_since(stack.kafka_bootstrap, before, TOPICS), start, stream.labels(0)


@pytest.fixture(scope="module")
def landed(stack: Settings, tmp_path_factory: pytest.TempPathFactory,
           produced: tuple[list[OffsetRange], datetime, list[Any]]
           ) -> tuple[Lake, datetime, list[Any]]:
    """That hour landed in one go."""
    ranges, start, labels = produced
    lake = Lake(tmp_path_factory.mktemp("detect-lake").as_uri())
    land_offset_ranges(lake, stack.kafka_bootstrap, ranges, datetime.now(UTC))
    return lake, start, labels


def _table(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, timestamp, alert_type, alert_level, alert_title, "
                            "entity, window_start, window_end, metrics, evidence, updated_at "
                            "FROM anomaly_events ORDER BY id").fetchall()


def test_every_threshold_scenario_becomes_an_anomaly(landed: tuple[Lake, datetime, list[Any]],
                                                     fresh_database: str) -> None:
    lake, hour, labels = landed
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        result = detect_hour(lake, load_rules(), conn, hour)
    assert result.events > 100_000
    rows = _table(fresh_database)
    for label in labels:
        rule = THRESHOLD_SCENARIOS.get(label.scenario)
        if rule is None:
            continue
        hits = [r for r in rows if r[2] == rule and label.entity in r[5]]
        assert hits, (label.scenario, label.entity)
        assert any(label.start - timedelta(minutes=1) <= r[1] <= label.end + timedelta(
            minutes=1) for r in hits), (label.scenario, [r[1] for r in hits])
    scenario_entities = {label.entity for label in labels}
    unexplained = [r for r in rows if not any(e in r[5] for e in scenario_entities)]
    assert unexplained == [], "the baseline raises no anomalies of the fixed rules"
    critical = {r[2] for r in rows if r[3] == "critical"}
    assert critical <= {"error_spike", "cpu_and_latency", "large_amount"}
    sample = next(r for r in rows if r[2] == "error_spike")
    assert sample[4].endswith("(threshold 20)")
    assert set(sample[9]) == {"first", "last"}  # evidence: Kafka coordinates


def test_detecting_an_hour_twice_is_a_no_op_and_deleted_rows_come_back(
        landed: tuple[Lake, datetime, list[Any]], fresh_database: str) -> None:
    lake, hour, _labels = landed
    migrate(fresh_database)
    rules = load_rules()
    with psycopg.connect(fresh_database) as conn:
        detect_hour(lake, rules, conn, hour)
    first = _table(fresh_database)
    assert first
    with psycopg.connect(fresh_database) as conn:
        again = detect_hour(lake, rules, conn, hour)
    assert again.written == 0 and again.removed == 0
    assert _table(fresh_database) == first  # not even updated_at moved
    with psycopg.connect(fresh_database) as conn:
        conn.execute("DELETE FROM anomaly_events")
    with psycopg.connect(fresh_database) as conn:
        detect_hour(lake, rules, conn, hour)
    rebuilt = _table(fresh_database)
    assert [r[:10] for r in rebuilt] == [r[:10] for r in first]


def test_a_rule_removed_from_the_file_takes_its_rows_with_it(
        landed: tuple[Lake, datetime, list[Any]], fresh_database: str, tmp_path: Path) -> None:
    lake, hour, _labels = landed
    migrate(fresh_database)
    rules = load_rules()
    with psycopg.connect(fresh_database) as conn:
        detect_hour(lake, rules, conn, hour)
        kept = [r for r in rules if r.name != "large_amount"]
        result = detect_hour(lake, kept, conn, hour)
    assert result.removed >= 1
    assert not [r for r in _table(fresh_database) if r[2] == "large_amount"]


def test_dagster_partition_run_and_the_reprocessing_schedule(
        landed: tuple[Lake, datetime, list[Any]], fresh_database: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from assets.anomalies import reprocess_recent_hours
    from orchestration.definitions import defs

    lake, hour, _labels = landed
    migrate(fresh_database)
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.setenv("VIGIL_LAKE_URL", lake.url)
    key = hour.strftime("%Y-%m-%d-%H:%M")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("detect_hours").execute_in_process(
            partition_key=key, instance=instance)
        assert result.success
        (materialization,) = result.asset_materializations_for_node("anomaly_events")
        assert materialization.partition == key
        assert materialization.metadata["anomalies"].value == len(_table(fresh_database)) > 0

    context = dg.build_schedule_context(
        scheduled_execution_time=hour + timedelta(hours=2, minutes=15))
    requests = reprocess_recent_hours(context)
    assert isinstance(requests, list)
    # The three complete hours before the one in progress (hour + 2 h), which every ingest
    # run detects as it lands.
    assert [r.partition_key for r in requests] == [
        (hour + timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in (-1, 0, 1)]
    assert len({r.run_key for r in requests}) == 3


@pytest.mark.parametrize("kept", [False, True],
                         ids=["lake-only", "pasts-kept-pairs-detected-out-of-order"])
def test_fifty_small_ingest_runs_leave_the_rows_of_one_hourly_run(
        stack: Settings, produced: tuple[list[OffsetRange], datetime, list[Any]],
        landed: tuple[Lake, datetime, list[Any]], fresh_database: str,
        tmp_path: Path, kept: bool) -> None:
    """The ingest path: land a fiftieth of every partition's range, detect what it touched;
    fifty times over a growing lake. The table ends as one detection of the hour leaves it,
    whether the pasts are read from the lake every run or kept between runs: the long ones
    of the entities near firing (past_cache.py), the window's of every entity in the batch
    (recent_rows.py). The second variant also lands two batches at a time and detects the
    later one first, as runs in flight taking the lock out of turn do."""
    ranges, hour, _labels = produced
    rules = load_rules()
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        detect_hour(landed[0], rules, conn, hour)
    whole = _table(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        conn.execute("DELETE FROM anomaly_events")

    lake = Lake((tmp_path / "growing").as_uri())
    cache = PastCache(tmp_path / "pasts", lake.url) if kept else None
    recent = RecentRows(tmp_path / "recent", lake.url) if kept else None
    runs = 50

    def land(k: int) -> dict[str, tuple[datetime, datetime]]:
        chunk = [OffsetRange(r.topic, r.partition,
                             r.start + (r.end - r.start) * k // runs,
                             r.start + (r.end - r.start) * (k + 1) // runs) for r in ranges]
        report = land_offset_ranges(lake, stack.kafka_bootstrap, chunk, datetime.now(UTC))
        return {t: (x.first_event, x.last_event) for t, x in report.topics.items()
                if x.first_event is not None and x.last_event is not None}

    recomputed = continued = considered = reopened = resumed = carried_later = 0
    landed_spans: dict[int, dict[str, tuple[datetime, datetime]]] = {}
    order = [k ^ 1 for k in range(runs)] if kept else list(range(runs))  # 1, 0, 3, 2, ...
    for k in order:
        for j in range(max(landed_spans, default=-1) + 1, max(k, k ^ 1 if kept else k) + 1):
            landed_spans[j] = land(j)
        with psycopg.connect(fresh_database) as conn:
            result = detect_recent(lake, rules, conn, landed_spans[k], cache, recent)
        # Only the buckets the batch touched are recomputed, never the whole hour.
        widest = max(end - start for start, end in result.windows.values())
        assert widest < timedelta(minutes=40)
        recomputed += result.anomalies
        continued += sum(result.continued.values())
        considered += len(result.continued)
        reopened += sum(result.reopened.values())
        resumed += sum(result.resumed.values())
        carried_later += result.why_whole.get(carry.CARRIED_LATER, 0)
    incremental = _table(fresh_database)
    assert recomputed > len(incremental) > 0  # episodes were updated in place, run to run
    # Most runs continued the stored anomalies rather than recomputing their buckets.
    assert continued > considered * 0.7, (continued, considered)
    # Batches overlap in event time (partitions drift): some anomalies were still open at a
    # batch's first event, and only their entities were recomputed; most of them from the
    # carry an earlier run stored with the row, not from their bucket's start.
    assert reopened >= resumed > reopened / 2, (reopened, resumed)
    # Detected out of turn, a run finds the carry of the batch after it, and resumes from
    # the checkpoint before that one instead (carry.py): rarely none is early enough.
    assert carried_later <= reopened / 10, (carried_later, reopened)
    assert [r[:10] for r in incremental] == [r[:10] for r in whole]
    if cache is not None and recent is not None:  # later runs read the pasts they kept
        assert cache.hits > cache.misses > 0, (cache.hits, cache.misses)
        # Entities new to the kept rows joined them, read from the files that may hold
        # them: presence filters (built before the lock) ruled the others out.
        assert cache.presence is not None
        assert cache.added > 0 and cache.presence.indexed > 0, (cache.added, cache.presence)
        assert cache.presence.skipped > cache.presence.opened, (
            cache.presence.skipped, cache.presence.opened)
        assert recent.hits > recent.misses > 0, (recent.hits, recent.misses)


def _lock_is_free(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as probe:
        row = probe.execute("SELECT pg_try_advisory_lock(%s)", (DETECTION_LOCK,)).fetchone()
        return bool(row and row[0])


def test_detections_take_turns(landed: tuple[Lake, datetime, list[Any]],
                               fresh_database: str) -> None:
    """While another detection holds the lock, an ingest run's detection waits for it before
    reading the lake or writing anything, then writes once it is free, and frees it."""
    lake, hour, _labels = landed
    migrate(fresh_database)
    spans = {topic: (hour, hour + timedelta(minutes=59)) for topic in TOPICS}

    with detection_behind_the_lock(fresh_database, lambda conn: detect_recent(
            lake, load_rules(), conn, spans)) as held:
        assert wait_until(held.waiting, 30), "the detection did not wait for the lock"
        assert held.worker.is_alive() and _table(fresh_database) == []
        time.sleep(0.5)
    assert not held.worker.is_alive()
    assert held.outcome["result"].anomalies > 0
    # The run says where its time went: the wait is told apart from the work.
    seconds = held.outcome["result"].seconds
    assert seconds["lock_wait"] >= 0.5 and 0 < seconds["detect"] < seconds["lock_wait"] + 60
    assert set(seconds) == {"models", "lock_wait", "detect"}
    assert len(_table(fresh_database)) == held.outcome["result"].anomalies
    assert _lock_is_free(fresh_database)


def test_a_failed_detection_frees_the_lock_and_keeps_nothing_half_written(
        fresh_database: str) -> None:
    migrate(fresh_database)

    def fail_half_way(conn: psycopg.Connection[Any]) -> None:
        with detection_lock(conn):
            conn.execute("DELETE FROM schema_migrations")  # not committed: rolled back
            raise RuntimeError("the lake went away")

    with psycopg.connect(fresh_database) as conn:
        with pytest.raises(RuntimeError, match="lake went away"):
            fail_half_way(conn)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() != (0,)
    assert _lock_is_free(fresh_database)


def test_reopened_anomalies_not_found_again_are_dropped(fresh_database: str) -> None:
    """replace_windows: `stale` ids (anomalies recomputed for their entities only) are kept
    when found again and removed when not; other rows of the window are left alone."""
    rule = next(r for r in load_rules() if r.name == "error_spike")
    start = floor_hour(datetime.now(UTC))
    fired = pd.DataFrame({"service": ["api", "web", "db"], "_partition": [0] * 3,
                          "_offset": [1, 2, 3], "value": [20.0] * 3,
                          "t": [epoch_us(start + timedelta(seconds=s)) for s in (5, 6, 7)]})
    found = anomalies(rule, fired, start, start + timedelta(minutes=10))
    rows = {r["entity"]: r for r in anomaly_rows(found, {rule.name: rule_details(rule)})}
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        replace_windows(conn, rows.values(), {})
        # api and web were reopened; api was found again, web was not; db was not reopened.
        _, removed = replace_windows(conn, [rows["api"]], {},
                                           stale=[rows["api"]["id"], rows["web"]["id"]])
        left = [r[0] for r in conn.execute("SELECT entity FROM anomaly_events ORDER BY 1")]
    assert removed == 1 and left == ["api", "db"]  # an unchanged upsert writes nothing


def test_a_rows_carry_is_kept_current_without_counting_as_a_change(fresh_database: str
                                                                    ) -> None:
    """Each run stores its carry (carry.py) with every row it writes. A row whose content
    is unchanged still takes the new carry, but is not counted as written and keeps its
    updated_at (nothing is sent again); a whole-hour detection's rows clear it."""
    rule = next(r for r in load_rules() if r.name == "error_spike")
    start = floor_hour(datetime.now(UTC))
    fired = pd.DataFrame({"service": ["api", "api"], "_partition": [0] * 2,
                          "_offset": [1, 2], "value": [20.0, 30.0],
                          "t": [epoch_us(start + timedelta(seconds=s)) for s in (5, 9)]})
    window = (start, start + timedelta(minutes=10))
    details = {rule.name: rule_details(rule)}

    def write(until: datetime | None) -> tuple[int, Any, Any]:
        rows = anomaly_rows(carry.fold(rule, fired, window, None, until), details)
        with psycopg.connect(fresh_database) as conn:
            written, _ = replace_windows(conn, rows, {})
            row = conn.execute("SELECT carry, updated_at FROM anomaly_events").fetchone()
        assert row is not None
        return written, row[0], row[1]

    migrate(fresh_database)
    written, (first,), updated = write(start + timedelta(seconds=7))
    assert written == 1
    assert first["until"] == epoch_us(start + timedelta(seconds=7))
    assert (first["points"], first["peak"]) == (1, 20.0)  # the firing at :05 alone
    written, (later,), updated_again = write(start + timedelta(seconds=20))
    assert written == 0 and updated_again == updated
    assert (later["until"], later["points"], later["peak"]) == (
        epoch_us(start + timedelta(seconds=20)), 2, 30.0)
    written, cleared, _ = write(None)
    assert written == 0 and cleared is None


def _copy(lake: Lake, tmp_path: Path) -> Lake:
    """The module's lake copied: these tests land more events into it."""
    root = tmp_path / "lake"
    shutil.copytree(Path(lake.root), root)
    return Lake(root.as_uri())


def _land_late_transaction(lake: Lake, at: datetime, user: str, offset: int = 0) -> None:
    """One large transaction landed into an hour already detected (a late event), at
    `offset` of a partition of its own."""
    table = pa.table({
        "event_id": [f"late-{offset}"], "timestamp": [at], "transaction_id": [f"t-{offset}"],
        "user_id": [user], "amount": [50_000.0], "currency": ["EUR"], "merchant_id": ["m1"],
        "country": ["DE"], "payment_method": ["card"], "status": ["approved"],
        "merchant_category": [None], "ip": [None], "_partition": [9], "_offset": [offset],
        "_kafka_timestamp": [at], "_ingested_at": [at]}, schema=raw_schema("transactions"))
    stamp = epoch_us(at)
    lake.write(f"{hour_dir('raw', 'transactions', at)}/"
               f"{file_name('transactions', 9, offset, (stamp, stamp))}", table)


def _late_rows(url: str, user: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id FROM anomaly_events WHERE rule = 'large_amount' "
                            "AND user_id = %s", (user,)).fetchall()


def test_the_schedule_skips_an_hour_whose_lake_files_and_rules_did_not_change(
        landed: tuple[Lake, datetime, list[Any]], fresh_database: str,
        tmp_path: Path) -> None:
    lake, hour, _labels = landed
    lake = _copy(lake, tmp_path)
    rules = load_rules()
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        first = detect_hour(lake, rules, conn, hour, unless_unchanged=True)
        assert first.unchanged_since is None and first.anomalies > 0  # never detected whole
        rows = _table(fresh_database)

        again = detect_hour(lake, rules, conn, hour, unless_unchanged=True)
        assert again.unchanged_since is not None, "the same files and rules: not read again"
        assert (again.events, again.anomalies) == (first.events, first.anomalies)
        assert _table(fresh_database) == rows

        edited = [dataclasses.replace(r, threshold=20_000.0) if r.name == "large_amount"
                  else r for r in rules]
        assert detect_hour(lake, edited, conn, hour,
                           unless_unchanged=True).unchanged_since is None, "a rule edited"

        _land_late_transaction(lake, hour + timedelta(minutes=30), "late-user")
        late = detect_hour(lake, rules, conn, hour, unless_unchanged=True)
        assert late.unchanged_since is None, "a late event landed in the hour"
        assert late.events == first.events + 1
        assert _late_rows(fresh_database, "late-user")
        # A backfill (no tag) recomputes whatever changed.
        assert detect_hour(lake, rules, conn, hour).unchanged_since is None


def test_an_hour_is_written_in_turn_leaving_what_landed_meanwhile_to_its_ingest_run(
        landed: tuple[Lake, datetime, list[Any]], fresh_database: str,
        tmp_path: Path) -> None:
    """An hour's detection reads and computes while ingest runs keep detecting, and holds
    the lock only to write, never recomputing there: a topic's buckets from the first event
    landed meanwhile are left to the ingest run that landed it (which detects them in
    turn); every bucket before, and the other topics' whole hour, are written."""
    lake, hour, _labels = landed
    lake = _copy(lake, tmp_path)
    rules = load_rules()
    migrate(fresh_database)
    _land_late_transaction(lake, hour + timedelta(minutes=1), "early-user", offset=1)
    with psycopg.connect(fresh_database) as conn:
        first = detect_hour(lake, rules, conn, hour)  # what ingest runs had detected so far
    whole = {row[0]: row for row in _table(fresh_database)}
    step = {r.name: timedelta(seconds=r.realert) for r in rules if r.topic == "transactions"}
    paid = [r for r in whole.values() if r[2] in step]
    # The late event lands in the bucket of the hour's last transactions anomaly; the
    # early user's large amount is in a bucket before it.
    late_at = max(r[6] for r in paid)
    until = {r.name: max(hour, floor_to(late_at, step[r.name])) if r.name in step
             else hour + timedelta(hours=1) for r in rules}
    with psycopg.connect(fresh_database) as conn, conn.transaction():
        # Rows the detection must write (lost here) and rows it must leave (marked).
        conn.execute("DELETE FROM anomaly_events WHERE alert_type = ANY(%s) "
                     "AND window_start < (%s::jsonb ->> alert_type)::timestamptz",
                     (list(until), Jsonb({k: v.isoformat() for k, v in until.items()})))
        marked = conn.execute("UPDATE anomaly_events SET alert_title = 'left alone' "
                              "WHERE window_start >= (%s::jsonb ->> alert_type)::timestamptz",
                              (Jsonb({k: v.isoformat() for k, v in until.items()}),)).rowcount
    assert marked > 0

    with detection_behind_the_lock(fresh_database, lambda conn: detect_hour(
            lake, rules, conn, hour)) as held:
        assert wait_until(held.waiting, 120), "the hour's detection did not reach the lock"
        # It has read the hour by now; an ingest run lands a late event into it.
        _land_late_transaction(lake, late_at, "landed-meanwhile")
    assert not held.worker.is_alive()
    result = held.outcome["result"]
    assert result.left_to_ingest == {"transactions": late_at}
    assert result.events == first.events, "it counts what it read, before the late event"
    after = {row[0]: row for row in _table(fresh_database)}
    assert not _late_rows(fresh_database, "landed-meanwhile"), "recomputed under the lock"
    before_cut = {i for i, r in whole.items() if r[6] < until[r[2]]}
    assert any(whole[i][2] in step for i in before_cut)
    assert all(after[i][:10] == whole[i][:10] for i in before_cut), \
        "the buckets before the late event, and the other topics, written whole"
    assert sum(r[4] == "left alone" for r in after.values()) == marked, \
        "the buckets from the late event on left to the ingest run"
    assert _lock_is_free(fresh_database)

    # That ingest run detects what it landed, in turn.
    with psycopg.connect(fresh_database) as conn:
        detect_recent(lake, rules, conn, {"transactions": (late_at, late_at)})
    assert _late_rows(fresh_database, "landed-meanwhile")
