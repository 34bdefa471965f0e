from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vigil.events import METRICS, TRANSACTIONS
from vigil.replay import ReplayError, paced_batches, plan_replay
from vigil.settings import PROJECT_ROOT

NAB = PROJECT_ROOT.parent / "shared" / "datasets" / "nab" / "data"


def test_nab_csv_becomes_one_metrics_event_per_row_with_original_times() -> None:
    path = NAB / "realAWSCloudwatch" / "ec2_cpu_utilization_825cc2.csv"
    lines = path.read_text().splitlines()[1:]
    plan = plan_replay(path, METRICS, {"value": "cpu_percent"}, {"service": "ec2"})
    assert plan.bad == []
    assert plan.table.num_rows == plan.rows == len(lines)
    first_time, first_value = lines[0].split(",")
    got = plan.table.slice(0, 1).to_pylist()[0]
    assert got["timestamp"] == dt.datetime.fromisoformat(first_time).replace(tzinfo=dt.UTC)
    assert got["cpu_percent"] == pytest.approx(float(first_value))
    assert got["host"] == "ec2" and got["service"] == "ec2"
    assert set(plan.filled) == {"event_id", "host"}
    again = plan_replay(path, METRICS, {"value": "cpu_percent"}, {"service": "ec2"})
    assert again.table.column("event_id").equals(plan.table.column("event_id"))


def test_csv_rows_that_do_not_fit_are_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    path.write_text("timestamp,value\n2026-01-01 00:00:00,10\n2026-01-01 00:05:00,high\n"
                    "not-a-time,12\n2026-01-01 00:15:00,130\n2026-01-01 00:20:00,14\n"
                    "2026-01-01 00:25:00,n/a\n")
    plan = plan_replay(path, METRICS, {"value": "cpu_percent"}, {"service": "s"})
    assert plan.table.column("cpu_percent").to_pylist() == [10.0, 14.0]
    assert [(b.line, b.reason.split(" (got")[0]) for b in plan.bad] == [
        ("line 3", "field 'cpu_percent': expected a number, got a string"),
        ("line 4", "field 'timestamp' must be an ISO 8601 time"),
        ("line 5", "field 'cpu_percent' must be a percentage 0-100"),
        ("line 7", "no measurement: at least one of cpu_percent, memory_percent, latency_ms, "
                   "requests_per_sec, error_rate is required"),
    ]


def test_ndjson_and_parquet(tmp_path: Path) -> None:
    rows = [{"ts": f"2026-01-01T00:0{i}:00Z", "user": f"u{i}", "amount": 10.0 * (i + 1),
             "currency": "EUR", "merchant_id": "m1", "country": "DE",
             "payment_method": "card", "status": "approved", "transaction_id": f"t{i}"}
            for i in range(3)]
    nd = tmp_path / "tx.ndjson"
    nd.write_text(json.dumps(rows[0]) + "\n\n{broken\n" + json.dumps(rows[1]) + "\n")
    plan = plan_replay(nd, TRANSACTIONS, {"ts": "timestamp", "user": "user_id"}, {})
    assert plan.table.column("user_id").to_pylist() == ["u0", "u1"]
    assert [b.line for b in plan.bad] == ["line 3"]
    assert plan.bad[0].reason.startswith("malformed JSON")
    pq_path = tmp_path / "tx.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pq_path)
    plan = plan_replay(pq_path, TRANSACTIONS, {"ts": "timestamp", "user": "user_id"}, {})
    assert plan.table.num_rows == 3 and plan.bad == []


def test_mapping_mistakes_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("timestamp,value\n2026-01-01 00:00:00,1\n")
    with pytest.raises(ReplayError, match="lacks; its columns are: timestamp, value"):
        plan_replay(path, METRICS, {"cpu": "cpu_percent"}, {})
    with pytest.raises(ReplayError, match="cpu is not a metrics field"):
        plan_replay(path, METRICS, {"value": "cpu"}, {})
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(ReplayError, match=r"unsupported file type '\.xlsx'"):
        plan_replay(tmp_path / "x.xlsx", METRICS, {}, {})


def test_pacing_releases_rows_by_their_own_times() -> None:
    times = pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=s)
                      for s in (0, 0, 60, 120)], pa.timestamp("us", tz="UTC"))
    table = pa.table({"timestamp": times, "x": [1, 2, 3, 4]})
    chunks = [c.column("x").to_pylist() for c in paced_batches(table, speed=600.0)]
    assert chunks == [[1, 2], [3], [4]]  # 60 s of data time = 0.1 s at 600x
    assert [c.num_rows for c in paced_batches(table, None, batch=3)] == [3, 1]
