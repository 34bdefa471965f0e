"""Every dashboard page under Streamlit's AppTest against a real Postgres seeded with known
rows (read as vigil_reader) and a lake holding one anomaly's raw events."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from tests.integration.seed import seeded_database
from vigil.lake import Lake, file_name, hour_dir, raw_schema
from vigil.migrate import migrate
from vigil.settings import PROJECT_ROOT, Settings

APP = str(PROJECT_ROOT / "dashboards" / "app.py")


@pytest.fixture(scope="module")
def seeded(stack: Settings, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Settings, list[dict[str, Any]]]]:
    # Seeded relative to when this module's tests run, not when the session collected them:
    # the pages count against the real clock, and minutes can pass before this module.
    now = datetime.now(UTC).replace(microsecond=0)
    with seeded_database(stack, now) as (settings, rows), \
            pytest.MonkeyPatch.context() as env:
        lake = tmp_path_factory.mktemp("dash-lake")
        _land_evidence(Lake(lake.as_uri()), _metrics_anomaly(rows))
        env.setenv("POSTGRES_DB", settings.postgres_db)
        env.setenv("VIGIL_LAKE_URL", lake.as_uri())
        yield settings, rows


def _metrics_anomaly(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in rows if r["alert_type"] == "latency_high")


def _land_evidence(lake: Lake, anomaly: dict[str, Any]) -> None:
    """Twenty samples of the anomaly's host around it, and ten of another host."""
    start = anomaly["window_start"] - timedelta(minutes=5)
    n = 30
    hosts = [anomaly["entity"]] * 20 + ["other-host"] * 10
    table = pa.table({
        "event_id": [f"e{i}" for i in range(n)],
        "timestamp": pa.array([start + timedelta(seconds=20 * i) for i in range(n)],
                              pa.timestamp("us", tz="UTC")),
        "service": ["payments-api"] * n, "host": hosts,
        "cpu_percent": np.linspace(20, 50, n), "memory_percent": [40.0] * n,
        "latency_ms": [1500.0 if i in (14, 15) else 100.0 for i in range(n)],
        "requests_per_sec": [10.0] * n, "error_rate": [0.0] * n, "region": ["eu"] * n,
        "_partition": pa.array([0] * n, pa.int32()), "_offset": pa.array(range(n), pa.int64()),
    })
    table = table.append_column("_kafka_timestamp", table.column("timestamp")) \
        .append_column("_ingested_at", table.column("timestamp"))
    for hour in sorted({t.replace(minute=0, second=0, microsecond=0)
                        for t in table.column("timestamp").to_pylist()}):
        mask = [t.replace(minute=0, second=0, microsecond=0) == hour
                for t in table.column("timestamp").to_pylist()]
        part = table.filter(pa.array(mask)).select(raw_schema("metrics").names) \
            .cast(raw_schema("metrics"))
        lake.write(f"{hour_dir('raw', 'metrics', hour)}/{file_name('metrics', 0, hour.minute)}",
                   part)


def page(name: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    if name != "overview":
        app.switch_page(f"views/{name}.py")
        app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metric_values(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def matches(app: AppTest) -> int:
    caption = next(c.value for c in app.caption if "anomalies match" in c.value)
    found = re.match(r"([\d,]+) anomalies match", caption)
    assert found, caption
    return int(found.group(1).replace(",", ""))


def test_overview_shows_the_seeded_counts(seeded: tuple[Settings, list[dict[str, Any]]]
                                          ) -> None:
    rows = seeded[1]
    app = page("overview")
    now = datetime.now(UTC)
    hour = [r for r in rows if r["timestamp"] >= now - timedelta(hours=1)]
    day = [r for r in rows if r["timestamp"] >= now - timedelta(days=1)]
    open_critical = [r for r in rows if r["alert_level"] == "critical"
                     and r["window_end"] >= now - timedelta(minutes=15)]
    shown = metric_values(app)
    assert {k: shown[k] for k in ("Anomalies, last hour", "Anomalies, last 24 h",
                                  "Critical now", "Critical, last hour")} == {
        "Anomalies, last hour": str(len(hour)), "Anomalies, last 24 h": str(len(day)),
        "Critical now": str(len(open_critical)),
        "Critical, last hour": str(sum(r["alert_level"] == "critical" for r in hour))}
    assert set(app.dataframe[0].value["id"]) == {r["id"] for r in open_critical}
    last_alerts = sorted((r for r in rows if r["notified_at"]),
                         key=lambda r: (r["notified_at"], r["id"]), reverse=True)[:10]
    assert app.dataframe[1].value["id"].tolist() == [r["id"] for r in last_alerts]
    # The landing section answers: a lag figure, or a warning that names Kafka.
    assert "Consumer lag (events not yet landed)" in shown or any(
        "Kafka at" in w.value for w in app.warning)


def test_timeline_counts_and_click_through(seeded: tuple[Settings, list[dict[str, Any]]]
                                           ) -> None:
    rows = seeded[1]
    app = page("timeline")
    app.selectbox(key="timeline_range").set_value("last 7 days").run()
    app.selectbox(key="timeline_by").set_value("level").run()
    assert any(c.value.startswith(f"{len(rows)} anomalies in the last 7 days")
               for c in app.caption)
    app.selectbox(key="timeline_range").set_value("last hour").run()
    hour = [r for r in rows if r["timestamp"] >= datetime.now(UTC) - timedelta(hours=1)]
    assert any(c.value.startswith(f"{len(hour)} anomalies in the last hour")
               for c in app.caption)
    # Click-through: the newest 5-minute bucket, one level, opens exactly those events.
    app.selectbox(key="timeline_step").set_value("5m").run()
    bucket = app.selectbox(key="timeline_bucket").value
    level = app.selectbox(key="timeline_key").options[1]
    app.selectbox(key="timeline_key").set_value(level).run()
    app.button[0].click().run()
    assert not app.exception
    assert bucket is not None
    start = pd.Timestamp(bucket).to_pydatetime()
    expected = [r for r in rows if start <= r["timestamp"] < start + timedelta(minutes=5)
                and r["alert_level"] == level]
    assert expected and matches(app) == len(expected)


def test_services_per_service_and_per_user(seeded: tuple[Settings, list[dict[str, Any]]]
                                           ) -> None:
    rows = seeded[1]
    app = page("services")
    app.selectbox(key="services_since").set_value("all time").run()
    table = app.dataframe[0].value
    assert dict(zip(table["name"], table["total"], strict=True)) == dict(
        Counter(r["service"] for r in rows if r["service"]))
    top = table.iloc[0]
    assert top["critical"] == sum(1 for r in rows if r["service"] == top["name"]
                                  and r["alert_level"] == "critical")
    app.radio(key="services_per").set_value("user_id").run()
    users = app.dataframe[0].value
    assert dict(zip(users["name"], users["total"], strict=True)) == dict(
        Counter(r["user_id"] for r in rows if r["topic"] == "transactions"))


FILTERS = [
    ("multiselect", "f_levels", ["critical"], lambda r: r["alert_level"] == "critical"),
    ("multiselect", "f_topics", ["metrics"], lambda r: r["topic"] == "metrics"),
    ("multiselect", "f_rules", ["large_amount"], lambda r: r["alert_type"] == "large_amount"),
    ("multiselect", "f_detectors", ["isolation_forest"],
     lambda r: r["detector"] == "isolation_forest"),
    ("text_input", "f_service", "auth", lambda r: r["service"] == "auth"),
    ("text_input", "f_user", "O'Brien ü", lambda r: r["user_id"] == "O'Brien ü"),
    ("text_input", "f_text", "#12", lambda r: "#12" in r["alert_title"]),
    ("selectbox", "f_range", "last hour",
     lambda r: r["timestamp"] >= datetime.now(UTC) - timedelta(hours=1)),
]


@pytest.mark.parametrize(("widget", "key", "value", "keep"), FILTERS,
                         ids=[f[1] for f in FILTERS])
def test_each_events_filter_changes_the_result_as_expected(
        seeded: tuple[Settings, list[dict[str, Any]]], widget: str, key: str, value: Any,
        keep: Any) -> None:
    rows = seeded[1]
    app = page("events")
    assert matches(app) == len(rows)
    getattr(app, widget)(key=key).set_value(value).run()
    expected = {r["id"] for r in rows if keep(r)}
    assert 0 < len(expected) < len(rows)
    assert matches(app) == len(expected)
    app.selectbox(key="f_size").set_value(250).run()
    assert set(app.dataframe[0].value["id"]) == expected


def test_events_pagination_walks_the_whole_set_and_csv_offers_it_all(
        seeded: tuple[Settings, list[dict[str, Any]]]) -> None:
    rows = seeded[1]
    app = page("events")
    app.selectbox(key="f_size").set_value(25).run()
    app.selectbox(key="f_sort").set_value("alert_level").run()
    seen: list[str] = []
    pages = -(-len(rows) // 25)
    for number in range(1, pages + 1):
        app.number_input(key="f_page").set_value(number).run()
        seen += app.dataframe[0].value["id"].tolist()
    assert len(seen) == len(set(seen)) == len(rows)
    assert set(seen) == {r["id"] for r in rows}
    [download] = app.get("download_button")
    assert not download.proto.disabled
    assert download.proto.help == f"all {len(rows)} matching rows"


@pytest.mark.parametrize("hostile", [
    "'; DROP TABLE anomaly_events; --", "%", "_", "\\", "x" * 200, "ü' OR '1'='1"])
def test_hostile_filter_input_is_harmless(seeded: tuple[Settings, list[dict[str, Any]]],
                                          hostile: str) -> None:
    settings, rows = seeded
    for key in ("f_service", "f_user", "f_text"):
        app = page("events")
        app.text_input(key=key).set_value(hostile).run()
        assert not app.exception, [e.value for e in app.exception]
        expected = [r for r in rows if key == "f_text" and any(
            hostile.strip().lower() in (r[f] or "").lower()
            for f in ("alert_title", "alert_message", "entity", "service"))]
        if expected:
            assert matches(app) == len(expected)
        else:
            assert any("No anomaly matches" in i.value for i in app.info), key
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM anomaly_events").fetchone() == (len(rows),)


def test_event_detail_shows_fields_and_the_lake_evidence(
        seeded: tuple[Settings, list[dict[str, Any]]]) -> None:
    anomaly = _metrics_anomaly(seeded[1])
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.session_state["event_id"] = anomaly["id"]
    app.switch_page("views/detail.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.subheader[0].value == anomaly["alert_title"]
    fields = app.dataframe[0].value
    assert dict(zip(fields["field"], fields["value"], strict=True))["entity"] == \
        anomaly["entity"]
    evidence = app.dataframe[1].value
    assert len(evidence) == 20 and set(evidence["host"]) == {anomaly["entity"]}
    assert any("20 raw events" in c.value for c in app.caption)

    app.text_input(key="detail_id").set_value("no-such-id").run()
    assert any("No anomaly with id 'no-such-id'" in w.value for w in app.warning)


def test_an_empty_database_says_what_to_do(stack: Settings, new_database: Any) -> None:
    url = new_database()
    migrate(url, reader_password=stack.reader_password)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POSTGRES_DB", url.rsplit("/", 1)[1])
        for name in ("overview", "timeline", "services", "events"):
            app = page(name)
            assert any("No anomalies yet" in i.value for i in app.info), name


def test_an_unreachable_database_is_named_not_a_traceback(tmp_path: Path) -> None:
    from vigil.services.process import free_port

    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POSTGRES_PORT", str(port))
        for name in ("overview", "timeline", "services", "events", "detail"):
            app = AppTest.from_file(APP, default_timeout=60)
            app.run()
            if name == "detail":
                app.session_state["event_id"] = "anything"
            if name != "overview":
                app.switch_page(f"views/{name}.py").run()
            assert not app.exception, (name, [e.value for e in app.exception])
            assert any(f"PostgreSQL at 127.0.0.1:{port} is unreachable" in e.value
                       for e in app.error), name
